"""The user's Endpoints and EndpointSlices (`ClusterState.endpoint_sets`) as API objects, and
the slices Kubernetes' controllers would derive from them. Pure.

As in Kubernetes: an Endpoints object is shown as written, unless a Service of its name has a
selector (the endpoints controller overwrites it: emunet.api.objects.endpoints is served); the
EndpointSlice mirroring controller copies the Endpoints of a selector-less Service into a slice
(`<name>-<suffix>`, managed-by endpointslicemirroring-controller.k8s.io; the `kubernetes`
Endpoints, labelled skip-mirror, has the API server's own slice named `kubernetes`).
"""

from __future__ import annotations

from typing import Any

from emunet.api.objects import meta, uid
from emunet.model.endpoints import (
    ENDPOINTS,
    SERVICE_NAME_LABEL,
    EndpointAddress,
    EndpointPort,
    EndpointSet,
)
from emunet.state.cluster import ClusterState

MIRROR = "endpointslicemirroring-controller.k8s.io"
SKIP_MIRROR = "endpointslice.kubernetes.io/skip-mirror"


def _target(st: ClusterState, a: EndpointAddress) -> dict[str, Any]:
    if a.target is None:
        return {}
    ns, name = a.target
    ref: dict[str, Any] = {"kind": "Pod", "namespace": ns, "name": name}
    if (ns, name) in st.pods:
        ref["uid"] = uid(st, "Pod", ns, name)
    return {"targetRef": ref}


def _address(st: ClusterState, a: EndpointAddress) -> dict[str, Any]:
    out: dict[str, Any] = {"ip": a.ip}
    if a.hostname:
        out["hostname"] = a.hostname
    if a.node_name:
        out["nodeName"] = a.node_name
    return {**out, **_target(st, a)}


def _port(p: EndpointPort) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.name} if p.name else {}
    if p.port is not None:
        out["port"] = p.port
    return {**out, "protocol": p.protocol}


def endpoints(st: ClusterState, es: EndpointSet) -> dict[str, Any]:
    """v1 Endpoints as the user wrote it (addresses, notReadyAddresses, ports)."""
    subsets = []
    for g in es.groups:
        sub: dict[str, Any] = {}
        ready = [_address(st, a) for a in g.addresses if a.ready]
        unready = [_address(st, a) for a in g.addresses if not a.ready]
        if ready:
            sub["addresses"] = ready
        if unready:
            sub["notReadyAddresses"] = unready
        if g.ports:
            sub["ports"] = [_port(p) for p in g.ports]
        subsets.append(sub)
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "Endpoints",
                           "metadata": meta(st, ENDPOINTS, es.namespace, es.name, es.labels)}
    if subsets:
        out["subsets"] = subsets
    return out


def _slice_endpoints(st: ClusterState, addrs: list[EndpointAddress]) -> list[dict[str, Any]]:
    out = []
    for a in addrs:
        e: dict[str, Any] = {"addresses": [a.ip],
                             "conditions": {"ready": a.ready, "serving": a.ready,
                                            "terminating": False}}
        if a.hostname:
            e["hostname"] = a.hostname
        if a.node_name:
            e["nodeName"] = a.node_name
        out.append({**e, **_target(st, a)})
    return out


def endpoint_slice(st: ClusterState, es: EndpointSet) -> dict[str, Any]:
    """discovery/v1 EndpointSlice as the user wrote it."""
    g = es.groups[0] if es.groups else None
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": meta(st, "EndpointSlice", es.namespace, es.name, es.labels),
            "addressType": es.address_type,
            "endpoints": _slice_endpoints(st, list(g.addresses) if g else []),
            "ports": [_port(p) for p in g.ports] if g else []}


def mirrored_slices(st: ClusterState, es: EndpointSet) -> list[dict[str, Any]]:
    """The slices the mirroring controller keeps for an Endpoints of a selector-less Service
    (one per subset; none without the Service, or for one with a selector)."""
    ss = st.services.get((es.namespace, es.name))
    if ss is None or ss.service.selector is not None:
        return []
    own = es.labels.get(SKIP_MIRROR) == "true"  # the API server's `kubernetes` slice
    labels = {k: v for k, v in es.labels.items() if k != SKIP_MIRROR}
    labels[SERVICE_NAME_LABEL] = es.name
    if not own:
        labels["endpointslice.kubernetes.io/managed-by"] = MIRROR
    suffix = uid(st, ENDPOINTS, es.namespace, es.name)[:5]
    out = []
    for i, g in enumerate(es.groups):
        # the mirroring controller writes one slice per address family of a subset
        by_family = {"IPv4": [a for a in g.addresses if ":" not in a.ip],
                     "IPv6": [a for a in g.addresses if ":" in a.ip]}
        for fam, addrs in by_family.items():
            if fam == "IPv6" and not addrs:
                continue
            name = es.name if own else f"{es.name}-emu{suffix}{i or ''}"
            if fam == "IPv6":
                name += "-v6"
            extra = {} if own else {"ownerReferences": [{
                "apiVersion": "v1", "kind": "Endpoints", "name": es.name,
                "uid": uid(st, ENDPOINTS, es.namespace, es.name), "controller": True,
                "blockOwnerDeletion": True}]}
            m = meta(st, "EndpointSlice", es.namespace, name, labels,
                     born=(ENDPOINTS, es.namespace, es.name), **extra)
            out.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": m, "addressType": fam,
                        "endpoints": _slice_endpoints(st, addrs),
                        "ports": [_port(p) for p in g.ports]})
    return out
