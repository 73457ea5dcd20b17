"""emunet.cluster.workloads and its pod sandbox: a container starts only inside a sandbox that is
up; a slow sandbox is waited for, a dead one is recreated and the container log says why.
Ordinary processes stand in for the sandbox (no root, no namespaces)."""

from __future__ import annotations

import pytest

from emunet.cluster import workloads as wlmod
from emunet.cluster.container import ContainerProc
from emunet.cluster.workloads import PodWorkload, Workloads
from emunet.host import sandbox
from emunet.model import Container, Pod
from emunet.state.cluster import PodState
from tests.waiting import wait_for

C = Container("c", command=("sleep", "30"))
POD = Pod("rb", "custom", containers=(C,))


def _setup(monkeypatch, tmp_path, script: str) -> tuple[Workloads, PodWorkload, list]:
    started: list = []
    monkeypatch.setattr(sandbox, "PAUSE", "sleep")  # the stand-in's "pause" is a sleep
    monkeypatch.setattr(sandbox, "sandbox_argv", lambda pod, netns: ["sh", "-c", script])
    # the container itself: an ordinary process, not nsenter into namespaces
    monkeypatch.setattr(sandbox, "container_argv", lambda pod, c, pid, cmd: list(cmd))
    w = Workloads(tmp_path, lambda pid, role, netns=None: started.append(role))
    ps = PodState(POD, "node-1", "10.42.1.9", "0a:58:0a:2a:01:09", "x-rb-custom", "veth9")
    wl = PodWorkload(ps, procs=[ContainerProc(C)])
    return w, wl, started


def _stop(wl: PodWorkload) -> None:
    for p in (wl.sandbox, *(q.popen for q in wl.procs)):
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()


def test_a_slow_sandbox_is_waited_for_not_given_up(monkeypatch, tmp_path):
    monkeypatch.setattr(wlmod, "SANDBOX_TIMEOUT", 0.05)
    # the child (the "pause") appears only after 0.4 s, well past the timeout
    w, wl, _ = _setup(monkeypatch, tmp_path, "(sleep 0.4; exec sleep 30); :")
    try:
        w.start_sandbox(wl)
        p = wl.procs[0]
        w._spawn(wl, p, 100.0)
        assert p.popen is None and p.next_start == pytest.approx(100.2)  # retried soon
        assert not (tmp_path / "rb_custom_c.log").exists()  # nothing to report
        wait_for(lambda: w._sandbox_ready(wl), 5, "the slow sandbox")
        w._spawn(wl, p, 101.0)
        assert p.popen is not None and p.popen.poll() is None and p.restarts == 0
    finally:
        _stop(wl)


def test_a_dead_sandbox_is_recreated_and_the_container_log_says_why(monkeypatch, tmp_path):
    w, wl, started = _setup(monkeypatch, tmp_path, "echo 'mount: /tmp: permission denied'; "
                                                   "exit 3")
    try:
        w.start_sandbox(wl)
        wait_for(lambda: wl.sandbox.poll() is not None, 5, "the sandbox's exit")
        p = wl.procs[0]
        w._spawn(wl, p, 100.0)
        assert p.popen is None and p.next_start == 110.0  # the kubelet's first back-off
        log = (tmp_path / "rb_custom_c.log").read_text()
        assert log == ("emunet: the pod sandbox exited with status 3: mount: /tmp: permission"
                       " denied; container not started, sandbox recreated\n")
        assert started == ["sandbox rb/custom"] * 2  # launched again
        wait_for(lambda: wl.sandbox.poll() is not None, 5, "the second sandbox's exit")
        w._spawn(wl, p, 110.0)
        assert p.next_start == 130.0  # the back-off doubles
        assert (tmp_path / "rb_custom_c.log").read_text().count("exited with status 3") == 2
    finally:
        _stop(wl)
