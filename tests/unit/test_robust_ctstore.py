"""The agent's conntrack snapshot file (emunet/agent/ctstore.py) and the conntrack.max setting."""

from __future__ import annotations

import stat

import pytest

from emunet.agent.ctstore import SAVE_INTERVAL, CtStore
from emunet.config import ConfigError, load_config_text
from emunet.datapath.conntrack import DEFAULT_MAX, Conntrack
from tests.unit.pipeline_pair import (
    PipelinePair,
    make_state,
    open_connection,
    pod,
    tcp_reply,
    tcp_syn,
)

CLUSTER = "apiVersion: emunet/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n" \
          "  nodes: [{name: n1}]\n"


def test_save_is_root_only_and_a_new_store_restores(tmp_path):
    pair = PipelinePair(make_state())
    open_connection(pair)
    ct = pair.dps["node-1"].ct
    store = CtStore.attach(ct, tmp_path, "node-1", 1000, pair.now)
    assert ct.max_entries == 1000 and store.restored == 0
    store.maybe_save(pair.now)
    path = tmp_path / "conntrack-node-1.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    fresh = Conntrack()
    again = CtStore.attach(fresh, tmp_path, "node-1", None, pair.now + 1)
    assert again.restored == 1 and fresh.max_entries == DEFAULT_MAX
    assert [c.orig for c in fresh.conns()] == [c.orig for c in ct.conns()]


def test_saves_follow_changes_at_most_every_interval(tmp_path):
    ct = Conntrack()
    store = CtStore(ct, tmp_path / "ct.json")
    store.maybe_save(10.0)
    assert store.due == 10.0 + 1.0  # unchanged: refreshed every second
    ct.version += 1
    assert store.due == 10.0 + SAVE_INTERVAL


def test_a_damaged_snapshot_starts_empty(tmp_path):
    (tmp_path / "conntrack-n1.json").write_text("{not json")
    assert CtStore.attach(Conntrack(), tmp_path, "n1", None, 0).restored == 0


def test_conntrack_max_in_the_cluster_document():
    assert load_config_text(CLUSTER).cluster.conntrack_max == DEFAULT_MAX
    cfg = load_config_text(CLUSTER + "  conntrack: {max: 5000}\n")
    assert cfg.cluster.conntrack_max == 5000
    with pytest.raises(ConfigError, match="spec.conntrack.max: must be 16-"):
        load_config_text(CLUSTER + "  conntrack: {max: 3}\n")


def test_the_handshake_completing_makes_the_next_snapshot_due_soon(tmp_path):
    """An entry becomes worth saving when it is assured; the snapshot must follow within
    SAVE_INTERVAL, not the once-a-second refresh (a SIGKILL in that second lost the flow)."""
    pair = PipelinePair(make_state())
    st = pair.st
    c, w = pod(st, "client"), pod(st, "web-0")
    ct = pair.dps["node-1"].ct
    store = CtStore(ct, tmp_path / "ct.json")
    pair.send("node-1", tcp_syn(c, 40000), c.host_ifname)
    pair.send("node-2", tcp_reply(w, c, 40000), w.host_ifname)
    store.save(pair.now)  # the half-open connection: not written
    assert store.due == pair.now + 1.0
    pair.send("node-1", tcp_syn(c, 40000, flags="A"), c.host_ifname)  # assures it
    assert store.due == pair.now + SAVE_INTERVAL
    store.save(pair.now + SAVE_INTERVAL)
    (tmp_path / "conntrack-x.json").write_text(store.path.read_text())
    assert CtStore.attach(Conntrack(), tmp_path, "x", None, pair.now).restored == 1
