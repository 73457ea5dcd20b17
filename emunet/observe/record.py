"""Kept datapath events -> neutral flow records (plain dicts, one JSON line each). Pure.

Runs in the agent after a batch, never per packet. A record says what one node's datapath did
with one packet: where it came in, the headers it had, the conntrack state, the translation
(Service DNAT with the chosen backend, reverse NAT on replies), the policy verdict when the
datapath reports one, and where it went out (a pod veth, the overlay with the outer VXLAN
header, or back to the sender) or why it was dropped. `hubble` renders records for users.

Record fields: time, node, from ("endpoint"|"overlay"), in_port | outer, pkt (headers in),
ct ("new"|"established"|"reply"|"untracked"), verdict ("FORWARDED"|"DROPPED"), drop, service,
backend, nat_out (headers out when translated), policy [..], to, out_port | out_outer, traced.
"""

from __future__ import annotations

from typing import Any

from emunet.datapath import Drop, Encap, Send
from emunet.observe.hook import FROM_OVERLAY, TRACE_TOS, Event, flow_key
from emunet.packets import ETH_LEN, PROTO_ICMP, PROTO_TCP, PROTO_UDP, VXLAN, ip_str

PROTO_NAMES = {PROTO_TCP: "TCP", PROTO_UDP: "UDP", PROTO_ICMP: "ICMP"}
TCP_FLAG_NAMES = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")


def headers(frame: bytes, off: int = 0) -> dict[str, Any]:
    """The L2-L4 headers of the Ethernet frame at `off`, as JSON-ready values."""
    h: dict[str, Any] = {"smac": frame[off + 6:off + 12].hex(":"),
                         "dmac": frame[off:off + 6].hex(":"), "len": len(frame) - off}
    ip = off + ETH_LEN
    if frame[off + 12:off + 14] == b"\x08\x06":
        h["arp"] = True
        return h
    if frame[off + 12:off + 14] != b"\x08\x00" or len(frame) < ip + 20:
        h["ethertype"] = frame[off + 12:off + 14].hex()
        return h
    proto = frame[ip + 9]
    h.update(src=ip_str(frame[ip + 12:ip + 16]), dst=ip_str(frame[ip + 16:ip + 20]),
             proto=PROTO_NAMES.get(proto, str(proto)), ttl=frame[ip + 8], tos=frame[ip + 1])
    l4 = ip + (frame[ip] & 0xF) * 4
    if proto in (PROTO_TCP, PROTO_UDP) and len(frame) >= l4 + 4:
        h["sport"] = int.from_bytes(frame[l4:l4 + 2], "big")
        h["dport"] = int.from_bytes(frame[l4 + 2:l4 + 4], "big")
        if proto == PROTO_TCP and len(frame) >= l4 + 14:
            fl = frame[l4 + 13]
            h["flags"] = [n for i, n in enumerate(TCP_FLAG_NAMES) if fl >> i & 1]
            h["payload"] = max(0, len(frame) - l4 - (frame[l4 + 12] >> 4) * 4)
    elif proto == PROTO_ICMP and len(frame) >= l4 + 2:
        h["icmp"] = [frame[l4], frame[l4 + 1]]
        if frame[l4] in (0, 8) and len(frame) >= l4 + 6:  # echo: the id is the flow's "port"
            h["id"] = int.from_bytes(frame[l4 + 4:l4 + 6], "big")
    return h


def _outer(payload: bytes, src: str, dst: str, dport: int | None) -> dict[str, Any]:
    vni = int.from_bytes(VXLAN.unpack_from(payload)[1], "big") if len(payload) >= 8 else None
    return {"src": src, "dst": dst, "dport": dport, "vni": vni}


def _policy(a: Any) -> dict[str, Any]:
    """A policy verdict action (emunet.policy.verdict.Verdict) as a record entry."""
    rule = getattr(a, "rule", None)
    d: dict[str, Any] = {"direction": getattr(a, "direction", ""),
                         "allowed": bool(getattr(a, "allowed", False)),
                         "pod": getattr(a, "pod", "")}
    if rule is not None:
        d.update(policy=rule.policy, rule=rule.rule, kind=rule.kind)
    d["policies"] = list(getattr(a, "policies", ()) or ())
    if hasattr(a, "describe"):
        d["summary"] = a.describe()
    return d


def describe(ev: Event, node: str, underlay_ip: str, ct_table: dict, traced: dict,
             wall_offset: float, port_names: dict[str, str] | None = None,
             vxlan_port: int | None = None) -> dict[str, Any]:
    """One kept event as a record. `wall_offset` turns the pipeline's monotonic time to epoch.

    `ct_table` and `traced` are the datapath's conntrack table and traced keys, read right after
    the batch that produced the event (so the connection it opened is still there).
    """
    now, where, src, data, out, new = ev
    off = VXLAN.size if where == FROM_OVERLAY else 0
    pkt = headers(data, off)
    rec: dict[str, Any] = {"time": round(now + wall_offset, 6), "node": node, "pkt": pkt}
    if where == FROM_OVERLAY:
        rec["from"] = "overlay"
        rec["outer"] = _outer(data, src, underlay_ip, vxlan_port)
    else:
        rec["from"] = "endpoint"
        rec["in_port"] = src
        if port_names and src in port_names:
            rec["in_pod"] = port_names[src]
    key = flow_key(data, off)
    hit = ct_table.get(key) if key is not None else None
    rec["traced"] = pkt.get("tos") == TRACE_TOS or (key is not None and key in traced)
    if new and hit is not None:
        rec["ct"] = "new"
        conn = hit[0]
        if conn.backend is not None:
            rec["service"] = conn.service
            rec["backend"] = f"{ip_str(conn.backend[0])}:{conn.backend[1]}"
    elif hit is not None:
        rec["ct"] = "reply" if hit[1] else "established"
        conn = hit[0]
        if conn.backend is not None:
            rec["service"] = conn.service
            rec["backend"] = f"{ip_str(conn.backend[0])}:{conn.backend[1]}"
    else:
        rec["ct"] = "untracked"
    rec["verdict"] = "FORWARDED"
    policies = []
    for a in out:
        t = type(a)
        if t is Drop:
            rec["verdict"] = "DROPPED"
            rec["drop"] = {"reason": a.reason.name, "desc": a.reason.value, "detail": a.detail}
        elif t is Send:
            h = headers(a.frame)
            if where != FROM_OVERLAY and a.port == src:
                rec["reply_to_sender"] = {"port": a.port, "pkt": h}  # RST, ICMP error, echo
                continue
            rec["to"] = "endpoint"
            rec["out_port"] = a.port
            if port_names and a.port in port_names:
                rec["out_pod"] = port_names[a.port]
            rec["pkt_out"] = h
        elif t is Encap:
            rec["to"] = "overlay"
            rec["out_outer"] = _outer(a.payload, underlay_ip, a.dst_ip, a.dst_port)
            rec["pkt_out"] = headers(a.payload, VXLAN.size)
        elif hasattr(a, "allowed") and hasattr(a, "direction"):
            policies.append(_policy(a))
    if policies:
        rec["policy"] = policies
    if rec["verdict"] == "FORWARDED" and "to" not in rec:
        # answered by the datapath itself (ARP, a ping to the gateway) or consumed silently
        rec["to"] = "sender" if "reply_to_sender" in rec else "none"
    return rec
