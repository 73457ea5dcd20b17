"""Security of a running cluster: root-only state and control socket, no listener in the root
namespace, workloads as an unprivileged user unless securityContext says otherwise."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from tests.e2e.cluster import ROOT, Cluster
from tests.waiting import wait_for

CONFIG = str(ROOT / "tests" / "e2e" / "configs" / "robust.yaml")
PODS = """\
apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: rb}
spec:
  containers: [{name: c, image: busybox, command: [sh, -c, 'id -u; id -g; exec sleep 100000']}]
---
apiVersion: v1
kind: Pod
metadata: {name: custom, namespace: rb}
spec:
  securityContext: {runAsUser: 1000, fsGroup: 2000}
  containers:
  - name: c
    image: busybox
    command: [sh, -c, 'id -u; id -g; exec sleep 100000']
    securityContext: {runAsUser: 1234, runAsGroup: 4321, allowPrivilegeEscalation: false}
  - name: d
    image: busybox
    command: [sh, -c, 'id -u; id -g; exec sleep 100000']
"""


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    c = module_clusters(CONFIG, "ems")
    (c.tmp / "pods.yaml").write_text(PODS)
    c.emunet("apply", "-f", str(c.tmp / "pods.yaml"))
    return c


def _ids(c: Cluster, pod: str, container: str) -> tuple[str, str]:
    log = c.run_dir / "logs" / f"rb_{pod}_{container}.log"

    def ids() -> list[str] | None:
        lines = log.read_text().split() if log.exists() else []
        return lines if len(lines) >= 2 else None
    lines = wait_for(ids, 10, f"the ids in {log}")
    return lines[0], lines[1]


def test_workloads_run_unprivileged_unless_security_context_says(cluster):
    assert _ids(cluster, "plain", "c") == ("65534", "65534")  # nobody/nogroup by default
    assert _ids(cluster, "custom", "c") == ("1234", "4321")  # the container's context
    assert _ids(cluster, "custom", "d") == ("1000", "65534")  # the pod's runAsUser


def _as_nobody(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd],
                          capture_output=True, text=True, timeout=10)


def test_state_and_control_socket_are_root_only(cluster):
    rd = cluster.run_dir
    assert stat.S_IMODE(rd.stat().st_mode) == 0o700 and rd.stat().st_uid == 0
    for name in ("state.json", "manifest.json", "conntrack-node-1.json", "agent-node-1.json"):
        st = (rd / name).stat()
        assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) & 0o077 == 0, name
    sock = rd / "control.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) & 0o077 == 0
    assert _as_nobody("cat", str(rd / "state.json")).returncode != 0
    code = f"import socket; socket.socket(socket.AF_UNIX).connect({str(sock)!r})"
    p = _as_nobody("python3", "-c", code)
    assert p.returncode != 0 and "Permission denied" in p.stderr


def _our_pids(c: Cluster) -> set[int]:
    doc = json.loads((c.run_dir / "manifest.json").read_text())
    leaders = {e["pid"] for e in doc["entries"] if e["kind"] == "process"}
    out = set(leaders)
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                raw = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(raw[raw.rindex(")") + 2:].split()[2]) in leaders:
                out.add(int(d))
    return out


def test_no_emunet_listener_in_the_root_namespace_but_the_api_on_loopback(cluster):
    """Nothing of emunet listens in the root namespace except the Kubernetes API server, and that
    one on 127.0.0.1 only (DESIGN: faces bind to loopback)."""
    ours = _our_pids(cluster)
    assert len(ours) >= 6  # supervisor, 2 agents, dns, containers ...
    out = subprocess.run(["ss", "-lntupH"], capture_output=True, text=True, check=True).stdout
    mine = [line for line in out.splitlines()
            if any(f"pid={p}," in line for p in ours)]
    api = {e["pid"] for e in json.loads((cluster.run_dir / "manifest.json").read_text())[
        "entries"] if e["kind"] == "process" and e["role"] == "apiserver"}
    assert api, "the API server is a recorded process"
    for line in mine:
        local = line.split()[4]
        pid = int(re.search(r"pid=(\d+)", line).group(1))
        assert pid in api and local.startswith("127.0.0.1:"), line


CONTROL_GARBAGE = [b"hello\n", b"[]\n", b'{"op": "\xff"}\n', b"x" * 70 * 1024 + b"\n",
                   b"[" * 30000 + b"]" * 30000 + b"\n", b'{"op": "nosuch"}\n',
                   b'{"op": "apply"}\n', b'{"op": "scale", "name": "x", "replicas": "3"}\n',
                   b'{"op": "link", "node": "node-1", "impairment": {"bogus": 1}}\n',
                   b'{"op": "scale", "name": "x", "replicas": 15000}\n']


def test_the_control_socket_answers_garbage_with_typed_errors(cluster):
    """Issue 15 §3: each malformed request gets one typed answer; the supervisor logs no
    traceback and still answers a good request."""
    log = cluster.run_dir / "logs" / "supervisor.log"
    before = log.read_bytes().count(b"Traceback")
    types = []
    for data in CONTROL_GARBAGE:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(cluster.run_dir / "control.sock"))
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        [line] = answer.splitlines()
        msg = json.loads(line)
        assert msg["ok"] is False and msg["kind"] == "input", (data[:40], msg)
        assert "unexpected keyword" not in msg["error"] and msg["error"] != "'file'"
        types.append(msg["type"])
    assert types == ["BadRequest"] * 5 + ["UnknownOp"] + ["BadRequest"] * 3 + ["Invalid"]
    assert log.read_bytes().count(b"Traceback") == before
    assert cluster.emunet("status").returncode == 0
