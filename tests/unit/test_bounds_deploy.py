"""Deployment replicas are bounded and planned in linear time (issue 15 §3): the work of a plan
grows with n, not n², a replica count no pod range can hold is refused at its line (exit 2),
and the controller reports pods that do not fit as a FailedCreate event with a back-off instead
of retrying every tick. Pure, no root: the controller runs against a fake supervisor."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import subprocess
import sys
from pathlib import Path

import pytest

from emunet.cli.main import main
from emunet.cluster import controllers as ctl
from emunet.config import ConfigError, load_config_text
from emunet.state import deploy
from emunet.state.cluster import StateError
from emunet.state.plan import plan as plan_state

EMUNET = str(Path(ctl.__file__).resolve().parents[1])


def config(replicas: int, pod_cidrs: tuple[str, str] = ("10.42.16.0/20", "10.42.32.0/20")) -> str:
    return f"""\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {{name: b}}
spec:
  nodes:
    - {{name: n1, podCIDR: {pod_cidrs[0]}}}
    - {{name: n2, podCIDR: {pod_cidrs[1]}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: nginx}}]
"""


def lines_run(fn) -> int:
    """Python lines emunet executes in fn(): a count of work that does not depend on the
    machine's speed or load (loops count once per iteration)."""
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if not frame.f_code.co_filename.startswith(EMUNET):
            return None
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


def plan_work(n: int) -> tuple[int, int]:
    """Lines run by the controller's decision and by carrying it out (IPAM), for n replicas."""
    cfg = load_config_text(config(0, ("10.42.16.0/22", "10.42.32.0/22")))
    st = plan_state(cfg)
    d = dataclasses.replace(cfg.deployments[0], replicas=n)
    st.deployments[d.key] = d
    plans = []
    decide = lines_run(lambda: plans.append(deploy.reconcile(st, d, random.Random(1))))
    assert len(plans[0].create) == n
    carry = lines_run(lambda: deploy.apply_plan(st, plans[0]))
    assert len(st.pods) == n + 1
    return decide, carry


def test_planning_n_replicas_is_linear_not_quadratic():
    # Linear: 4x the replicas is ~4x the work. The old per-pod rescans (of the pods planned so
    # far for the spread, of every pod for a free IP) made it 13x and 6x at these sizes.
    (d1, c1), (d4, c4) = plan_work(400), plan_work(1600)
    assert d4 / d1 < 5 and c4 / c1 < 5, (d1, d4, c1, c4)


def test_the_spread_stays_even_and_skips_full_nodes():
    cfg = load_config_text(config(0, ("10.42.16.0/28", "10.42.32.0/24")))
    st = plan_state(cfg)  # n1 holds 13 pods, CoreDNS takes one of them
    d = dataclasses.replace(cfg.deployments[0], replicas=40)
    p = deploy.reconcile(st, d, random.Random(1))
    nodes = [pod.node_name for pod in p.create]
    assert nodes.count("n1") == 12 and nodes.count("n2") == 28
    assert nodes[:24].count("n1") == 12  # alternating while both have room
    deploy.apply_plan(st, p)
    assert len({ps.ip for ps in st.pods.values()}) == len(st.pods) == 41


def test_validate_refuses_replicas_beyond_the_pod_ranges_at_their_line(tmp_path, monkeypatch,
                                                                      capsys):
    f = tmp_path / "bomb.yaml"
    f.write_text(config(30000, ("10.42.1.0/24", "10.42.2.0/24")))
    monkeypatch.setenv("EMUNET_RUN_DIR", str(tmp_path / "run"))
    assert main(["validate", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"emunet: {f}:13: spec.replicas: 30000 replicas do not fit: the nodes' "
                   "pod ranges have room for 505 more pods — lower spec.replicas, add nodes or "
                   "give them larger podCIDRs")
    f.write_text(config(505, ("10.42.1.0/24", "10.42.2.0/24")))
    assert main(["validate", str(f)]) == 0


def test_apply_of_a_file_checks_replicas_against_the_cluster_too():
    base = load_config_text(config(0)).cluster
    text = config(100000).split("---\n", 1)[1]
    with pytest.raises(ConfigError) as e:
        load_config_text(text, "more.yaml", base=base)
    assert e.value.path == "spec.replicas" and e.value.line == 5


def test_the_real_command_line_answers_a_replica_bomb_at_once(tmp_path):
    f = tmp_path / "bomb.yaml"
    f.write_text(config(100000, ("10.42.1.0/24", "10.42.2.0/24")))
    p = subprocess.run([sys.executable, "-m", "emunet", "validate", str(f)], capture_output=True,
                       text=True, timeout=60, cwd=Path(EMUNET).parent,
                       env={"PYTHONPATH": str(Path(EMUNET).parent), "PATH": "/usr/bin:/bin",
                            "EMUNET_RUN_DIR": str(tmp_path / "run")})
    assert p.returncode == 2 and "spec.replicas: 100000 replicas do not fit" in p.stderr


# ---- the controller in the supervisor --------------------------------------------------------

class FakeSupervisor:
    def __init__(self, st) -> None:
        self.state, self.lock, self.manifest = st, asyncio.Lock(), None
        self.started: list = []
        self.publishes = 0

    async def start_pod(self, ps) -> None:
        self.started.append(ps.key)

    def refresh_ready(self) -> None:
        pass

    def publish(self) -> None:
        self.publishes += 1

    async def wait_loaded(self) -> None:
        pass


@pytest.fixture
def small_cluster(monkeypatch):
    monkeypatch.setattr(ctl.netlink, "add_pod", lambda st, ps, m: None)
    cfg = load_config_text(config(2, ("10.42.16.0/28", "10.42.32.0/28")))  # 26 pod slots
    return FakeSupervisor(plan_state(cfg))


def test_scale_beyond_every_pod_range_is_refused(small_cluster):
    c = ctl.Controllers(small_cluster)
    for bad in (15000, "3", True, -1, None):
        with pytest.raises(StateError, match="spec.replicas"):
            asyncio.run(c.op_scale({"name": "web", "replicas": bad}, None))
    assert small_cluster.state.deployments[("default", "web")].replicas == 2


def test_pods_that_do_not_fit_are_a_failed_create_with_back_off(small_cluster, monkeypatch):
    sup = small_cluster
    c = ctl.Controllers(sup, random.Random(1))
    asyncio.run(c.op_scale({"name": "web", "replicas": 26}, None))  # 1 slot is CoreDNS's
    clock = [1000.0]
    monkeypatch.setattr(ctl.time, "monotonic", lambda: clock[0])

    async def ticks(n: int) -> None:
        for _ in range(n):
            await c._reconcile()

    asyncio.run(ticks(1))
    assert len(sup.state.pods) == 26 and len(sup.started) == 23  # 2 were there, 23 added
    failed = [e for e in c.events.events if e.reason == "FailedCreate"]
    assert len(failed) == 1 and failed[0].type == "Warning"
    assert "1 pod(s) do not fit: the nodes' pod ranges hold 26 pods" in failed[0].message
    publishes = sup.publishes
    asyncio.run(ticks(20))  # within the back-off: no new sync, no new event
    assert failed[0].count == 1 and sup.publishes == publishes
    clock[0] += 1.5
    asyncio.run(ticks(1))
    assert failed[0].count == 2
    clock[0] += 1.5  # the delay has doubled to 2 s
    asyncio.run(ticks(1))
    assert failed[0].count == 2
    asyncio.run(c.op_scale({"name": "web", "replicas": 20}, None))  # a change: synced at once
    asyncio.run(ticks(1))
    assert ("default", "web") not in c.backoff
