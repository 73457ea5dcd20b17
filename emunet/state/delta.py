"""What changed between two published states, and that change applied: pure functions on the
JSON-able dicts `state.codec.to_dict` makes (issue 17: a publish carried the whole state and
every reader re-parsed and re-planned all of it).

Every top-level section of `to_dict` is classified here, and `diff` refuses a section it does
not know (tests/unit/test_state_delta.py builds a state with every field set, so a section
added to the codec without a class here fails that test):

- keyed lists (pods, services, ...): items keyed by their identity (a pod's namespace/name);
  the delta lists the items set (new or changed, whole) and the keys deleted, plus the key
  order when the new order is not the old one with deletions removed and additions appended;
- maps (last_ip, links, created, ...): the same, keyed by the map's own keys;
- whole sections (cluster, nodes, others, coredns, generation): small, carried whole when
  they differ.

`apply(diff(a, b), a) == b` for any two states' dicts, order included (property-tested).
A delta in JSON: {"sections": {name: {"set": [...], "del": [...], "order": [...]} |
{"whole": value}}}; keys of keyed lists are JSON arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Key = tuple[str, ...]


def _pod_key(d: dict) -> Key:
    return (d["pod"]["namespace"], d["pod"]["name"])


def _service_key(d: dict) -> Key:
    return (d["service"]["namespace"], d["service"]["name"])


def _ns_name_key(d: dict) -> Key:
    return (d["namespace"], d["name"])


def _name_key(d: dict) -> Key:
    return (d["name"],)


def _endpoint_set_key(d: dict) -> Key:
    return (d["kind"], d["namespace"], d["name"])


# section -> its item's key (the ClusterState dict's key, as a tuple)
KEYED: dict[str, Callable[[dict], Key]] = {
    "namespaces": _name_key,
    "pods": _pod_key,
    "services": _service_key,
    "deployments": _ns_name_key,
    "policies": _ns_name_key,
    "cilium_policies": _ns_name_key,
    "endpoint_sets": _endpoint_set_key,
}
MAPS = frozenset({"last_ip", "last_ip6", "links", "created", "manifests"})
WHOLE = frozenset({"cluster", "nodes", "others", "coredns", "generation"})
# Sections `to_dict` leaves out while empty (an IPv4-only state has no last_ip6)
OPTIONAL = frozenset({"last_ip6"})


class DeltaError(ValueError):
    """A state dict with a section this module does not classify (a codec change)."""


def _check(d: dict[str, Any]) -> None:
    unknown = set(d) - set(KEYED) - MAPS - WHOLE
    if unknown:
        raise DeltaError(f"state sections not classified in emunet.state.delta: "
                         f"{', '.join(sorted(unknown))}")


def _diff_map(a: dict[Any, Any], b: dict[Any, Any]) -> dict | None:
    """set (changed or new items), del (keys gone) and, when apply's order would differ,
    order: apply keeps the old order without the deleted, then appends the new."""
    changed = {k: v for k, v in b.items() if k not in a or a[k] != v}
    gone = [k for k in a if k not in b]
    expect = [k for k in a if k in b] + [k for k in b if k not in a]
    out: dict[str, Any] = {}
    if changed:
        out["set"] = changed
    if gone:
        out["del"] = gone
    if expect != list(b):
        out["order"] = list(b)
    return out or None


def _diff_keyed(a: list[dict], b: list[dict], key: Callable[[dict], Key]) -> dict | None:
    """`_diff_map` of the lists keyed by `key`: set holds the items, keys are JSON lists."""
    d = _diff_map({key(x): x for x in a}, {key(x): x for x in b})
    if d is None:
        return None
    out: dict[str, Any] = {}
    if "set" in d:
        out["set"] = list(d["set"].values())
    for part in ("del", "order"):
        if part in d:
            out[part] = [list(k) for k in d[part]]
    return out


def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The delta from state dict `a` to `b` (only the sections that differ)."""
    _check(a)
    _check(b)
    sections: dict[str, Any] = {}
    for name in sorted(set(a) | set(b)):
        if name in KEYED:
            d = _diff_keyed(a.get(name, []), b.get(name, []), KEYED[name])
        elif name in MAPS:
            d = _diff_map(a.get(name, {}), b.get(name, {}))
        elif a.get(name) != b.get(name) or (name in a) != (name in b):
            d = {"whole": b[name]} if name in b else {"absent": True}
        else:
            d = None
        if d is not None:
            if name in OPTIONAL and name not in b:
                d["absent"] = True
            sections[name] = d
    return {"sections": sections}


def _apply_map(d: dict, m: dict[Any, Any]) -> dict[Any, Any]:
    out = dict(m)
    for k in d.get("del", ()):
        out.pop(k, None)
    out.update(d.get("set", {}))
    if "order" in d:
        out = {k: out[k] for k in d["order"]}
    return out


def _apply_keyed(d: dict, items: list[dict], key: Callable[[dict], Key]) -> list[dict]:
    """`_apply_map` on the list keyed by `key` (the delta's keys are JSON lists)."""
    as_map: dict[str, Any] = {"set": {key(x): x for x in d.get("set", ())}}
    for part in ("del", "order"):
        if part in d:
            as_map[part] = [tuple(k) for k in d[part]]
    return list(_apply_map(as_map, {key(x): x for x in items}).values())


def apply(delta: dict[str, Any], a: dict[str, Any]) -> dict[str, Any]:
    """State dict `a` with `delta` applied (a new dict; `a` is not changed)."""
    out = dict(a)
    for name, d in delta["sections"].items():
        if name in KEYED:
            out[name] = _apply_keyed(d, a.get(name, []), KEYED[name])
        elif name in MAPS:
            out[name] = _apply_map(d, a.get(name, {}))
        elif name in WHOLE:
            if "whole" in d:
                out[name] = d["whole"]
        else:
            raise DeltaError(f"delta section {name!r} not classified in emunet.state.delta")
        if d.get("absent"):
            out.pop(name, None)
    return out


def changed_keys(delta: dict[str, Any]) -> dict[str, set]:
    """Section -> the keys it set or deleted (tuples for keyed lists, strings for maps; an
    empty set for a whole section that changed): what a reader must recompute."""
    out: dict[str, set] = {}
    for name, d in delta["sections"].items():
        keys: set = set()
        if name in KEYED:
            key = KEYED[name]
            keys.update(key(x) for x in d.get("set", ()))
            keys.update(tuple(k) for k in d.get("del", ()))
        elif name in MAPS:
            keys.update(d.get("set", {}))
            keys.update(d.get("del", ()))
        out[name] = keys
    return out
