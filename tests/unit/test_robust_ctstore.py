"""The agent's conntrack snapshot file (emunet/agent/ctstore.py) and the conntrack.max setting."""

from __future__ import annotations

import stat

import pytest

from emunet.agent.ctstore import SAVE_INTERVAL, CtStore
from emunet.config import ConfigError, load_config_text
from emunet.datapath.conntrack import DEFAULT_MAX, Conntrack
from tests.unit.pipeline_pair import PipelinePair, make_state, open_connection

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
