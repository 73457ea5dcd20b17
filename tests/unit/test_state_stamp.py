"""A published state is told apart from the one a reader loaded (emunet.state.store.stamp), so
a reader whose SIGHUP was lost still reloads: the agent's and the DNS responder's catch-up."""

from __future__ import annotations

import signal
from pathlib import Path
from types import SimpleNamespace

from emunet.agent.loop import Agent
from emunet.state import store
from emunet.state.follow import Follower
from tests.unit.dns_cluster import cluster


def _publish(path: Path, gen: int) -> None:
    st = cluster()
    st.generation = gen
    store.write(st, path)


def test_every_publish_has_a_new_stamp(tmp_path):
    p = tmp_path / "state.json"
    assert store.stamp(p) is None
    _publish(p, 1)
    st, first = store.read_stamped(p)
    assert st.generation == 1 and store.stamp(p) == first
    seen = {first}
    for gen in range(2, 40):  # renames recycle inode numbers; mtime and size still differ
        _publish(p, gen)
        now = store.stamp(p)
        assert now not in seen, gen
        seen.add(now)


def _agent(p: Path) -> SimpleNamespace:
    follow = Follower(p)
    follow.load()
    return SimpleNamespace(state_path=p, follow=follow, pending=[], node="node-1")


def test_agent_queues_a_reload_for_a_publish_without_sighup(tmp_path):
    p = tmp_path / "state.json"
    _publish(p, 1)
    a = _agent(p)
    Agent._catch_up(a)  # type: ignore[arg-type]
    assert a.pending == []  # the loaded file is the published one
    _publish(p, 2)  # its SIGHUP lost
    Agent._catch_up(a)  # type: ignore[arg-type]
    assert a.pending == [signal.SIGHUP]
    a.pending.clear()
    Agent._catch_up(a)  # type: ignore[arg-type]
    assert a.pending == []  # once per file, even before the reload ran (or if it failed)


def test_agent_queues_a_reload_for_a_delta_publish_without_sighup(tmp_path):
    """With the supervisor's deltas (store.Publisher), every publish is noticed too."""
    p = tmp_path / "state.json"
    pub = store.Publisher(p)
    st = cluster()
    for gen in (1, 2):
        st.generation = gen
        pub.publish(st)
    a = _agent(p)
    Agent._catch_up(a)  # type: ignore[arg-type]
    assert a.pending == []
    for gen in (3, 4):  # a publish changing nothing but the generation: still a new delta
        st.generation = gen
        pub.publish(st)
        Agent._catch_up(a)  # type: ignore[arg-type]
        assert a.pending == [signal.SIGHUP], gen
        a.pending.clear()
        a.follow.load()
        assert a.follow.state.generation == gen and a.follow.delta_loads == gen - 2


def test_agent_does_not_double_a_queued_sighup(tmp_path):
    p = tmp_path / "state.json"
    _publish(p, 1)
    a = _agent(p)
    _publish(p, 2)
    a.pending.append(signal.SIGHUP)  # the signal did come
    Agent._catch_up(a)  # type: ignore[arg-type]
    assert a.pending == [signal.SIGHUP]
