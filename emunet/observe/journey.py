"""A traced packet's records -> its journey, hop by hop, each named by its OSI layer. Pure.

One record is one node's datapath handling one packet (see `record`); a packet that crosses
nodes has two (the client's node, then the peer's after the underlay). `hops` expands a record
into the steps the story tells: the pod's eth0 and its veth peer, conntrack, Service DNAT with
the chosen backend, the policy verdict, the routing decision, VXLAN encapsulation, the underlay,
decapsulation, delivery, the reverse NAT of replies, or the exact step where it was dropped.
"""

from __future__ import annotations

from typing import Any

from emunet.observe.hubble import DROP_REASONS, Directory, summary

# Where in the story (and the OSI model) each drop reason stops a packet
DROP_STAGE = {
    "INVALID_SOURCE": ("L2/L3", "anti-spoofing at the veth"),
    "INVALID_PACKET": ("L2/L3", "header check"),
    "UNSUPPORTED_L3": ("L3", "header check"),
    "UNSUPPORTED_L4": ("L4", "Service load balancer"),
    "NO_ROUTE": ("L3", "routing"),
    "NO_ENDPOINTS": ("L4", "Service load balancer"),
    "TTL_EXCEEDED": ("L3", "routing"),
    "INVALID_VNI": ("L2 over UDP", "VXLAN decapsulation"),
    "CT_INVALID": ("L4", "conntrack"),
    "FRAG_NOT_SUPPORTED": ("L3", "Service load balancer"),
    "FRAG_NEEDED": ("L3", "routing (MTU)"),
    "POLICY_DENIED": ("L3/L4", "NetworkPolicy"),
}


def _ep(d: Directory, ip: str | None) -> str:
    e = d.endpoint(ip)
    if e.get("pod_name"):
        return f"{e['namespace']}/{e['pod_name']}"
    svc = d.service(ip)
    if svc:
        return f"Service {svc['namespace']}/{svc['name']}"
    return "the node" if e.get("identity") == 1 else (ip or "?")


def _addr(h: dict[str, Any], side: str) -> str:
    ip = h.get(side)
    port = h.get("sport" if side == "src" else "dport")
    if port is not None and ":" in str(ip):
        return f"[{ip}]:{port}"  # an IPv6 address with a port (RFC 3986 §3.2.2)
    return f"{ip}:{port}" if port is not None else str(ip)


def _ttl(h: dict[str, Any]) -> str:
    """IPv4's TTL, IPv6's hop limit (RFC 8200 §3) by name."""
    return "hop limit" if h.get("ipv") == 6 else "TTL"


def _hop(layer: str, node: str, step: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"layer": layer, "node": node, "step": step, "text": text, **extra}


def hops(rec: dict[str, Any], d: Directory) -> list[dict[str, Any]]:
    """The steps of one record, in datapath order."""
    node = rec.get("node", "?")
    pkt = rec.get("pkt", {})
    out_pkt = rec.get("pkt_out") or {}
    h: list[dict[str, Any]] = []
    what = summary(pkt).replace("TCP Flags:", "TCP").replace(",", "")
    if rec.get("from") == "endpoint":
        h.append(_hop("L7->L4", node, "send",
                      f"{_ep(d, pkt.get('src'))} sends {what} {_addr(pkt, 'src')} -> "
                      f"{_addr(pkt, 'dst')} ({_ttl(pkt)} {pkt.get('ttl')})"))
        h.append(_hop("L2", node, "veth",
                      f"leaves the pod's eth0 (MAC {pkt.get('smac')}) and comes out of its veth "
                      f"peer {rec.get('in_port')} in {node}'s namespace, where the agent reads "
                      "it"))
    elif rec.get("from") == "network":  # a node port's client outside the cluster
        h.append(_hop("L1/L2", node, "underlay",
                      f"{_addr(pkt, 'src')} -> {_addr(pkt, 'dst')} arrives on {node}'s eth0 "
                      "from outside the cluster; the agent's node port filter takes it"))
    else:
        o = rec.get("outer", {})
        h.append(_hop("L1/L2", node, "underlay",
                      f"crosses the underlay: UDP {o.get('src')} -> {o.get('dst')}, arrives on "
                      f"{node}'s eth0"))
        h.append(_hop("L2 over UDP", node, "decap",
                      f"VXLAN decapsulation: VNI {o.get('vni')} checked, inner frame "
                      f"{_addr(pkt, 'src')} -> {_addr(pkt, 'dst')} unwrapped"))
    ct = rec.get("ct")
    ct_text = {"new": "new connection: conntrack entry created",
               "established": "established connection: conntrack hit, precomputed rewrite",
               "reply": "reply of a tracked connection: conntrack hit (no policy check)",
               "untracked": "not tracked (no connection state for this packet)"}
    if ct == "untracked" and rec.get("verdict") == "DROPPED" and pkt.get("proto") != "ICMP":
        ct_text["untracked"] = "no conntrack entry: a new connection is checked first"
    h.append(_hop("L4", node, "conntrack", ct_text.get(ct or "", str(ct))))
    if rec.get("backend") and ct == "new" and out_pkt.get("dst") != pkt.get("dst"):
        h.append(_hop("L3/L4", node, "dnat",
                      f"Service {rec.get('service')}: DNAT {_addr(pkt, 'dst')} -> backend "
                      f"{_addr(out_pkt, 'dst')} ({_ep(d, out_pkt.get('dst'))}), chosen at "
                      "random among ready endpoints", backend=rec["backend"]))
    for p in rec.get("policy", []):
        if p.get("allowed"):
            text = (f"{p.get('direction')} policy: allowed by {p.get('kind')} "
                    f"{p.get('policy')} rule {p.get('rule')}")
        else:
            text = (f"{p.get('direction')} policy: DENIED, {p.get('pod')} is isolated by "
                    f"{', '.join(p.get('policies', []))} and no rule allows this")
        h.append(_hop("L3/L4", node, "policy", text, policy=p))
    if ct == "new" and not rec.get("policy"):
        h.append(_hop("L3/L4", node, "policy",
                      f"policy: no NetworkPolicy isolates this traffic on {node}, so it is "
                      "allowed (the Kubernetes default)"))
    if ct == "reply" and out_pkt and out_pkt.get("src") != pkt.get("src"):
        h.append(_hop("L3/L4", node, "reverse-nat",
                      f"reverse NAT: source {_addr(pkt, 'src')} -> {_addr(out_pkt, 'src')} (the "
                      "client sees the address it connected to)"))
    if rec.get("verdict") == "DROPPED":
        drop = rec.get("drop", {})
        layer, stage = DROP_STAGE.get(drop.get("reason", ""), ("?", "datapath"))
        name = DROP_REASONS.get(drop.get("reason", ""), (drop.get("reason"), 0))[0]
        text = f"DROPPED at {stage}: {name} ({drop.get('desc')}): {drop.get('detail')}"
        back = rec.get("reply_to_sender")
        if back:
            text += f"; the node answers the sender with {summary(back['pkt'])}"
        h.append(_hop(layer, node, "drop", text, reason=drop.get("reason"),
                      hubble_reason=name))
        return h
    to = rec.get("to")
    if to == "endpoint":
        via = "routed" if out_pkt.get("ttl") != pkt.get("ttl") else "bridged"
        h.append(_hop("L3", node, "route",
                      f"routing: {out_pkt.get('dst')} is a pod on {node} ({via}, {_ttl(pkt)} "
                      f"{pkt.get('ttl')} -> {out_pkt.get('ttl')})"))
        h.append(_hop("L2", node, "deliver",
                      f"delivered: written to veth {rec.get('out_port')}, arrives on "
                      f"{_ep(d, out_pkt.get('dst'))}'s eth0 as {_addr(out_pkt, 'src')} -> "
                      f"{_addr(out_pkt, 'dst')}"))
    elif to == "overlay":
        o = rec.get("out_outer", {})
        peer = next((n.name for n in d.state.nodes
                     if o.get("dst") in (n.underlay_ip, n.underlay_ip6)), "?")
        h.append(_hop("L3", node, "route",
                      f"routing: {out_pkt.get('dst')} is in {peer}'s pod subnet -> the VXLAN "
                      f"overlay ({_ttl(pkt)} {pkt.get('ttl')} -> {out_pkt.get('ttl')})"))
        h.append(_hop("L2 over UDP", node, "encap",
                      f"VXLAN encapsulation (RFC 7348): outer IP {o.get('src')} -> {o.get('dst')},"
                      f" UDP port {o.get('dport')}, VNI {o.get('vni')}; inner MACs are the "
                      "nodes' VTEPs", outer=o))
    elif to == "sender":
        back = rec.get("reply_to_sender", {})
        h.append(_hop("L3", node, "answer",
                      f"answered by {node} itself: {summary(back.get('pkt', {}))}"))
    return h


def packets(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Group one flow's records (time order) into packets: a packet starts where it leaves a
    pod; a record from the overlay continues the packet that went to the overlay before it."""
    groups: list[list[dict[str, Any]]] = []
    waiting: list[list[dict[str, Any]]] = []
    for r in records:
        if r.get("from") == "overlay" and waiting:
            g = waiting.pop(0)
            g.append(r)
            continue
        g = [r]
        groups.append(g)
        if r.get("to") == "overlay":
            waiting.append(g)
    return groups
