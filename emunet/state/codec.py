"""ClusterState to and from JSON-able dicts: the shape of `/run/emunet/state.json`.

Dataclasses go
out through `dataclasses.asdict`; on the way back, tuples, nested dataclasses and the optional
source locations (`loc`) are rebuilt field by field, as `asdict` leaves lists and dicts.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from typing import Any

from emunet import model
from emunet.model import (
    ClusterSpec,
    Container,
    ContainerPort,
    Namespace,
    NodeSpec,
    Pod,
    Service,
    cilium,
)
from emunet.model import endpoints as epmodel
from emunet.model.coredns import CoreDNS
from emunet.model.netpol import from_dict as policy_from_dict
from emunet.state.cluster import ClusterState, NodeState, PodState, ServiceState

_FIELDS: dict[type, tuple[str, ...]] = {}
# Dual-stack fields (issue 19) left out of the JSON while they hold their default (None,
# empty, IPv4 only): an IPv4-only cluster's state.json stays byte for byte what it was, and
# older state files load (the dataclass defaults fill them in).
_OPTIONAL: dict[type, dict[str, Any]] = {
    cls: {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
          for f in dataclasses.fields(cls) if f.name in names}
    for cls, names in (
        (ClusterSpec, ("cluster_cidr6", "service_cidr6", "families", "underlay_cidr6",
                       "cluster_dns6")),
        (NodeSpec, ("pod_cidr6", "underlay_ip6")),
        (NodeState, ("pod_cidr6", "gateway_ip6", "underlay_ip6", "vtep_mac6")),
        (PodState, ("ip6",)),
        (ServiceState, ("cluster_ip6", "ip_families", "ip_family_policy")),
        (Service, ("cluster_ips", "ip_families", "ip_family_policy")),
    )}


def _asdict(obj: Any) -> Any:
    """`dataclasses.asdict` for JSON: the same dicts, lists and values, without its deep copy
    of every leaf (which made writing a 2,000-pod state take ~0.5 s, paid on every publish)."""
    cls = type(obj)
    names = _FIELDS.get(cls)
    if names is None and dataclasses.is_dataclass(cls):
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    if names is not None:
        out = {n: _asdict(getattr(obj, n)) for n in names}
        optional = _OPTIONAL.get(cls)
        if optional:
            for n, default in optional.items():
                if getattr(obj, n) == default:
                    del out[n]
        return out
    if cls is list or cls is tuple:
        return [_asdict(v) for v in obj]
    if cls is dict:
        return {k: _asdict(v) for k, v in obj.items()}
    if cls in (str, int, float, bool) or obj is None:
        return obj
    return copy.deepcopy(dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj)


# id(Pod) -> (the Pod, its dict): a publisher's memo of the pods' frozen specs (to_dict)
PodMemo = dict[int, tuple[Pod, dict[str, Any]]]


def _pod_state_dict(ps: PodState, memo: PodMemo) -> dict[str, Any]:
    """`_asdict(ps)`, with the pod's spec (a frozen Pod, replaced whole on every change:
    labels, apply) taken from `memo` when it is the same object: at 2,000 pods the specs were
    most of a publish's to_dict."""
    out = _asdict_except(ps, "pod")
    pod = ps.pod
    hit = memo.get(id(pod))
    if hit is None or hit[0] is not pod:
        hit = memo[id(pod)] = (pod, _asdict(pod))
    out["pod"] = hit[1]
    return out


def _asdict_except(obj: Any, skip: str) -> dict[str, Any]:
    cls = type(obj)
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    out = {n: _asdict(getattr(obj, n)) for n in names if n != skip}
    for n, default in _OPTIONAL.get(cls, {}).items():
        if getattr(obj, n) == default:
            del out[n]
    return out


def to_dict(st: ClusterState, memo: PodMemo | None = None) -> dict[str, Any]:
    """The state file's content. `memo`: reuse the dicts of pod specs seen before (the
    supervisor's publishes, store.Publisher; the dicts are shared, not to be changed)."""
    if memo is not None and len(memo) > 2 * len(st.pods) + 64:
        live = {id(p.pod) for p in st.pods.values()}
        for k in [k for k in memo if k not in live]:
            del memo[k]  # pods gone or replaced: forget their specs
    return {
        "cluster": _asdict(st.cluster),
        "nodes": [_asdict(n) for n in st.nodes],
        "namespaces": [_asdict(n) for n in st.namespaces.values()],
        "pods": [_asdict(p) for p in st.pods.values()] if memo is None
        else [_pod_state_dict(p, memo) for p in st.pods.values()],
        "services": [_asdict(s) for s in st.services.values()],
        "deployments": [_asdict(d) for d in st.deployments.values()],
        "policies": [_asdict(p) for p in st.policies.values()],
        "cilium_policies": [cilium.to_dict(p) for p in st.cilium_policies.values()],
        "others": [_asdict(o) for o in st.others],
        "endpoint_sets": [epmodel.to_dict(e) for e in st.endpoint_sets.values()],
        "coredns": _asdict(st.coredns) if st.coredns is not None else None,
        "last_ip": dict(st.last_ip),
        **({"last_ip6": dict(st.last_ip6)} if st.last_ip6 else {}),
        "links": {n: _asdict(i) for n, i in st.links.items()},
        "generation": st.generation,
        "created": dict(st.created),
        "manifests": dict(st.manifests),
    }


def _same(v: Any) -> Any:
    return v


def _namespace_from(n: dict) -> Namespace:
    return Namespace(n["name"], n["labels"], _loc(n.get("loc")))


def _pod_state_from(p: dict) -> PodState:
    return PodState(**{**p, "pod": _pod_from(p["pod"])})


def _service_state_from(s: dict) -> ServiceState:
    return ServiceState(service=_service_from(s["service"]), cluster_ip=s["cluster_ip"],
                        cluster_ip6=s.get("cluster_ip6"),
                        ip_families=tuple(s.get("ip_families", ())),
                        ip_family_policy=s.get("ip_family_policy"))


def _deployment_from(dd: dict) -> model.Deployment:
    return model.Deployment(**{**dd, "template": _pod_from(dd["template"]),
                               "loc": _loc(dd.get("loc"))})


def _coredns_from(c: dict | None) -> CoreDNS | None:
    if not c:
        return None
    return CoreDNS(**{**c, "zones": tuple(c["zones"]), "forward": tuple(c["forward"]),
                      "fallthrough": None if c["fallthrough"] is None
                      else tuple(c["fallthrough"])})


# A keyed section of to_dict -> (the ClusterState attribute, its item decoder, the item's key
# in that dict): from_dict and the delta reader (emunet.state.follow) decode items alike
KEYED_DECODERS: dict[str, tuple[str, Callable[[dict], Any], Callable[[Any], Any]]] = {
    "namespaces": ("namespaces", _namespace_from, lambda n: n.name),
    "pods": ("pods", _pod_state_from, lambda p: p.key),
    "services": ("services", _service_state_from, lambda s: s.key),
    "deployments": ("deployments", _deployment_from, lambda d: d.key),
    "policies": ("policies", policy_from_dict, lambda p: p.key),
    "cilium_policies": ("cilium_policies", cilium.from_dict, lambda p: (p.namespace, p.name)),
    "endpoint_sets": ("endpoint_sets", epmodel.from_dict, lambda e: e.key),
}
# map sections -> their value decoder (JSON values as they are, but links' Impairments)
MAP_DECODERS: dict[str, Callable[[Any], Any]] = {
    "last_ip": _same, "last_ip6": _same, "links": lambda i: model.Impairment(**i),
    "created": _same, "manifests": _same,
}


def decode_whole(st: ClusterState, name: str, value: Any) -> None:
    """Set whole section `name` of `st` from its to_dict form."""
    if name == "cluster":
        st.cluster = _cluster_from(value)
    elif name == "nodes":
        st.nodes = [NodeState(**n) for n in value]
    elif name == "others":
        st.others = [model.Manifest(**{**o, "loc": _loc(o.get("loc"))}) for o in value]
    elif name == "coredns":
        st.coredns = _coredns_from(value)
    elif name == "generation":
        st.generation = value
    else:
        raise ValueError(f"not a whole section of the state: {name!r}")


def from_dict(d: dict[str, Any]) -> ClusterState:
    st = ClusterState(cluster=_cluster_from(d["cluster"]))
    st.nodes = [NodeState(**n) for n in d["nodes"]]
    for section, (attr, decode, key) in KEYED_DECODERS.items():
        table = getattr(st, attr)
        for item in d.get(section, []):
            obj = decode(item)
            table[key(obj)] = obj
    st.others = [model.Manifest(**{**o, "loc": _loc(o.get("loc"))}) for o in d["others"]]
    st.coredns = _coredns_from(d.get("coredns"))
    st.last_ip = dict(d.get("last_ip", {}))
    st.last_ip6 = dict(d.get("last_ip6", {}))
    st.links = {n: model.Impairment(**i) for n, i in d.get("links", {}).items()}
    st.generation = d.get("generation", 0)
    st.created = dict(d.get("created", {}))
    st.manifests = dict(d.get("manifests", {}))
    return st


def to_json(st: ClusterState) -> str:
    return dumps(to_dict(st))


def dumps(d: dict[str, Any]) -> str:
    """The state file's text for `to_dict`'s output: compact (an indented dump goes through
    json's pure-Python encoder: 0.16 s vs 0.03 s at 2,000 pods, paid on every publish)."""
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def from_json(text: str) -> ClusterState:
    return from_dict(json.loads(text))


def cluster_from_json(text: str) -> ClusterSpec:
    """The state file's Cluster document alone."""
    return _cluster_from(json.loads(text)["cluster"])


def _loc(d: dict | None) -> model.Loc | None:
    return model.Loc(**d) if d else None


def _cluster_from(d: dict) -> ClusterSpec:
    nodes = tuple(NodeSpec(**{**n, "loc": _loc(n.get("loc")),
                              "impairment": model.Impairment(**n["impairment"])
                              if n.get("impairment") else None}) for n in d["nodes"])
    extra = {"families": tuple(d["families"])} if "families" in d else {}
    return ClusterSpec(**{**d, "nodes": nodes, "dns_upstreams": tuple(d["dns_upstreams"]),
                          "loc": _loc(d.get("loc")), **extra})


def _pod_from(d: dict) -> Pod:
    containers = tuple(
        Container(**{**c, "command": tuple(c["command"]), "args": tuple(c["args"]),
                     "ports": tuple(ContainerPort(**p) for p in c["ports"]),
                     "env": tuple(tuple(e) for e in c["env"]),
                     "readiness_probe": _probe_from(c.get("readiness_probe")),
                     "liveness_probe": _probe_from(c.get("liveness_probe")),
                     "startup_probe": _probe_from(c.get("startup_probe"))})
        for c in d["containers"])
    return Pod(**{**d, "containers": containers, "loc": _loc(d.get("loc"))})


def _probe_from(d: dict | None) -> model.Probe | None:
    return model.Probe(**{**d, "command": tuple(d["command"])}) if d else None


def _service_from(d: dict) -> Service:
    ports = tuple(model.ServicePort(**p) for p in d["ports"])
    return Service(**{**d, "ports": ports, "loc": _loc(d.get("loc")),
                      "cluster_ips": tuple(d.get("cluster_ips", ())),
                      "ip_families": tuple(d.get("ip_families", ()))})
