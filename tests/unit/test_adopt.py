"""Supervisor restart without root: recorded processes matched by pid and start time
(emunet.host.adopted), what an adopting supervisor does with each container
(emunet.cluster.adopt), a pod's workload taken over and restarted when an adopted container
dies, a child's restart count, and when the watchdog restarts the supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import pytest

from emunet.cluster import adopt
from emunet.cluster import watchdog as wd
from emunet.cluster.child import Child
from emunet.cluster.workloads import Workloads
from emunet.host import adopted, sandbox
from emunet.host.manifest import process_start_time
from emunet.model import Container, Pod
from emunet.state.cluster import PodState
from tests.waiting import wait_for

C = Container("c", command=("sleep", "30"))
T = Container("t", command=("sh",), stdin=True, tty=True)
POD = Pod("rb", "p", containers=(C, T))


def _ps(**kw) -> PodState:
    return PodState(POD, "node-1", "10.42.1.9", "0a:58:0a:2a:01:09", "x-rb-p", "veth9", **kw)


def _entry(pid: int, start: int, role: str) -> dict:
    return {"kind": "process", "pid": pid, "start_time": start, "role": role, "netns": None}


def test_find_takes_the_newest_live_entry_and_skips_recycled_pids():
    live = {10: 100, 11: 200, 12: 999}  # pid 12 was recycled: recorded start 300
    procs = [_entry(10, 100, "agent-a"), _entry(11, 200, "agent-a"), _entry(12, 300, "dns")]
    found = adopted.find(procs, "agent-a", live.get)
    assert (found.pid, found.start_time) == (11, 200)
    assert adopted.find(procs, "dns", live.get) is None
    assert adopted.find(procs, "apiserver", live.get) is None


def test_adopted_polls_by_start_time_and_never_signals_a_recycled_pid():
    p = subprocess.Popen(["sleep", "30"])
    try:
        a = adopted.Adopted(p.pid, process_start_time(p.pid), "x")
        assert a.poll() is None
        stranger = adopted.Adopted(p.pid, process_start_time(p.pid) - 1, "x")
        stranger.kill()  # not ours by its start time: nothing is sent
        assert p.poll() is None and stranger.poll() == adopted.LOST
        a.terminate()
        p.wait(5)  # its parent (here: us) reaps it
        assert a.wait(5) == adopted.LOST and a.poll() == -signal.SIGKILL
        with pytest.raises(subprocess.TimeoutExpired):
            adopted.Adopted(os.getpid(), process_start_time(os.getpid()), "me").wait(0.05)
    finally:
        p.kill()
        p.wait()


def test_container_plan():
    live = {20: 1, 21: 2}
    procs = [_entry(20, 1, sandbox.container_role(POD, C)),
             _entry(21, 2, sandbox.container_role(POD, T))]
    assert adopt.container_plan(_ps(), C, procs, live.get)[0] == "adopt"
    # its held stdio (a pty) died with the old supervisor: start it again
    assert adopt.container_plan(_ps(), T, procs, live.get)[0] == "restart"
    done = _ps(containers={"c": {"state": "terminated", "exitCode": 0}})
    assert adopt.container_plan(done, C, procs, {}.get) == ("done", None)
    assert adopt.container_plan(_ps(), C, procs, {}.get) == ("start", None)


def test_restart_counts_from_the_manifest():
    assert adopt.starts([_entry(1, 1, "dns"), _entry(2, 2, "dns"), _entry(3, 3, "x")],
                        "dns") == 2
    p = subprocess.Popen(["sleep", "30"])
    try:
        procs = [_entry(99999999, 5, "agent-a"), _entry(p.pid, process_start_time(p.pid),
                                                          "agent-a")]
        ch = Child("agent-a", None, [])
        assert ch.adopt(procs) and ch.alive() and ch.restarts == 1
        assert ch.popen.pid == p.pid
        assert not Child("dns", None, []).adopt(procs)
    finally:
        p.kill()
        p.wait()


def test_adopted_pod_keeps_its_container_and_restarts_it_when_it_dies(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "PAUSE", "sleep")
    monkeypatch.setattr(sandbox, "container_argv", lambda pod, c, pid, cmd: list(cmd))
    pod = Pod("rb", "q", containers=(C,))
    box = subprocess.Popen(["sh", "-c", "sleep 30; :"], start_new_session=True)
    old = subprocess.Popen(["sleep", "30"], start_new_session=True)
    started: list = []
    try:
        def pause() -> bool:  # forked and exec'd: what a long-running sandbox shows
            pid = sandbox.child_pid(box.pid)
            return pid is not None and os.path.basename(os.readlink(f"/proc/{pid}/exe")) \
                == "sleep"
        wait_for(pause, 5, "the stand-in pause")
        procs = [_entry(box.pid, process_start_time(box.pid), sandbox.sandbox_role(pod)),
                 _entry(old.pid, process_start_time(old.pid), sandbox.container_role(pod, C))]
        ps = PodState(pod, "node-1", "10.42.1.9", "m", "x-rb-q", "v",
                      containers={"c": {"state": "running", "startedAt": 5.0, "last": None}})
        w = Workloads(tmp_path, lambda pid, role, netns=None: started.append((pid, role)))

        async def run() -> None:
            wl = await adopt.adopt_pod(w, ps, procs)
            (p,) = wl.procs
            assert p.popen.pid == old.pid and p.started_at == 5.0 and not started
            assert w.running(ps.key) and not w.reap(1e12)  # nothing to do while it runs
            old.kill()
            old.wait()  # reaped by its parent (here: us; the watchdog in a cluster)
            assert w.reap(1e12)
            assert p.last["exitCode"] == 137 and p.restarts == 1
            assert p.popen is not None and p.popen.pid != old.pid
            assert started == [(p.popen.pid, sandbox.container_role(pod, C))]
            await w.stop(ps.key, 0)
        asyncio.run(run())
    finally:
        for q in (box, old):
            q.kill()
            q.wait()


def test_watchdog_restarts_only_after_a_crash():
    killed = 9  # a wait status: terminated by SIGKILL
    assert wd.should_restart(killed, stopping=False)
    assert wd.should_restart(1 << 8, stopping=False)  # exit 1: a crash
    assert not wd.should_restart(0, stopping=False)  # exit 0: after `shutdown`
    assert not wd.should_restart(killed, stopping=True)  # `down` is ending it
    assert wd.backoff(1) == 0.0 and wd.backoff(2) == 0.25 and wd.backoff(10) == 5.0


@pytest.mark.parametrize("policy", ["Always", "Never"])
def test_container_that_died_unwatched_counts_a_restart(monkeypatch, tmp_path, policy):
    """Gone when the new supervisor looks: the kubelet's ContainerStatusUnknown (its exit
    status was the dead supervisor's to see), then restartPolicy: a restart, or done."""
    monkeypatch.setattr(sandbox, "PAUSE", "sleep")
    pod = Pod("rb", "r", containers=(C,), restart_policy=policy)
    gone = subprocess.Popen(["true"])
    gone.wait()
    procs = [_entry(gone.pid, 12345, sandbox.container_role(pod, C))]
    ps = PodState(pod, "node-1", "10.42.1.9", "m", "x-rb-r", "v")
    w = Workloads(tmp_path, lambda pid, role, netns=None: None)
    monkeypatch.setattr(w, "start_sandbox", lambda wl: None)  # no sandbox without root

    async def run() -> None:
        (p,) = (await adopt.adopt_pod(w, ps, procs)).procs
        assert p.popen is None
        assert (p.restarts, p.done) == ((1, False) if policy == "Always" else (0, True))
        assert p.last["reason"] == "ContainerStatusUnknown" and p.last["exitCode"] == 137
    asyncio.run(run())
