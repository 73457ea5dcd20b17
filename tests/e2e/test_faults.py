"""Lifecycle faults: a failed `up` rolls back, `down` cleans up after SIGKILL of every emunet
process (and touches nothing else), `doctor` finds what a crash left, a crashing workload is
restarted with back-off."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from emunet.host.netns import socket_in_netns
from tests.e2e.cluster import ROOT, Cluster
from tests.waiting import wait_for

CONFIG = str(ROOT / "tests" / "e2e" / "configs" / "robust.yaml")


def _stat(pid: int) -> tuple[int, int] | None:
    """(process group, start time) of a live, non-zombie pid."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = raw[raw.rindex(")") + 2:].split()
    return None if f[0] in ("Z", "X") else (int(f[2]), int(f[19]))


def _manifest_processes(c: Cluster) -> list[tuple[int, int]]:
    """(pid, start time) of every recorded process and every member of its process group."""
    doc = json.loads((c.run_dir / "manifest.json").read_text())
    leaders = {e["pid"]: e["start_time"] for e in doc["entries"] if e["kind"] == "process"}
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := _stat(int(d))) is not None:
            pgid, start = st
            if int(d) in leaders or (pgid in leaders and start >= leaders[pgid]):
                out.append((int(d), start))
    return out


def _alive(procs: list[tuple[int, int]]) -> list[int]:
    return [pid for pid, start in procs if (st := _stat(pid)) and st[1] == start]


def _using(run_dir: Path) -> list[int]:
    """Live processes whose command line names the cluster's run dir (agents, DNS, proxies)."""
    out = []
    for d in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes() if d.isdigit() else b""
        except OSError:
            continue
        if str(run_dir).encode() in cmd and _stat(int(d)) is not None:
            out.append(int(d))
    return out


def _assert_clean(c: Cluster) -> None:
    assert not _using(c.run_dir), f"processes of the cluster left: {_using(c.run_dir)}"
    assert not c.netns(), f"namespaces left: {c.netns()}"
    assert not list(Path("/etc/netns").glob(c.prefix + "-*")), "/etc/netns entries left"
    assert not c.run_dir.exists(), "run dir left"


@pytest.mark.parametrize("stage", ["node:2", "pod:2", "supervisor", "ready"])
def test_up_failing_part_way_rolls_back_everything(clusters, stage):
    c = clusters(CONFIG, "emf", up=False)
    c.env["EMUNET_FAIL_AT"] = stage
    try:
        p = c.emunet("up", CONFIG, check=False, timeout=120)
        assert p.returncode == 1, p.stdout + p.stderr
        assert "failure injected" in p.stderr and "rolling back" in p.stdout
        assert "Traceback" not in p.stderr
        _assert_clean(c)
    finally:
        c.env.pop("EMUNET_FAIL_AT")  # the factory's `down` must not fail too


@pytest.fixture
def bystander(unique_prefix):
    """A namespace, /etc/netns entry and process that are not emunet's: they must survive."""
    name = unique_prefix("byst") + "-keep"
    subprocess.run(["ip", "netns", "add", name], check=True)
    etc = Path("/etc/netns") / name
    etc.mkdir(parents=True)
    (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    proc = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "300"],
                            start_new_session=True)
    try:
        yield name, etc, proc
    finally:
        proc.kill()
        proc.wait()
        subprocess.run(["ip", "netns", "delete", name], check=False)
        subprocess.run(["rm", "-rf", str(etc)], check=False)


def test_down_after_sigkill_of_every_process_removes_exactly_ours(clusters, bystander):
    name, etc, proc = bystander
    c = clusters(CONFIG, "emk")
    try:
        refused = c.emunet("up", CONFIG, check=False)
        assert refused.returncode == 1 and "emunet down" in refused.stderr
        procs = _manifest_processes(c)
        roles = {e["role"].split()[0] for e in json.loads(
            (c.run_dir / "manifest.json").read_text())["entries"] if e["kind"] == "process"}
        assert {"watchdog", "supervisor", "agent-node-1", "agent-node-2", "dns",
                "container"} <= roles
        # the client's shell forked two sleeps: they are in its group, not in the manifest
        assert len(procs) >= len(roles) + 2
        # the watchdog first, then the supervisor: so nothing is restarted
        for mod in ("emunet.cluster.watchdog", "emunet.cluster.supervisor"):
            os.kill(next(pid for pid, _ in procs
                         if mod in Path(f"/proc/{pid}/cmdline").read_text()), signal.SIGKILL)
        for pid, _ in procs:
            # a process may already be gone: killing a PID namespace's init (a container's
            # first process, emunet.host.sandbox) takes every process in it along
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _alive(procs), 5, "every killed process to be gone")

        # doctor sees the crash, and a stranger on the VXLAN port of a node namespace
        squat = socket_in_netns(f"{c.prefix}-node-1", socket.AF_INET, socket.SOCK_DGRAM)
        squat.bind(("0.0.0.0", 8472))
        doc = c.emunet("doctor", check=False)
        squat.close()
        assert doc.returncode == 1, doc.stdout
        assert "crashed cluster" in doc.stdout and "fix: sudo emunet down" in doc.stdout
        assert "VXLAN UDP 8472" in doc.stdout and "not this node's agent" in doc.stdout

        down = c.emunet("down")
        assert "not running" in down.stdout
        _assert_clean(c)
        assert c.emunet("down").returncode == 0  # idempotent
        after = c.emunet("doctor", check=False)
        assert after.returncode == 0 and "FAIL" not in after.stdout, after.stdout
    finally:
        clusters.teardown()  # now: what must survive is checked after our `down`
    assert (Path("/run/netns") / name).exists() and (etc / "resolv.conf").exists()
    assert proc.poll() is None, "a process emunet did not start was killed"


def test_crashing_workload_restarts_with_backoff(clusters):
    c = clusters(CONFIG, "emr")
    crasher = c.tmp / "crasher.yaml"
    crasher.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: crasher, namespace: rb}\n"
                       "spec:\n  nodeName: node-1\n  containers:\n  - name: crash\n"
                       "    image: busybox\n    command: [sh, -c, 'sleep 0.2; exit 3']\n")
    c.emunet("apply", "-f", str(crasher))
    wait_for(lambda: _restarts(c) >= 1, 5, "the crashed container's first restart")
    # The point of the test: a stretch of time in which, without back-off, it would have
    # crashed ~10 more times; nothing to wait for but the clock.
    time.sleep(3)
    assert 1 <= _restarts(c) <= 2


def _restarts(c: Cluster) -> int:
    """The RESTARTS column of `emunet get pods` for rb/crasher."""
    table = c.emunet("get", "pods", "-n", "rb").stdout.splitlines()
    col = table[0].split().index("RESTARTS")
    return int(next(line.split() for line in table if line.startswith("crasher "))[col])
