"""The Deployment controller and the Deployment config: pure, no root."""

from __future__ import annotations

import dataclasses
import random
import re

import pytest

from emunet.cluster.apply import _delete
from emunet.config import ConfigError, load_config_text
from emunet.model import Container, ContainerPort, Pod
from emunet.state import codec, deploy
from emunet.state.cluster import ClusterState
from emunet.state.plan import plan as plan_state

CLUSTER = """\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {name: t}
spec:
  nodes: [{name: n1}, {name: n2}, {name: n3}]
"""


def deployment_yaml(replicas: int = 3, image: str = "nginx", extra: str = "") -> str:
    return CLUSTER + f"""\
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
{extra}  template:
    metadata: {{labels: {{app: web, tier: front}}}}
    spec:
      containers:
        - name: web
          image: {image}
          ports: [{{containerPort: 8080, name: http}}]
"""


def planned(replicas: int = 3, image: str = "nginx", extra: str = "") -> ClusterState:
    return plan_state(load_config_text(deployment_yaml(replicas, image, extra), "t.yaml"))


def web_pods(st: ClusterState) -> list:
    return [p for p in st.pods.values() if p.pod.owner and not p.terminating]


# ---- names and hashes ------------------------------------------------------------------------

def test_safe_encode_is_apimachinerys() -> None:
    # SafeEncodeString maps each byte mod 27 into the alphabet: digits land on 4-9,b,c,d,f,
    # which is why real pod-template-hash values look like 7d9f8b6c4d.
    assert deploy.safe_encode("0123456789") == "456789bcdf"


def test_fnv32a_reference_vectors() -> None:
    assert deploy.fnv32a(b"") == 0x811C9DC5
    assert deploy.fnv32a(b"a") == 0xE40C292C
    assert deploy.fnv32a(b"foobar") == 0xBF9CF968


def test_template_hash_follows_the_template_only() -> None:
    pod = Pod("", "", {"app": "web"}, (Container("web", "nginx",
                                                 ports=(ContainerPort(80),)),))
    h = deploy.template_hash(pod)
    assert re.fullmatch(r"[456789bcdf]{1,10}", h)
    assert deploy.template_hash(dataclasses.replace(pod, name="x", namespace="y")) == h
    other = dataclasses.replace(pod, containers=(Container("web", "nginx:2"),))
    assert deploy.template_hash(other) != h


@pytest.mark.parametrize(("value", "total", "up", "want"), [
    ("25%", 10, True, 3), ("25%", 10, False, 2), ("25%", 1, True, 1), ("25%", 1, False, 0),
    (2, 10, True, 2), ("0%", 4, True, 0), ("100%", 3, False, 3)])
def test_scaled_value_rounds_like_kubernetes(value, total, up, want) -> None:
    assert deploy.scaled_value(value, total, up) == want


def test_surge_and_unavailable_never_both_zero() -> None:
    st = planned(1)
    d = next(iter(st.deployments.values()))
    assert deploy.surge_and_unavailable(d) == (1, 0)  # 25% of 1: surge up, unavailable down
    d0 = dataclasses.replace(d, max_surge=0, max_unavailable=0)
    assert deploy.surge_and_unavailable(d0) == (0, 1)


# ---- planning ---------------------------------------------------------------------------------

def test_up_plans_named_labelled_spread_pods() -> None:
    st = planned(6)
    d = st.deployments[("default", "web")]
    h = deploy.template_hash(d.template)
    pods = web_pods(st)
    assert len(pods) == 6
    for p in pods:
        assert re.fullmatch(rf"web-{h}-[{deploy.ALPHANUMS}]{{5}}", p.pod.name)
        assert p.pod.labels == {"app": "web", "tier": "front", "pod-template-hash": h}
        assert p.pod.owner == f"web-{h}"
        assert p.ip.startswith("10.42.")
    per_node = {n.name: sum(p.node == n.name for p in pods) for n in st.nodes}
    assert sorted(per_node.values()) == [2, 2, 2]
    assert len({p.pod.name for p in pods}) == 6


def test_planning_is_deterministic_and_round_trips() -> None:
    a, b = planned(4), planned(4)
    assert [p.pod.name for p in web_pods(a)] == [p.pod.name for p in web_pods(b)]
    again = codec.from_json(codec.to_json(a))
    assert codec.to_json(again) == codec.to_json(a)
    assert again.deployments == a.deployments


def test_scale_up_and_down() -> None:
    st = planned(2)
    d = st.deployments[("default", "web")]
    rng = random.Random(1)
    plan = deploy.reconcile(st, dataclasses.replace(d, replicas=5), rng)
    assert len(plan.create) == 3 and not plan.delete
    assert any(e.reason == "ScalingReplicaSet" and "from 2 to 5" in e.message
               for e in plan.events)
    deploy.apply_plan(st, plan)
    pods = web_pods(st)
    for p in pods[:4]:
        p.ready = True  # the newest one is not Ready yet: it goes first
    plan = deploy.reconcile(st, dataclasses.replace(d, replicas=3), rng)
    assert plan.delete[0] == pods[4].key
    assert plan.delete[1] == pods[3].key  # then the newest Ready one
    assert not plan.create


def test_a_deleted_pod_is_replaced_with_a_new_name_and_ip() -> None:
    st = planned(2)
    d = st.deployments[("default", "web")]
    gone = web_pods(st)[0]
    st.pods[gone.key].terminating = True  # as the supervisor marks it
    plan = deploy.reconcile(st, d, random.Random(2))
    assert len(plan.create) == 1 and not plan.delete
    new = deploy.apply_plan(st, plan)[0]
    assert new.pod.name != gone.pod.name and new.ip != gone.ip


def _roll(st: ClusterState, d, rng: random.Random, steps: int = 50) -> list[tuple[int, int]]:
    """Drive a rollout: each step reconciles, terminates deletions at once and makes every
    pod Ready; returns (live pods, ready pods) seen after each reconcile."""
    seen = []
    for _ in range(steps):
        plan = deploy.reconcile(st, d, rng)
        deploy.apply_plan(st, plan)
        for key in plan.delete:
            st.remove_pod(key)
        live = web_pods(st)
        seen.append((len(live), sum(p.ready for p in live)))
        if not plan.create and not plan.delete:
            break
        for p in live:
            p.ready = True
    return seen


@pytest.mark.parametrize("replicas", [1, 2, 4, 10])
def test_rolling_update_respects_surge_and_unavailable(replicas: int) -> None:
    st = planned(replicas)
    for p in web_pods(st):
        p.ready = True
    d = dataclasses.replace(st.deployments[("default", "web")],
                            template=planned(replicas, "nginx:2").deployments[
                                ("default", "web")].template)
    surge, unavailable = deploy.surge_and_unavailable(d)
    seen = _roll(st, d, random.Random(3))
    for live, ready in seen:
        assert live <= replicas + surge
        assert ready >= replicas - unavailable - surge  # new pods count once Ready
    new_rs = deploy.rs_name(d, deploy.template_hash(d.template))
    assert [p.pod.owner for p in web_pods(st)] == [new_rs] * replicas


def test_rolling_update_keeps_old_pods_until_new_ones_are_ready() -> None:
    st = planned(2)
    for p in web_pods(st):
        p.ready = True
    old = {p.key for p in web_pods(st)}
    d = dataclasses.replace(st.deployments[("default", "web")],
                            template=planned(2, "nginx:2").deployments[
                                ("default", "web")].template)
    rng = random.Random(4)
    for _ in range(5):  # new pods never become Ready: nothing old may go
        deploy.apply_plan(st, plan := deploy.reconcile(st, d, rng))
        assert not plan.delete
    assert old <= set(st.pods)
    assert len(web_pods(st)) == 3  # replicas 2 + maxSurge 1 (25% of 2, rounded up)


def test_recreate_removes_all_old_pods_before_creating() -> None:
    st = planned(3, extra="  strategy: {type: Recreate}\n")
    for p in web_pods(st):
        p.ready = True
    d = dataclasses.replace(st.deployments[("default", "web")],
                            template=planned(3, "nginx:2").deployments[
                                ("default", "web")].template)
    plan = deploy.reconcile(st, d, random.Random(5))
    assert len(plan.delete) == 3 and not plan.create
    for key in plan.delete:
        st.pods[key].terminating = True
    assert not deploy.reconcile(st, d, random.Random(5)).create  # still terminating
    for key in plan.delete:
        st.remove_pod(key)
    assert len(deploy.reconcile(st, d, random.Random(5)).create) == 3


def test_deleting_a_deployment_cascades_to_its_pods() -> None:
    st = planned(3)
    changes = _delete(st, "Deployment", "web", "default")
    assert [c.message for c in changes][-1] == "deployment.apps/web deleted"
    assert sum(c.removed_pod is not None for c in changes) == 3
    assert not web_pods(st) and not st.deployments


# ---- config -------------------------------------------------------------------------------------

def test_deployment_defaults() -> None:
    cfg = load_config_text(CLUSTER + """\
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
""", "t.yaml")
    (d,) = cfg.deployments
    assert (d.replicas, d.strategy, d.max_surge, d.max_unavailable) == (
        1, "RollingUpdate", "25%", "25%")
    assert not cfg.others


@pytest.mark.parametrize(("spec", "line", "path", "words"), [
    ("  replicas: 2\n  template:\n    metadata: {labels: {app: web}}\n"
     "    spec: {containers: [{name: web, image: nginx}]}\n",
     10, "spec.selector", "required"),
    ("  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: web}}\n"
     "    spec: {containers: [{name: web, image: nginx}]}\n",
     13, "spec.template.metadata.labels", "does not match"),
    ("  selector: {matchLabels: {app: web}}\n  strategy:\n    type: Recreate\n"
     "    rollingUpdate: {maxSurge: 1}\n  template:\n    metadata: {labels: {app: web}}\n"
     "    spec: {containers: [{name: web, image: nginx}]}\n",
     14, "spec.strategy.rollingUpdate", "Recreate"),
    ("  selector: {matchLabels: {app: web}}\n  strategy:\n"
     "    rollingUpdate: {maxSurge: 0, maxUnavailable: \"0%\"}\n  template:\n"
     "    metadata: {labels: {app: web}}\n"
     "    spec: {containers: [{name: web, image: nginx}]}\n",
     13, "spec.strategy.rollingUpdate.maxUnavailable", "may not be 0"),
    ("  replicas: -1\n  selector: {matchLabels: {app: web}}\n  template:\n"
     "    metadata: {labels: {app: web}}\n"
     "    spec: {containers: [{name: web, image: nginx}]}\n",
     11, "spec.replicas", "must be"),
])
def test_deployment_errors_are_located(spec: str, line: int, path: str, words: str) -> None:
    text = CLUSTER + "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n" \
        "spec:\n" + spec
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "t.yaml")
    err = info.value
    assert (err.line, err.path) == (line, path), str(err)
    assert words in str(err)


def test_deployment_wrong_api_version() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(CLUSTER + "---\napiVersion: extensions/v1beta1\nkind: Deployment\n"
                         "metadata: {name: web}\n", "t.yaml")
    assert "apps/v1" in str(info.value)


def test_service_selecting_a_deployment_is_not_warned_about() -> None:
    cfg = load_config_text(deployment_yaml() + """\
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
""", "t.yaml")
    assert not [w for w in cfg.warnings if "matches no pod" in w]
    st = plan_state(cfg)
    eps = st.endpoints(("default", "web"))[0]
    assert sorted(e.port for e in eps) == [8080, 8080, 8080]  # named targetPort resolved
