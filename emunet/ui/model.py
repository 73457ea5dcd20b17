"""The JSON the web page draws: the cluster map, flow rows and a trace's journey. Pure.

Everything is built from what `emunet get`, `observe` and `trace` read: the cluster state
(`state.cluster.ClusterState`), the agents' flow records rendered as Hubble flows
(`observe.hubble`, filtered with `observe.filters`, the same flag names as `emunet observe`)
and the trace report of `cluster.tracer` (hops from `observe.journey`). No second source of
truth: the page only lays these out.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from emunet.model.cilium import NS_LABEL
from emunet.observe import filters, hubble
from emunet.observe.journey import hops as journey_hops
from emunet.state.cluster import ClusterState
from emunet.state.podphase import pod_status_word

# the query parameters of /api/flows: `emunet observe`'s flags (filters.FlowFilter.from_args)
FILTER_KEYS = ("namespace", "pod", "from_pod", "to_pod", "label", "verdict", "protocol",
               "port", "type", "since")
_MULTI = {"pod", "from_pod", "to_pod", "label", "verdict", "protocol", "port", "type"}


def cluster_map(state: ClusterState, stopped: Iterable[str] = ()) -> dict[str, Any]:
    """Nodes on the underlay, their pods, Services with their endpoints, and policies with the
    pods they select."""
    stopped = set(stopped)
    policies = _policies(state)
    by_pod: dict[str, list[str]] = {}
    for pol in policies:
        for key in pol["selects"]:
            by_pod.setdefault(key, []).append(pol["ref"])
    c = state.cluster
    nodes = [{"name": n.name, "underlay_ip": n.underlay_ip, "pod_cidr": n.pod_cidr,
              "gateway_ip": n.gateway_ip, "stopped": n.name in stopped} for n in state.nodes]
    pods = []
    for ps in sorted(state.pods.values(), key=lambda p: (p.node, p.pod.namespace, p.pod.name)):
        ref = f"{ps.pod.namespace}/{ps.pod.name}"
        pods.append({"ref": ref, "namespace": ps.pod.namespace, "name": ps.pod.name,
                     "node": ps.node, "ip": ps.ip, "labels": dict(ps.pod.labels),
                     "ready": ps.ready, "status": pod_status_word(ps),
                     "terminating": ps.terminating, "owner": ps.pod.owner,
                     "policies": by_pod.get(ref, [])})
    services = []
    for key, ss in sorted(state.services.items()):
        svc = ss.service
        eps: dict[tuple[str, int], dict[str, Any]] = {}
        for port_eps in state.endpoints(key).values():
            for e in port_eps:
                eps.setdefault((e.ip, e.port), {
                    "ip": e.ip, "port": e.port, "ready": e.ready, "node": e.node,
                    "pod": f"{e.pod[0]}/{e.pod[1]}" if e.pod else None})
        services.append({"ref": f"{key[0]}/{key[1]}", "namespace": key[0], "name": key[1],
                         "type": svc.type, "cluster_ip": ss.cluster_ip,
                         "ports": [{"port": p.port, "target_port": p.target_port,
                                    "protocol": p.protocol, "node_port": p.node_port}
                                   for p in svc.ports],
                         "endpoints": sorted(eps.values(), key=lambda e: (e["ip"], e["port"]))})
    return {"generation": state.generation,
            "cluster": {"name": c.name, "cluster_cidr": c.cluster_cidr,
                        "service_cidr": c.service_cidr, "underlay_cidr": c.underlay_cidr,
                        "cluster_dns": c.cluster_dns, "vxlan_vni": c.vxlan_vni,
                        "vxlan_port": c.vxlan_port},
            "nodes": nodes, "pods": pods, "services": services, "policies": policies}


def _policies(state: ClusterState) -> list[dict[str, Any]]:
    out = []
    for key, pol in sorted(state.policies.items()):
        sel = [f"{ps.pod.namespace}/{ps.pod.name}" for ps in state.pods.values()
               if ps.pod.namespace == pol.namespace and pol.pod_selector.matches(ps.pod.labels)]
        out.append({"ref": f"{key[0]}/{key[1]}", "kind": "NetworkPolicy",
                    "types": list(pol.policy_types), "selects": sorted(sel)})
    for key, cnp in sorted(state.cilium_policies.items()):
        sel = [f"{ps.pod.namespace}/{ps.pod.name}" for ps in state.pods.values()
               if cnp.endpoint_selector.matches({**ps.pod.labels, NS_LABEL: ps.pod.namespace})]
        types = [t for t, r in (("Ingress", cnp.ingress), ("Egress", cnp.egress)) if r is not None]
        out.append({"ref": f"{key[0]}/{key[1]}", "kind": "CiliumNetworkPolicy",
                    "types": types, "selects": sorted(sel)})
    return out


# ---- flows ---------------------------------------------------------------------------------

def flow_filter(query: dict[str, list[str]]) -> filters.FlowFilter:
    """A FlowFilter from query parameters named as `emunet observe`'s flags (`from_pod` or
    `from-pod`; repeatable ones may repeat). Bad values raise filters.FilterError."""
    vals: dict[str, Any] = {k: None for k in FILTER_KEYS}
    for raw, values in query.items():
        k = raw.replace("-", "_")
        values = [v for v in values if v != ""]
        if k not in vals or not values:
            continue
        if k in _MULTI:
            if k == "port":
                try:
                    values = [int(v) for v in values]
                except ValueError:
                    raise filters.FilterError(f"port {values!r}: use a number") from None
            vals[k] = values
        else:
            vals[k] = values[-1]
    return filters.FlowFilter.from_args(SimpleNamespace(**vals))


def _policy_names(f: dict[str, Any]) -> list[str]:
    names = []
    for k in ("egress_denied_by", "ingress_denied_by", "egress_allowed_by",
              "ingress_allowed_by"):
        for p in f.get(k, []):
            ns = p.get("namespace")
            names.append(f"{ns}/{p.get('name')}" if ns else str(p.get("name")))
    return names


def flow_row(f: dict[str, Any]) -> dict[str, Any]:
    """One Hubble flow as the table's row (with the flow itself, for the JSON download)."""
    src, dst = _ends(f)
    l4 = f.get("l4") or {}
    proto = next(iter(l4), "") if l4 else ""
    if "l7" in f:
        proto = "DNS" if "dns" in f["l7"] else "HTTP"
    dnat = f.get("dnat") or {}
    return {"time": f.get("time"), "node": f.get("node_name"), "source": src,
            "destination": dst,
            "source_ns": f.get("source", {}).get("namespace"),
            "destination_ns": f.get("destination", {}).get("namespace"),
            "source_pod": _pod_ref(f.get("source", {})),
            "destination_pod": _pod_ref(f.get("destination", {})),
            "verdict": f.get("verdict"), "reason": f.get("drop_reason_desc"),
            "policy": _policy_names(f), "backend": dnat.get("backend"),
            "service": dnat.get("service"), "protocol": proto, "summary": f.get("Summary"),
            "reply": bool(f.get("is_reply")), "traced": bool(f.get("emunet_traced")),
            "flow": f}


def _pod_ref(ep: dict[str, Any]) -> str | None:
    return f"{ep['namespace']}/{ep['pod_name']}" if ep.get("pod_name") else None


def _ends(f: dict[str, Any]) -> tuple[str, str]:
    ip = f.get("IP") or {}
    l4 = next(iter((f.get("l4") or {}).values()), {})

    def name(ep: dict[str, Any], addr: str | None, port: Any) -> str:
        who = _pod_ref(ep) or addr or "?"
        return f"{who}:{port}" if port is not None else who
    return (name(f.get("source", {}), ip.get("source"), l4.get("source_port")),
            name(f.get("destination", {}), ip.get("destination"), l4.get("destination_port")))


def flow_rows(records: Iterable[dict[str, Any]], d: hubble.Directory,
              flt: filters.FlowFilter, last: int | None = None) -> list[dict[str, Any]]:
    """The rows of the records' flows that pass the filter (the last `last` of them: only
    records from the end are rendered until there are that many, so a page's first load does
    not render all ten thousand kept records to show two hundred)."""
    if not last:
        return [flow_row(f) for r in records for f in hubble.flows(r, d) if flt.match(f)]
    found: list[list[dict[str, Any]]] = []
    n = 0
    for r in reversed(records if isinstance(records, list) else list(records)):
        fs = [flow_row(f) for f in hubble.flows(r, d) if flt.match(f)]
        if fs:
            found.append(fs)
            n += len(fs)
            if n >= last:
                break
    rows = [row for fs in reversed(found) for row in fs]
    return rows[-last:]


# ---- the journey ---------------------------------------------------------------------------

# The headers a hop shows: the packet as it came into the node's datapath, or from the DNAT on
# as it went out (addresses translated; MACs and TTL as sent, since only in and out are kept).
_OUT_STEPS = {"route", "deliver", "encap", "reverse-nat", "answer"}


def _hop_headers(step: str, rec: dict[str, Any]) -> dict[str, Any]:
    pkt, out = rec.get("pkt") or {}, rec.get("pkt_out") or {}
    if step == "encap":
        return {"inner": out or pkt, "outer": rec.get("out_outer")}
    if step in ("underlay", "decap"):
        return {"inner": pkt, "outer": rec.get("outer")}
    if step == "dnat" or (step == "policy" and rec.get("backend") and rec.get("ct") == "new"):
        return {"inner": out or pkt}  # the policy judges the backend, after the DNAT
    if step in _OUT_STEPS:
        return {"inner": out or pkt}
    return {"inner": pkt}


def journey(report: dict[str, Any], d: hubble.Directory) -> dict[str, Any]:
    """A trace report (cluster.tracer.run with keep_records) as the page's path: the first
    request and the first reply (as `emunet trace` prints them), each hop with its OSI layer,
    node, text (observe.journey, as `emunet trace`) and the headers it had there; the rest of
    the flow counted."""
    pkts = report.get("packets", [])
    shown = pkts[:1]
    reply = next((p for p in pkts if p.get("reply")), None)
    if reply is not None and shown and reply is not shown[0]:
        shown.append(reply)
    paths = []
    n = 0
    for p in shown:
        hops = []
        for rec in p.get("records", []):
            for h in journey_hops(rec, d):
                n += 1
                hops.append({**h, "n": n, "headers": _hop_headers(h["step"], rec)})
        paths.append({"reply": bool(p.get("reply")), "hops": hops,
                      "dropped": bool(hops) and hops[-1]["step"] == "drop"})
    return {"pod": report.get("pod"), "pod_ip": report.get("pod_ip"), "node": report.get("node"),
            "dest": report.get("dest"),
            "dns": [{k: v for k, v in q.items() if k != "packets"} for q in report.get("dns", [])],
            "dns_note": report.get("dns_note"), "probe": report.get("probe"),
            "result": report.get("result"), "paths": paths, "more_packets": len(pkts) - len(shown)}
