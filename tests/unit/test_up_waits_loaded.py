"""`emunet up` answers only once every reader forwards by the state that has every pod ready
(the supervisor's status lists the readers still behind): else the first request after `up`
can meet an agent that still holds a command pod unready (issue 15 §5)."""

from __future__ import annotations

import pytest

from emunet.cluster import lifecycle
from emunet.errors import EmunetError
from tests.unit.pipeline_pair import make_state


def _status(behind: list[str]) -> dict:
    return {"pods_ready": 5, "pods": 5, "pods_held": 0, "behind": behind,
            "children": {"agent-node-1": {"alive": True}, "agent-node-2": {"alive": True}}}


@pytest.fixture
def up_env(monkeypatch):
    """DNS answers, no L7 listeners to wait for, no real sleeps."""
    monkeypatch.setattr(lifecycle, "dns_query", lambda *a: "10.43.0.10")
    monkeypatch.setattr(lifecycle, "_wait_l7", lambda *a: None)
    monkeypatch.setattr(lifecycle.time, "sleep", lambda s: None)


def test_up_waits_until_no_reader_is_behind(monkeypatch, up_env):
    answers = iter([_status(["agent-node-2"]), _status(["agent-node-2"]), _status([])])
    calls = []
    monkeypatch.setattr(lifecycle.control, "request",
                        lambda op, timeout: calls.append(op) or next(answers))
    lifecycle._wait_ready(make_state(), lambda msg: None)
    assert calls == ["status"] * 3


def test_a_reader_that_never_catches_up_is_named(monkeypatch, up_env):
    monkeypatch.setattr(lifecycle.control, "request", lambda op, timeout: _status(["dns"]))
    monkeypatch.setattr(lifecycle, "READY_TIMEOUT", 0.05)
    with pytest.raises(EmunetError, match="dns did not load the cluster state"):
        lifecycle._wait_ready(make_state(), lambda msg: None)


def _clock(monkeypatch, step: float) -> None:
    """A monotonic clock that advances `step` seconds per reading: no real waiting."""
    now = [0.0]

    def tick() -> float:
        now[0] += step
        return now[0]
    monkeypatch.setattr(lifecycle.time, "monotonic", tick)


def test_up_keeps_waiting_while_pods_become_ready(monkeypatch, up_env):
    """Readiness taking far longer than READY_TIMEOUT in total is fine while it progresses."""
    monkeypatch.setattr(lifecycle, "READY_TIMEOUT", 10.0)
    _clock(monkeypatch, 1.0)
    answers = iter([{**_status([]), "pods_ready": n // 3} for n in range(3 * 5)]
                   + [_status([])])
    monkeypatch.setattr(lifecycle.control, "request", lambda op, timeout: next(answers))
    said: list[str] = []
    lifecycle._wait_ready(make_state(), said.append)  # ~45 clock seconds, 4.5x the timeout
    assert said[-2] == "pods ready: 5/5"
    assert any(m.startswith("pods ready: ") and m.endswith("...") for m in said)


def test_up_gives_up_when_no_pod_becomes_ready(monkeypatch, up_env):
    monkeypatch.setattr(lifecycle, "READY_TIMEOUT", 10.0)
    _clock(monkeypatch, 1.0)
    monkeypatch.setattr(lifecycle.control, "request",
                        lambda op, timeout: {**_status([]), "pods_ready": 2})
    with pytest.raises(EmunetError, match=r"none became Ready for 10s \(2/"):
        lifecycle._wait_ready(make_state(), lambda msg: None)


def test_a_busy_supervisor_is_no_progress_not_a_crash(monkeypatch, up_env):
    def busy(op, timeout):
        raise TimeoutError("timed out")
    monkeypatch.setattr(lifecycle, "READY_TIMEOUT", 5.0)
    _clock(monkeypatch, 1.0)
    monkeypatch.setattr(lifecycle.control, "request", busy)
    with pytest.raises(EmunetError, match="none became Ready"):
        lifecycle._wait_ready(make_state(), lambda msg: None)
