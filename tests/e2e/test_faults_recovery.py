"""Crash recovery: a 200 MiB download through a ClusterIP across nodes completes byte-identical
while each node agent is SIGKILLed mid-transfer (conntrack and NAT survive the restart)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import sys
import time

import pytest

from emunet.host.netns import socket_in_netns
from tests.e2e.cluster import ROOT, Cluster
from tests.waiting import wait_for

CONFIG = str(ROOT / "tests" / "e2e" / "configs" / "robust.yaml")
MIB = 1 << 20
SIZE_MIB = 200
# A real process in the server pod: on each connection, read a size in MiB, send that many
# MiB of Random(7) bytes (the client computes the same stream to compare hashes).
SERVER = """\
import random, socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000))
s.listen(8)
while True:
    c, _ = s.accept()
    try:
        n = int(c.recv(16) or 0)  # readiness checks connect and send nothing
        r = random.Random(7)
        for _ in range(n):
            c.sendall(r.randbytes(1 << 20))
    except (OSError, ValueError):
        pass
    c.close()
"""


def _manifest() -> str:
    script = json.dumps(SERVER)  # a JSON string is a valid YAML flow scalar
    return f"""\
apiVersion: v1
kind: Pod
metadata: {{name: blob, namespace: rb, labels: {{app: blob}}}}
spec:
  nodeName: node-2
  # root: the command is this checkout's Python, which may sit where `nobody` cannot reach
  securityContext: {{runAsUser: 0}}
  containers:
  - name: blob
    image: python:3.11
    command: [{json.dumps(sys.executable)}, "-c", {script}]
    ports: [{{containerPort: 9000}}]
---
apiVersion: v1
kind: Service
metadata: {{name: blob, namespace: rb}}
spec:
  selector: {{app: blob}}
  ports: [{{port: 9000}}]
"""


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    c = module_clusters(CONFIG, "emc")
    (c.tmp / "blob.yaml").write_text(_manifest())
    c.emunet("apply", "-f", str(c.tmp / "blob.yaml"))
    c.wait_ready(20)  # the blob server
    return c


def _agent(c: Cluster, node: str) -> dict:
    return c.status()["children"][f"agent-{node}"]


def _kill_agent(c: Cluster, node: str) -> dict:
    """SIGKILL a node's agent; wait for its replacement to run and report restored conns."""
    old = _agent(c, node)["pid"]
    killed = time.time()
    os.kill(old, signal.SIGKILL)
    t0 = time.monotonic()

    def replaced() -> dict | None:
        a = _agent(c, node)
        return a if a["pid"] != old and a["alive"] else None
    # Each look is an `emunet status` process (a fraction of a second on a loaded machine):
    # the restart's latency is the supervisor's own record of when it started the new agent.
    a = wait_for(replaced, 10.0, "the agent's replacement", interval=0.02)
    restarted = a["since"] - killed
    assert restarted < 1.0, f"the new agent started {restarted:.2f}s after the kill"
    counters = c.run_dir / f"agent-{node}.json"

    def serving() -> dict | None:  # the new agent writes its counters once it is serving
        try:
            doc = json.loads(counters.read_text())
        except (OSError, ValueError):
            return None
        return doc if doc["pid"] == a["pid"] else None
    doc = wait_for(serving, 10 - (time.monotonic() - t0), "the new agent's counters")
    return {"node": node, "restart_s": round(restarted, 3),
            "serving_s": round(time.monotonic() - t0, 3),
            "restored": doc["counters"]["ct_restored"]}


def test_download_survives_sigkill_of_each_agent(cluster):
    vip = next(s["spec"]["clusterIP"] for s in cluster.get("services")
               if s["metadata"]["name"] == "blob")
    r = random.Random(7)
    want = hashlib.sha256()
    for _ in range(SIZE_MIB):
        want.update(r.randbytes(MIB))
    sock = socket_in_netns(f"{cluster.prefix}-rb-client", socket.AF_INET,
                                socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect((vip, 9000))
    sock.sendall(str(SIZE_MIB).encode())
    got, h, kills = 0, hashlib.sha256(), []
    plan = [(SIZE_MIB * MIB // 4, "node-1"), (SIZE_MIB * MIB * 3 // 5, "node-2")]
    t0 = time.monotonic()
    while True:
        data = sock.recv(MIB)
        if not data:
            break
        h.update(data)
        got += len(data)
        if plan and got >= plan[0][0]:
            kills.append(_kill_agent(cluster, plan.pop(0)[1]))
    sock.close()
    elapsed = time.monotonic() - t0
    print(f"\n{got / MIB:.0f} MiB in {elapsed:.1f}s through ClusterIP {vip}; kills: {kills}")
    assert got == SIZE_MIB * MIB
    assert h.hexdigest() == want.hexdigest()
    assert len(kills) == 2 and all(k["restored"] >= 1 for k in kills)
    assert _agent(cluster, "node-1")["restarts"] == 1
