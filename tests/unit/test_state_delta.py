"""The publish delta (emunet.state.delta, emunet.state.follow): every section of the state is
classified, a delta applied to the old state gives the new one exactly (dicts and decoded
ClusterStates, order included), and a reader that missed a publish reads the whole state."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from emunet.config import load_config
from emunet.model import Impairment
from emunet.state import codec, delta, store
from emunet.state.follow import Follower, apply_state
from emunet.state.plan import plan

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml")) + sorted(
    (ROOT / "tests" / "e2e" / "configs").glob("*.yaml"))
CLUSTERS = [p for p in CONFIGS if "kind: Cluster" in p.read_text()]  # not apply's extra files
CLASSIFIED = set(delta.KEYED) | delta.MAPS | delta.WHOLE


def _state(name: str):
    return plan(load_config(next(p for p in CONFIGS if p.name == name)))


def _full_state():
    """A state with every section set: dual-stack (last_ip6, clusterIPs), links."""
    st = _state("dual-stack.yaml")
    st.links = {st.nodes[0].name: Impairment(delay_ms=5)}
    st.stamp(1000.0)
    return st


def test_every_section_of_the_state_is_classified() -> None:
    # a section added to codec.to_dict without a class in emunet.state.delta fails here
    d = codec.to_dict(_full_state())
    assert set(d) == CLASSIFIED
    assert delta.OPTIONAL <= delta.MAPS
    assert set(codec.KEYED_DECODERS) == set(delta.KEYED)
    assert set(codec.MAP_DECODERS) == delta.MAPS


@pytest.mark.parametrize("cfg", [p.name for p in CLUSTERS])
def test_every_shipped_config_diffs_to_nothing_against_itself(cfg: str) -> None:
    d = codec.to_dict(_state(cfg))
    assert delta.diff(d, copy.deepcopy(d)) == {"sections": {}}


def test_an_unclassified_section_is_refused() -> None:
    d = codec.to_dict(_state("two-node.yaml"))
    with pytest.raises(delta.DeltaError, match="brand_new"):
        delta.diff(d, {**d, "brand_new": 1})


BASE = codec.to_dict(_full_state())


def _renamed(item: dict, section: str, suffix: str) -> dict:
    x = copy.deepcopy(item)
    inner = x["pod"] if section == "pods" else x["service"] if section == "services" else x
    inner["name"] = inner["name"] + suffix
    return x


@hs.composite
def _mutated(draw) -> dict:
    """BASE with sections' items deleted, changed, added and reordered, maps edited."""
    d = copy.deepcopy(BASE)
    for section in sorted(delta.KEYED):
        items = d.get(section, [])
        if not items or not draw(hs.booleans()):
            continue
        keep = [x for x in items if draw(hs.booleans())]
        for x in keep:
            if section == "pods" and draw(hs.booleans()):
                x["ready"] = not x["ready"]
                x["pod"]["labels"] = {**x["pod"]["labels"], "v": str(draw(hs.integers(0, 3)))}
        added = [_renamed(x, section, f"-n{i}") for i, x in enumerate(items)
                 if draw(hs.booleans())]
        out = keep + added
        if draw(hs.booleans()):
            out = draw(hs.permutations(out))
        d[section] = list(out)
    for section in ("last_ip", "created", "last_ip6"):
        m = dict(d.get(section, {}))
        for k in list(m):
            if draw(hs.booleans()):
                del m[k]
        if draw(hs.booleans()):
            m["extra-" + str(draw(hs.integers(0, 9)))] = "10.42.9.9" if section != "created" \
                else 5.0
        if m or section != "last_ip6":
            d[section] = m
        else:
            d.pop(section, None)
    if draw(hs.booleans()):
        d["generation"] = d["generation"] + 1
    if draw(hs.booleans()):
        d["nodes"] = d["nodes"][::-1]
    if draw(hs.booleans()):
        d["links"] = {}
    return d


def _ordered(d: dict) -> list:
    """Every section with its item order (dict equality ignores the order of keys)."""
    return [(k, list(v) if isinstance(v, dict) else v) for k, v in sorted(d.items())]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=_mutated(), b=_mutated())
def test_apply_of_diff_gives_the_new_state(a: dict, b: dict) -> None:
    dd = delta.diff(a, b)
    out = delta.apply(dd, a)
    assert out == b and _ordered(out) == _ordered(b)
    # the same on decoded states, as a reader applies it (emunet.state.follow)
    st = apply_state(dd, codec.from_dict(a))
    assert codec.to_dict(st) == b and _ordered(codec.to_dict(st)) == _ordered(b)


def test_apply_state_leaves_the_old_state_as_it_was() -> None:
    old = _full_state()
    before = codec.to_dict(old)
    new = copy.deepcopy(old)
    key = next(iter(new.pods))
    new.pods[key] = dataclasses.replace(new.pods[key], ready=not new.pods[key].ready)
    out = apply_state(delta.diff(before, codec.to_dict(new)), old)
    assert codec.to_dict(old) == before
    assert out.pods[key].ready == new.pods[key].ready
    assert delta.changed_keys(delta.diff(before, codec.to_dict(new))) == {"pods": {key}}


def test_a_reader_that_missed_a_publish_reads_the_whole_state(tmp_path: Path) -> None:
    p = tmp_path / "state.json"
    pub = store.Publisher(p)
    st = _full_state()
    pub.publish(st)
    f = Follower(p)
    assert f.load() is None and f.full_loads == 1  # the first: whole
    key = next(iter(st.pods))
    st.pods[key].ready = not st.pods[key].ready
    st.generation += 1
    pub.publish(st)
    assert f.load() == {"generation": set(), "pods": {key}} and f.delta_loads == 1
    assert codec.to_dict(f.state) == codec.to_dict(st)
    assert f.load() == {}  # nothing newer
    for _ in range(2):  # two publishes, the first one missed
        st.generation += 1
        st.last_ip[st.nodes[0].name] = f"10.42.0.{st.generation}"
        pub.publish(st)
    assert f.load() is None and f.full_loads == 2
    assert codec.to_dict(f.state) == codec.to_dict(st)
    store.write(st, p)  # a plain write (emunet up) removes the delta: read whole
    assert not store.delta_path(p).exists()
    assert f.load() is None and f.full_loads == 3


def test_state_copy_is_independent_for_an_all_or_nothing_change() -> None:
    """ClusterState.copy (emunet.cluster.apply's copy before a change): changing the copy as
    apply does leaves the original exactly as it was, and the copy equals it before."""
    st = _full_state()
    before = codec.to_dict(st)
    new = st.copy()
    assert codec.to_dict(new) == before
    ps = next(iter(new.pods.values()))
    ps.ready, ps.containers["x"] = not ps.ready, {"state": "running"}
    new.nodes[0].underlay_ip = "192.0.2.1"
    next(iter(new.services.values())).cluster_ip = "10.43.9.9"
    new.last_ip[new.nodes[0].name] = "10.42.0.250"
    new.created["Pod/x/y"] = 1.0
    new.reserved_node_ports.add(30001)
    new.remove_pod(next(iter(new.pods)))
    new.others.clear()
    assert codec.to_dict(st) == before and not st.reserved_node_ports


def test_read_cluster_is_the_states_cluster(tmp_path: Path) -> None:
    p = tmp_path / "state.json"
    with pytest.raises(store.NotUpError):
        store.read_cluster(p)
    store.write(_full_state(), p)
    assert store.read_cluster(p) == store.read(p).cluster
