"""Flow records -> Hubble-style flows (`hubble observe -o json` field names). Pure.

Field names follow cilium/cilium api/v1/flow/flow.proto as `hubble observe -o json` prints them
(protojson: `IP`, `l4`, `Type`, `Summary`, `is_reply`, `trace_observation_point`, ...), so tools
written for Hubble read emunet's flows. Names (pods, labels, identities, Services) are resolved
from the cluster state when the flow is shown. What Hubble lacks, emunet adds under its own keys:
`dnat` (the Service, the original destination and the chosen backend), `reverse_nat`, `outer`
(the VXLAN header on the underlay) and the policy that allowed or denied the flow in
`egress_allowed_by` / `ingress_denied_by` / ... (the names newer Hubble versions use).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from emunet.state.cluster import ClusterState

# emunet DropReason name -> (Hubble DropReason enum name, number) from flow.proto
DROP_REASONS = {
    "INVALID_SOURCE": ("INVALID_SOURCE_IP", 132),
    "INVALID_PACKET": ("INVALID_PACKET_DROPPED", 134),
    "UNSUPPORTED_L3": ("UNSUPPORTED_L3_PROTOCOL", 139),
    "UNSUPPORTED_L4": ("UNKNOWN_L4_PROTOCOL", 142),
    "NO_ROUTE": ("FIB_LOOKUP_FAILED", 169),
    "NO_ENDPOINTS": ("SERVICE_BACKEND_NOT_FOUND", 158),
    "TTL_EXCEEDED": ("TTL_EXCEEDED", 196),
    "INVALID_VNI": ("INVALID_VNI", 183),
    "CT_INVALID": ("CT_MAP_INSERTION_FAILED", 155),
    "FRAG_NOT_SUPPORTED": ("IP_FRAGMENTATION_NOT_SUPPORTED", 157),
    # flow.proto names no such reason (Cilium's DROP_FRAG_NEEDED is not among them)
    "FRAG_NEEDED": ("DROP_REASON_UNKNOWN", 0),
    "POLICY_DENIED": ("POLICY_DENIED", 133),
}
# Cilium monitor message types (pkg/monitor/api/types.go)
MSG_DROP, MSG_TRACE, MSG_POLICY_VERDICT, MSG_ACCESS_LOG = 1, 4, 5, 129
# Cilium trace sub-types = observation points (pkg/monitor/api/datapath_trace.go)
TRACE_SUBTYPES = {"TO_ENDPOINT": 0, "TO_OVERLAY": 4, "FROM_ENDPOINT": 5, "FROM_OVERLAY": 9,
                  "FROM_NETWORK": 10, "TO_NETWORK": 11}
ICMP_NAMES = {0: "EchoReply", 3: "DestinationUnreachable", 8: "EchoRequest",
              11: "TimeExceeded"}
ICMP6_NAMES = {1: "DestinationUnreachable", 2: "PacketTooBig", 3: "TimeExceeded",
               128: "EchoRequest", 129: "EchoReply", 133: "RouterSolicitation",
               135: "NeighborSolicitation", 136: "NeighborAdvertisement"}
HOST, WORLD = 1, 2  # Cilium reserved identities


def hostport(ip: Any, port: Any) -> str:
    """`ip:port`, an IPv6 address in brackets (RFC 3986 §3.2.2), as the backend is shown."""
    return f"[{ip}]:{port}" if ":" in str(ip) else f"{ip}:{port}"


class Directory:
    """Who an IP is, from the cluster state: endpoints, Services, identities."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.pods = {p.ip: p for p in state.pods.values()}
        self.services = {s.cluster_ip: s for s in state.services.values() if s.cluster_ip}
        self.hosts = {n.gateway_ip for n in state.nodes} | {n.underlay_ip for n in state.nodes}
        # dual-stack: a pod, a Service and a node by either address (text as records write it)
        self.pods.update({p.ip6: p for p in state.pods.values() if p.ip6})
        self.services.update({s.cluster_ip6: s for s in state.services.values()
                              if s.cluster_ip6})
        self.hosts |= {a for n in state.nodes for a in (n.gateway_ip6, n.underlay_ip6) if a}
        self.identities = _identities(state)

    def endpoint(self, ip: str | None) -> dict[str, Any]:
        p = self.pods.get(ip or "")
        if p is not None:
            ns = p.pod.namespace
            labels = sorted(f"k8s:{k}={v}" for k, v in p.pod.labels.items())
            labels.append(f"k8s:io.kubernetes.pod.namespace={ns}")
            return {"ID": int.from_bytes(bytes(int(x) for x in p.ip.split(".")[2:]), "big"),
                    "identity": self.identities.get(p.key, 0), "namespace": ns,
                    "labels": labels, "pod_name": p.pod.name}
        if ip in self.hosts:
            return {"identity": HOST, "labels": ["reserved:host"]}
        if ip in self.services:
            return {"identity": WORLD, "labels": ["reserved:world"]}
        return {"identity": WORLD, "labels": ["reserved:world"]}

    def service(self, ip: str | None) -> dict[str, str] | None:
        s = self.services.get(ip or "")
        return {"name": s.key[1], "namespace": s.key[0]} if s is not None else None


def _identities(state: ClusterState) -> dict[tuple[str, str], int]:
    """Pod -> numeric identity, the same numbers the policy engine uses (when installed)."""
    try:
        from emunet.policy.compile import pod_identities
    except ImportError:
        return {}
    try:
        return pod_identities(state)
    except (KeyError, AttributeError, TypeError):
        return {}


def iso_time(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def _l4(h: dict[str, Any]) -> dict[str, Any] | None:
    proto = h.get("proto")
    if proto in ("TCP", "UDP"):
        d: dict[str, Any] = {"source_port": h.get("sport"), "destination_port": h.get("dport")}
        if proto == "TCP":
            d["flags"] = {f: True for f in h.get("flags", [])}
        return {proto: d}
    if proto == "ICMP" and "icmp" in h:
        return {"ICMPv4": {"type": h["icmp"][0], "code": h["icmp"][1]}}
    if proto == "ICMPv6" and "icmp" in h:
        return {"ICMPv6": {"type": h["icmp"][0], "code": h["icmp"][1]}}
    return None


def summary(h: dict[str, Any]) -> str:
    proto = h.get("proto")
    if proto == "TCP":
        return "TCP Flags: " + ", ".join(h.get("flags", []))
    if proto == "ICMP" and "icmp" in h:
        return "ICMPv4 " + ICMP_NAMES.get(h["icmp"][0], f"type {h['icmp'][0]}")
    if proto == "ICMPv6" and "icmp" in h:
        return "ICMPv6 " + ICMP6_NAMES.get(h["icmp"][0], f"type {h['icmp'][0]}")
    if h.get("arp"):
        return "ARP"
    return proto or "Ethernet"


def _policy_refs(p: dict[str, Any]) -> list[dict[str, Any]]:
    names = [p["policy"]] if p.get("policy") else p.get("policies", [])
    out = []
    for n in names:
        ns, _, name = n.rpartition("/")
        ref = {"name": name, "namespace": ns, "kind": p.get("kind", "NetworkPolicy")}
        if p.get("policy") == n and p.get("rule") is not None:
            ref["rule"] = p["rule"]
        out.append(ref)
    return out


def flows(rec: dict[str, Any], d: Directory) -> list[dict[str, Any]]:
    """The Hubble flows for one record: a policy-verdict flow (when the datapath decided one),
    then the trace (FORWARDED) or drop (DROPPED) flow. L7 records give one L7 flow."""
    if str(rec.get("type", "")).startswith("l7-"):
        return [l7_flow(rec, d)]
    pkt = rec.get("pkt", {})
    shown = rec.get("pkt_out") or pkt
    reply = rec.get("ct") == "reply"
    egress = rec.get("from") == "endpoint"
    f: dict[str, Any] = {
        "time": iso_time(rec.get("time", 0.0)),
        "verdict": rec.get("verdict", "FORWARDED"),
        "ethernet": {"source": shown.get("smac"), "destination": shown.get("dmac")},
        "IP": {"source": shown.get("src"), "destination": shown.get("dst"),
               "ipVersion": "IPv6" if shown.get("ipv") == 6 else "IPv4"}
        if "src" in shown else None,
        "l4": _l4(shown),
        "source": d.endpoint(shown.get("src")),
        "destination": d.endpoint(shown.get("dst")),
        "Type": "L3_L4",
        "node_name": rec.get("node"),
        "is_reply": reply,
        "traffic_direction": "EGRESS" if egress else "INGRESS",
        "Summary": summary(shown),
    }
    if rec.get("in_port"):
        f["interface"] = {"name": rec["in_port"]}
    svc = d.service(pkt.get("dst")) or (d.service(shown.get("src")) if reply else None)
    if svc:
        f["destination_service" if not reply else "source_service"] = svc
    if rec.get("backend"):
        f["dnat"] = {"service": rec.get("service"), "backend": rec["backend"],
                     "original_destination": hostport(pkt.get("dst"), pkt.get("dport"))}
    if reply and pkt.get("src") != shown.get("src"):
        f["reverse_nat"] = {"from": hostport(pkt.get("src"), pkt.get("sport")),
                            "to": hostport(shown.get("src"), shown.get("sport"))}
    if rec.get("out_outer"):
        f["outer"] = rec["out_outer"]
    elif rec.get("outer"):
        f["outer"] = rec["outer"]
    if rec.get("traced"):
        f["emunet_traced"] = True
    out = []
    for p in rec.get("policy", []):
        key = f"{p.get('direction', 'ingress')}_{'allowed' if p.get('allowed') else 'denied'}_by"
        f[key] = _policy_refs(p)
        pv = {**f, "verdict": "FORWARDED" if p.get("allowed") else "DROPPED",
              "event_type": {"type": MSG_POLICY_VERDICT, "sub_type": 0},
              "traffic_direction": p.get("direction", "").upper() or f["traffic_direction"],
              "Summary": p.get("summary", f["Summary"])}
        if not p.get("allowed"):
            pv.update(drop_reason=133, drop_reason_desc="POLICY_DENIED")
        out.append(pv)
    if rec.get("verdict") == "DROPPED":
        drop = rec.get("drop", {})
        name, code = DROP_REASONS.get(drop.get("reason", ""), (drop.get("reason", ""), 0))
        f.update(drop_reason=code, drop_reason_desc=name,
                 event_type={"type": MSG_DROP, "sub_type": code},
                 trace_observation_point=_from_point(rec),
                 emunet_drop_detail=drop.get("detail", ""))
        if drop.get("reason") == "POLICY_DENIED" and not rec.get("policy"):
            f[("egress" if egress else "ingress") + "_denied_by"] = [
                {"name": drop.get("detail", "")}]
    else:
        point = {"endpoint": "TO_ENDPOINT", "overlay": "TO_OVERLAY"}.get(
            rec.get("to", ""), _from_point(rec))
        if point == "TO_ENDPOINT" and rec.get("out_port") == "eth0":
            point = "TO_NETWORK"  # a node port's reply to its client outside
        f.update(trace_observation_point=point,
                 event_type={"type": MSG_TRACE, "sub_type": TRACE_SUBTYPES.get(point, 0)})
    out.append({k: v for k, v in f.items() if v is not None})
    return out


def _from_point(rec: dict[str, Any]) -> str:
    return {"endpoint": "FROM_ENDPOINT", "network": "FROM_NETWORK"}.get(
        rec.get("from", ""), "FROM_OVERLAY")


def l7_flow(rec: dict[str, Any], d: Directory) -> dict[str, Any]:
    """An L7 record (DNS responder, HTTP proxy) as a Hubble L7 flow."""
    src, dst = rec.get("src", {}), rec.get("dst", {})
    kind = rec.get("type")
    l7: dict[str, Any] = {"type": "RESPONSE" if rec.get("response", True) else "REQUEST"}
    if rec.get("latency_ms") is not None:
        l7["latency_ns"] = int(rec["latency_ms"] * 1e6)
    proto = rec.get("proto") or ("UDP" if kind == "l7-dns" else "TCP")
    if kind == "l7-dns":
        l7["dns"], text = _dns(rec, l7["type"] == "RESPONSE")
    else:
        l7["http"] = {"code": rec.get("status") or 0, "method": rec.get("method", ""),
                      "url": f"http://{rec.get('host', '')}{rec.get('path', '')}",
                      "protocol": "HTTP/1.1"}
        text = f"HTTP/1.1 {rec.get('status') or ''} {rec.get('method', '')} " \
               f"{rec.get('path', '')}"
    verdict = rec.get("verdict", "FORWARDED")
    f: dict[str, Any] = {
        "time": iso_time(rec.get("time", 0.0)),
        "verdict": "DROPPED" if verdict == "DENIED" else verdict,
        "IP": {"source": src.get("ip"), "destination": dst.get("ip"),
               "ipVersion": "IPv6" if ":" in str(src.get("ip") or "") else "IPv4"},
        "l4": {proto: {"source_port": src.get("port"), "destination_port": dst.get("port")}},
        "source": _l7_endpoint(d, src),
        "destination": _l7_endpoint(d, dst),
        "Type": "L7",
        "node_name": rec.get("node"),
        "l7": l7,
        "event_type": {"type": MSG_ACCESS_LOG},
        "traffic_direction": "INGRESS" if kind == "l7-http" else "EGRESS",
        "is_reply": l7["type"] == "RESPONSE",
        "Summary": text,
    }
    if rec.get("policy"):
        f["ingress_allowed_by"] = [{"name": rec["policy"].rpartition("/")[2],
                                    "namespace": rec["policy"].rpartition("/")[0],
                                    "kind": "CiliumNetworkPolicy", "rule": rec.get("rule")}]
    return f


def _l7_endpoint(d: Directory, side: dict[str, Any]) -> dict[str, Any]:
    """The endpoint from the state; a pod gone since keeps the name its record carries."""
    ep = d.endpoint(side.get("ip"))
    if "pod_name" not in ep and side.get("pod"):
        ep["namespace"], _, ep["pod_name"] = side["pod"].partition("/")
    return ep


def _dns(rec: dict[str, Any], response: bool) -> tuple[dict[str, Any], str]:
    """flow.proto's `DNS` message and Hubble's summary (pkg/hubble/parser/seven/dns.go)."""
    query, qtype = rec.get("query", ""), rec.get("qtype", "")
    dns: dict[str, Any] = {"query": query, "qtypes": [qtype] if qtype else [],
                           "observation_source": "emunet-dns"}
    if not response:
        return dns, f"DNS Query {query} {qtype}"
    dns.update(ips=rec.get("ips", []), ttl=rec.get("ttl", 0), cnames=rec.get("cnames", []),
               rcode=rec.get("rcode_num", 0), rrtypes=rec.get("rrtypes", []))
    if dns["rcode"]:
        said = f"RCode: {rec.get('rcode', dns['rcode'])}"
    else:
        said = '"' + ",".join(dns["ips"] + dns["cnames"]) + '"'
    return dns, f"DNS Answer {said} TTL: {dns['ttl']} (Query {query} {qtype})"
