"""`emunet label pod|namespace NAME k=v k2-`: change labels in the cluster state. Pure.

Semantics of `kubectl label`: `key=value` sets, `key-` removes; changing an existing value needs
`--overwrite`; a label key or value must be valid (the same checks as config files). The
namespace label `kubernetes.io/metadata.name` is set by the API server and cannot be changed.
Labels drive Service endpoints and NetworkPolicy identities, so the supervisor publishes the
new state at once and every node agent recompiles its policy tables.
"""

from __future__ import annotations

import dataclasses

from emunet.config import names
from emunet.state.cluster import NS_NAME_LABEL, ClusterState, StateError

KINDS = {"pod": "pod", "pods": "pod", "po": "pod",
         "namespace": "namespace", "namespaces": "namespace", "ns": "namespace"}


def parse_changes(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """`k=v` and `k-` arguments to (set, remove); StateError on a malformed one."""
    sets: dict[str, str] = {}
    removes: list[str] = []
    for a in args:
        if a.endswith("-") and "=" not in a:
            key = a[:-1]
            bad = names.label_key(key)
            if bad:
                raise StateError(f"invalid label key {key!r}: {bad}")
            removes.append(key)
            continue
        key, eq, value = a.partition("=")
        if not eq:
            raise StateError(f"{a!r}: write key=value to set a label or key- to remove it")
        bad = names.label_key(key)
        if bad:
            raise StateError(f"invalid label key {key!r}: {bad}")
        bad = names.label_value(value)
        if bad:
            raise StateError(f"invalid label value {value!r}: {bad}")
        sets[key] = value
    if set(sets) & set(removes):
        raise StateError("a label cannot be both set and removed")
    return sets, removes


def relabel(old: dict[str, str], sets: dict[str, str], removes: list[str],
            overwrite: bool) -> dict[str, str]:
    new = dict(old)
    for k, v in sets.items():
        if k in old and old[k] != v and not overwrite:
            raise StateError(f"'{k}' already has a value ({old[k]}), and --overwrite is false")
        new[k] = v
    for k in removes:
        new.pop(k, None)
    return new


def label(state: ClusterState, kind: str, name: str, namespace: str | None,
          args: list[str], overwrite: bool = False) -> str:
    """Change the labels in `state` in place; returns kubectl's message."""
    canonical = KINDS.get(kind.lower())
    if canonical is None:
        raise StateError(f"cannot label kind {kind!r}: use pod or namespace")
    sets, removes = parse_changes(args)
    if not sets and not removes:
        raise StateError("no labels given: key=value to set, key- to remove")
    if canonical == "pod":
        ps = state.pods.get((namespace or "default", name))
        if ps is None:
            raise StateError(f"pod {name!r} not found in namespace {namespace or 'default'}")
        new = relabel(ps.pod.labels, sets, removes, overwrite)
        changed = new != ps.pod.labels
        ps.pod = dataclasses.replace(ps.pod, labels=new)
        return f"pod/{name} {'labeled' if changed else 'not labeled'}"
    ns = state.namespaces.get(name)
    if ns is None:
        raise StateError(f"namespace {name!r} not found")
    if NS_NAME_LABEL in sets or NS_NAME_LABEL in removes:
        raise StateError(f"{NS_NAME_LABEL} is set by the API server and cannot be changed")
    new = relabel(ns.labels, sets, removes, overwrite)
    changed = new != ns.labels
    state.namespaces[name] = dataclasses.replace(ns, labels=new)
    return f"namespace/{name} {'labeled' if changed else 'not labeled'}"
