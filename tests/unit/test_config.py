"""emunet.config: the story config loads, defaults apply, and every broken file in
tests/configs/bad/ yields a ConfigError at the line and field path its first comment names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from emunet import model
from emunet.config import ConfigError, load_config, load_config_text
from emunet.state.plan import plan

ROOT = Path(__file__).resolve().parents[2]
STORY = ROOT / "configs" / "two-node.yaml"
BAD = sorted((ROOT / "tests" / "configs" / "bad").glob("*.yaml"))
GOOD = sorted((ROOT / "tests" / "configs" / "good").glob("*.yaml"))
EXPECT = re.compile(r"# expect: (\d+) (\S+)")

MINIMAL = """\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata:
  name: mini
spec:
  nodes:
    - name: n1
"""


def test_story_config_loads() -> None:
    cfg = load_config(STORY)
    c = cfg.cluster
    assert c.name == "journey"
    assert [n.name for n in c.nodes] == ["node-1", "node-2"]
    assert c.cluster_cidr == "10.42.0.0/16" and c.service_cidr == "10.43.0.0/16"
    assert c.cluster_dns == "10.43.0.10" and c.mtu == 1450
    assert (c.vxlan_vni, c.vxlan_port) == (1, 8472)
    assert [ns.name for ns in cfg.namespaces] == ["blog-website"]
    pods = {p.name: p for p in cfg.pods}
    assert set(pods) == {"monospaced-test", "frontend-client", "intruder"}
    mono = pods["monospaced-test"]
    assert mono.namespace == "blog-website" and mono.node_name == "node-2"
    assert mono.labels == {"app": "monospaced"}
    assert mono.containers[0].ports == (model.ContainerPort(3000, "TCP", None),)
    assert mono.loc == model.Loc(str(STORY), 29)
    assert pods["frontend-client"].containers[0].command == ("sleep", "infinity")
    (svc,) = cfg.services
    assert svc.key == ("blog-website", "monospaced")
    assert svc.ports == (model.ServicePort(port=80, target_port=3000, protocol="TCP"),)
    assert svc.selector == {"app": "monospaced"} and svc.cluster_ip is None
    (np,) = cfg.network_policies
    assert np.key == ("blog-website", "monospaced-access") and not cfg.others
    assert np.pod_selector.match_labels == (("app", "monospaced"),)
    assert np.policy_types == ("Ingress",)
    assert cfg.warnings == ()  # NetworkPolicy is enforced: nothing to warn about
    # The result is what emunet.state plans from.
    st = plan(cfg)
    assert st.pods[("blog-website", "monospaced-test")].ip == "10.42.2.2"


def test_defaults() -> None:
    cfg = load_config_text(MINIMAL + """\
---
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers: [{name: c, image: busybox, ports: [{containerPort: 53, protocol: UDP}]}]
---
apiVersion: v1
kind: Service
metadata: {name: s}
spec:
  selector: {app: x}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: h}
spec:
  clusterIP: None
""", "t.yaml")
    c = cfg.cluster
    assert c == model.ClusterSpec(name="mini", nodes=c.nodes, loc=model.Loc("t.yaml", 1))
    assert c.nodes == (model.NodeSpec("n1", loc=model.Loc("t.yaml", 7)),)
    (pod,) = cfg.pods
    assert pod.namespace == "default" and pod.node_name is None and pod.labels == {}
    assert pod.containers[0].ports[0].protocol == "UDP"
    svc, headless = cfg.services
    assert svc.ports == (model.ServicePort(80, 80, "TCP"),)  # targetPort defaults to port
    assert svc.cluster_ip is None and svc.type == "ClusterIP"
    assert headless.headless and headless.selector is None and headless.ports == ()
    # selector app=x matches nothing: a warning, not an error
    assert any("selector app=x matches no pod" in w for w in cfg.warnings)


def test_full_cluster_spec() -> None:
    cfg = load_config_text("""\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {name: big}
spec:
  nodes:
    - {name: a, podCIDR: 10.10.5.0/24, underlayIP: 172.20.0.5}
    - {name: b}
  clusterCIDR: 10.10.0.0/16
  serviceCIDR: 10.96.0.0/12
  clusterDNS: 10.96.0.10
  clusterDomain: example.internal
  underlay: {cidr: 172.20.0.0/24}
  vxlan: {vni: 42, port: 4789}
  mtu: 1400
  dns: {ttl: 30, upstreams: [192.168.1.1, "2001:db8::1"]}
  busyPoll: 0
""", "c.yaml")
    c = cfg.cluster
    assert c.nodes[0].pod_cidr == "10.10.5.0/24" and c.nodes[0].underlay_ip == "172.20.0.5"
    assert c.nodes[1].pod_cidr is None and c.nodes[1].underlay_ip is None
    assert (c.service_cidr, c.cluster_dns, c.cluster_domain) == (
        "10.96.0.0/12", "10.96.0.10", "example.internal")
    assert (c.vxlan_vni, c.vxlan_port, c.mtu, c.dns_ttl) == (42, 4789, 1400, 30)
    assert c.dns_upstreams == ("192.168.1.1", "2001:db8::1")
    assert c.busy_poll_us == 0  # spec.busyPoll: 0 turns the agents' busy-polling off


def test_accepted_but_ignored_kubernetes_fields() -> None:
    cfg = load_config_text(MINIMAL + """\
---
apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations: {example.com/note: "hello world"}
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 5
  securityContext: {runAsUser: 1000}
  containers:
    - name: c
      image: busybox
      imagePullPolicy: IfNotPresent
      resources: {limits: {cpu: 100m}}
      readinessProbe: {tcpSocket: {port: 80}}
      volumeMounts: []
      env: [{name: A, value: "1"}, {name: B, valueFrom: {fieldRef: {fieldPath: x}}}]
      ports: [{containerPort: 80, name: http, hostPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: s}
spec:
  selector: {}
  sessionAffinity: ClientIP
  ipFamilies: [IPv4]
  ports: [{port: 80, targetPort: http, appProtocol: http}]
""", "t.yaml")
    assert cfg.pods[0].containers[0].env == (("A", "1"), ("B", ""))
    assert cfg.services[0].selector is None  # an empty selector selects nothing, as in k8s


def test_unimplemented_kinds_are_kept_with_warnings() -> None:
    cfg = load_config_text(MINIMAL + """\
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec: {replicas: 2}
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: l7}
spec: {}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
""", "t.yaml")
    assert [(o.kind, o.namespace, o.name) for o in cfg.others] == [
        ("StatefulSet", "default", "web"), ("CiliumClusterwideNetworkPolicy", None, "l7"),
        ("Widget", "default", "w")]
    assert cfg.warnings[0] == ("t.yaml:9: StatefulSet default/web: not run yet "
                               "(emunet does not implement StatefulSet yet)")
    assert "CiliumClusterwideNetworkPolicy l7: not enforced yet" in cfg.warnings[1]
    assert len(cfg.warnings) == 3


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_good_configs_load(path: Path) -> None:
    load_config(path)


def test_bad_corpus_is_large_enough() -> None:
    assert len(BAD) >= 30


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_config(path: Path) -> None:
    m = EXPECT.match(path.read_text().splitlines()[0])
    assert m, f"{path.name}: first line must be '# expect: LINE PATH'"
    line, field = int(m.group(1)), "" if m.group(2) == "-" else m.group(2)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    # exactly one mistake per file: it is the first error, at the promised place
    assert (err.file, err.line, err.path) == (str(path), line, field), str(err)
    assert err.message
    first = str(err).splitlines()[0]
    assert first.startswith(f"{path}:{line}: " + (f"{field}: " if field else ""))


def test_error_format_and_all_errors_collected() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(MINIMAL + """\
---
apiVersion: v1
kind: Service
metadata: {name: s}
spec:
  ports:
    - port: 80
      name: a
      targetPort: 70000
    - port: 0
      name: b
""", "two-node.yaml")
    err = info.value
    assert str(err.errors[0]) == ("two-node.yaml:16: spec.ports[0].targetPort: must be "
                                  "1-65535 or a port name, got 70000 — fix the value")
    assert [(e.line, e.path) for e in err.errors] == [
        (16, "spec.ports[0].targetPort"), (17, "spec.ports[1].port")]
    assert str(err) == "\n".join(e.one_line() for e in err.errors)
    assert (err.line, err.path, err.hint) == (16, "spec.ports[0].targetPort", "fix the value")


def test_typo_suggests_the_closest_field() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(MINIMAL.replace("  nodes:", "  clusterCDIR: 10.42.0.0/16\n  nodes:"),
                         "t.yaml")
    assert info.value.path == "spec.clusterCDIR"
    assert info.value.hint == 'did you mean "clusterCIDR"?'


def test_apply_mode_against_base() -> None:
    base = load_config(STORY).cluster
    manifests = """\
apiVersion: v1
kind: Pod
metadata: {name: extra, namespace: blog-website}
spec:
  nodeName: node-2
  containers: [{name: c, image: busybox}]
"""
    cfg = load_config_text(manifests, "apply.yaml", base=base)
    assert cfg.cluster is base and cfg.pods[0].name == "extra"
    with pytest.raises(ConfigError, match="apply.yaml:5: spec.nodeName: no node named"):
        load_config_text(manifests.replace("node-2", "node-9"), "apply.yaml", base=base)
    with pytest.raises(ConfigError, match="namespace 'blog-website' is not declared"):
        load_config_text(manifests, "apply.yaml", base=base, known_namespaces=["default"])
    with pytest.raises(ConfigError, match="Cluster document cannot be applied"):
        load_config_text(MINIMAL, "apply.yaml", base=base)


@pytest.mark.parametrize("text, line, needle", [
    ("", 1, "no Cluster document"),
    ("a: [", 2, "YAML syntax error"),  # found at the end of input
    ("- 1\n", 1, "not a mapping"),
    ("a: &x [*x]\n", 1, "alias refers to the collection"),
    ("a: !!python/object:os.system x\n", 1, "cannot read this value"),
    ("{[1]: 2}\n", 1, "mapping key must be a plain name"),
    ("apiVersion: v1\nkind: List\nitems: []\n", 2, "List is not supported"),
])
def test_malformed_input(text: str, line: int, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "x.yaml")
    assert info.value.line == line and needle in info.value.message


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"# ok\nname: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.line == 2


def test_service_range_exhausted() -> None:
    services = "".join(f"""\
---
apiVersion: v1
kind: Service
metadata: {{name: s{i}}}
spec:
  ports: [{{port: 80}}]
""" for i in range(5))
    text = MINIMAL.replace("  nodes:", "  serviceCIDR: 10.43.0.0/28\n  nodes:") + services
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "t.yaml")  # .11-.14 are allocatable: the fifth has no address
    assert info.value.message.startswith("serviceCIDR 10.43.0.0/28 has no ClusterIP left")
    assert info.value.line == text.splitlines().index("metadata: {name: s4}") + 1
    cfg = load_config_text(text.replace("/28", "/27"), "t.yaml")
    assert len(plan(cfg).services) == 7  # five plus kube-dns and default/kubernetes


def test_unimplemented_kind_in_undeclared_namespace() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(MINIMAL + """\
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny
  namespace: nowhere
spec: {podSelector: {}}
""", "t.yaml")
    assert (info.value.line, info.value.path) == (13, "metadata.namespace")
