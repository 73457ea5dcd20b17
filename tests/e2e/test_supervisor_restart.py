"""Supervisor crash recovery: after SIGKILL of the supervisor its watchdog starts a new one
that adopts the running agents, sandboxes and containers (emunet.cluster.adopt), rebinds the
built-in servers and supervises again; an established connection through a ClusterIP to a
command pod never notices, and doctor raises no false alarm."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from emunet.host.netns import socket_in_netns
from tests.e2e.cluster import ROOT, Cluster
from tests.waiting import wait_for

# A real echo server in a command pod (this checkout's Python, as root: it may sit where
# `nobody` cannot reach); a built-in server pod behind a Service; a client pod.
ECHO = """\
import socket, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000))
s.listen(8)
def echo(c):
    while (d := c.recv(4096)):
        c.sendall(d)
    c.close()
while True:
    threading.Thread(target=echo, args=(s.accept()[0],), daemon=True).start()
"""

CONFIG = f"""\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {{name: suprestart}}
spec:
  nodes: [{{name: node-1}}, {{name: node-2}}]
---
apiVersion: v1
kind: Namespace
metadata: {{name: sr}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: sr, labels: {{app: web}}}}
spec:
  nodeName: node-2
  containers: [{{name: web, image: nginx, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: sr}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: echo, namespace: sr, labels: {{app: echo}}}}
spec:
  nodeName: node-2
  securityContext: {{runAsUser: 0}}
  containers:
  - name: echo
    image: python:3.11
    command: [{json.dumps(sys.executable)}, "-c", {json.dumps(ECHO)}]
    ports: [{{containerPort: 7000}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: sr}}
spec:
  selector: {{app: echo}}
  ports: [{{port: 7000}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: shell, namespace: sr}}
spec:
  nodeName: node-1
  containers: [{{name: sh, image: busybox, command: [sh], stdin: true, tty: true}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: sr}}
spec:
  nodeName: node-1
  containers: [{{name: c, image: busybox, command: [sleep, "100000"]}}]
"""


def _supervisor_pid(c: Cluster) -> int:
    return c.status()["supervisor"]["pid"]


def _vip(c: Cluster, name: str) -> str:
    return next(s["spec"]["clusterIP"] for s in c.get("services")
                if s["metadata"]["name"] == name)


def _echo(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        more = sock.recv(4096)
        if not more:
            break
        got += more
    return got


def _status(c: Cluster) -> dict | None:
    try:
        return c.status()
    except Exception:  # no supervisor answers yet
        return None


@pytest.fixture(scope="module")
def crashed(module_clusters) -> dict:
    """The cluster, an established connection to the echo pod, and the supervisor
    SIGKILLed while it was open; waits until a new supervisor answers with all children."""
    c = module_clusters(None, "sup", text=CONFIG)
    before = c.status()
    sock = socket_in_netns(f"{c.prefix}-sr-client", socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect((_vip(c, "echo"), 7000))
    assert _echo(sock, b"before\n") == b"before\n"
    # the events of `up` are saved within a second (emunet.cluster.events): wait for them, so
    # the test below can ask the new supervisor for what the dead one recorded
    saved = c.run_dir / "events.json"
    events = wait_for(lambda: saved.exists() and json.loads(saved.read_text()), 5,
                      "the events of up saved to the run dir")
    old = before["supervisor"]["pid"]
    os.kill(old, signal.SIGKILL)
    t0 = time.monotonic()

    def back() -> dict | None:
        st = _status(c)
        if st and st["supervisor"]["pid"] != old and st["pods_ready"] == st["pods"] \
                and all(ch["alive"] for ch in st["children"].values()):
            return st
        return None
    after = wait_for(back, 10, "a restarted supervisor with every pod Ready")
    print(f"supervisor SIGKILLed: a new one answers with every pod Ready after "
          f"{time.monotonic() - t0:.2f}s")
    yield {"c": c, "sock": sock, "before": before, "after": after, "old": old,
           "events": events, "watchdogs": [after["supervisor"]["watchdog"]]}
    sock.close()


def test_new_supervisor_adopts_the_children(crashed):
    before, after = crashed["before"], crashed["after"]
    assert after["supervisor"]["restarts"] == 1
    assert after["supervisor"]["watchdog"] == before["supervisor"]["watchdog"]
    # adopted, not restarted: the same agents, proxies, DNS responder and API server
    assert {n: ch["pid"] for n, ch in after["children"].items()} == \
        {n: ch["pid"] for n, ch in before["children"].items()}
    out = crashed["c"].emunet("status").stdout
    assert "restarts 1)" in out, out


def test_events_outlive_the_supervisor_that_recorded_them(crashed):
    """As events live in etcd, not in the kubelet: `get events` after the crash still lists
    what the dead supervisor recorded, with their first-seen times."""
    out = json.loads(crashed["c"].emunet("get", "events", "-A", "-o", "json").stdout)
    got = {(e["involvedObject"]["name"], e["reason"], e["firstTimestamp"])
           for e in out["items"]}
    want = {(e["name"], e["reason"], e["first"]) for e in crashed["events"]}
    assert want and want <= got


def test_established_connection_survives(crashed):
    assert _echo(crashed["sock"], b"after the restart\n") == b"after the restart\n"


def test_builtin_server_answers_again(crashed):
    c = crashed["c"]
    out = c.exec("sr", "client", "curl", "-sS", "--max-time", "5", "http://web").stdout
    assert "Hello from web" in out


def _pod_state(c: Cluster, pod: str, container: str) -> list[str]:
    code = (f"from emunet.state import store; ps = store.read().pods[('sr', {pod!r})]; "
            f"print(ps.restarts, ps.containers[{container!r}]['state'])")
    p = subprocess.run([sys.executable, "-c", code], env=c.env, cwd=ROOT, check=True,
                       capture_output=True, text=True)
    return p.stdout.split()


def test_tty_container_is_restarted_with_a_new_tty(crashed):
    """Its pty was the dead supervisor's: it is started again (restart 1), not adopted."""
    assert _pod_state(crashed["c"], "shell", "sh") == ["1", "running"]


def test_command_pod_not_restarted(crashed):
    c = crashed["c"]
    assert _pod_state(c, "echo", "echo") == ["0", "running"]  # adopted, not started again
    vip = _vip(c, "echo")
    s = socket_in_netns(f"{c.prefix}-sr-client", socket.AF_INET, socket.SOCK_STREAM)
    with s:
        s.settimeout(5)
        s.connect((vip, 7000))
        assert _echo(s, b"new\n") == b"new\n"


def test_killed_agent_is_restarted_by_the_new_supervisor(crashed):
    c = crashed["c"]
    old = c.status()["children"]["agent-node-2"]["pid"]
    os.kill(old, signal.SIGKILL)

    def restarted() -> bool:  # and forwarding: loaded the state ("behind" names it until)
        st = c.status()
        ch = st["children"]["agent-node-2"]
        return ch["alive"] and ch["pid"] != old and "agent-node-2" not in st["behind"]
    wait_for(restarted, 15, "the killed agent's restart by the adopting supervisor")
    out = c.exec("sr", "client", "curl", "-sS", "--max-time", "5", "http://web").stdout
    assert "Hello from web" in out


def test_doctor_no_false_vxlan_alarm_while_supervisor_is_down(crashed):
    """Doctor's VXLAN check with no supervisor answering (it is stopped, SIGSTOP): the agents
    still hold their ports and that is no alarm."""
    c = crashed["c"]
    pid = _supervisor_pid(c)
    os.kill(pid, signal.SIGSTOP)
    try:
        p = c.emunet("doctor", check=False, timeout=60)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert "not this node's agent" not in p.stdout, p.stdout
    assert "is held by its agent" in p.stdout, p.stdout
    assert "its watchdog runs" in p.stdout and "crashed cluster" not in p.stdout, p.stdout
    p = c.emunet("doctor", check=False, timeout=60)
    assert "not this node's agent" not in p.stdout, p.stdout


def test_stopped_node_stays_stopped_across_a_restart(crashed):
    c = crashed["c"]
    c.emunet("node", "stop", "node-1")
    old = _supervisor_pid(c)
    os.kill(old, signal.SIGKILL)

    def back() -> dict | None:
        st = _status(c)
        return st if st and st["supervisor"]["pid"] != old else None
    st = wait_for(back, 10, "the second restarted supervisor")
    assert st["supervisor"]["restarts"] == 2
    assert not st["children"]["agent-node-1"]["alive"]
    assert st["children"]["agent-node-2"]["alive"]
    c.emunet("node", "start", "node-1")
    c.wait_ready(20)
    out = c.exec("sr", "client", "curl", "-sS", "--max-time", "5", "http://web").stdout
    assert "Hello from web" in out


def test_up_resume_after_the_watchdog_and_the_supervisor_are_killed(crashed):
    """Nothing restarts a supervisor whose watchdog is gone: `status` says so and what to do,
    and `emunet up --resume` starts a new watchdog whose supervisor adopts the cluster."""
    c = crashed["c"]
    st = c.status()
    children = {name: ch["pid"] for name, ch in st["children"].items()}
    os.kill(st["supervisor"]["watchdog"], signal.SIGKILL)
    os.kill(st["supervisor"]["pid"], signal.SIGKILL)
    wait_for(lambda: _status(c) is None, 5, "the supervisor gone")
    out = c.emunet("status", check=False).stdout
    assert "NOT RUNNING" in out and "emunet up --resume" in out, out
    bad = c.emunet("up", "--resume", c.config, check=False)
    assert bad.returncode == 2 and "drop" in bad.stderr, bad.stderr
    p = c.emunet("up", "--resume")
    assert "resumed" in p.stdout, p.stdout + p.stderr
    new = c.status()
    assert new["supervisor"]["restarts"] == st["supervisor"]["restarts"] + 1
    assert {name: ch["pid"] for name, ch in new["children"].items()} == children  # adopted
    out = c.exec("sr", "client", "curl", "-sS", "--max-time", "5", "http://web").stdout
    assert "Hello from web" in out
    again = c.emunet("up", "--resume", check=False)
    assert again.returncode != 0 and "nothing to resume" in again.stderr, again.stderr
    crashed["watchdogs"].append(new["supervisor"]["watchdog"])


def test_down_removes_everything_with_the_watchdog(crashed):
    c = crashed["c"]
    crashed["sock"].close()
    c.down_clean()

    def gone(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rpartition(")")[2].split()[0] == "Z"
        except FileNotFoundError:
            return True
    for watchdog in crashed["watchdogs"]:
        wait_for(lambda w=watchdog: gone(w), 5, "the watchdog gone after down")
