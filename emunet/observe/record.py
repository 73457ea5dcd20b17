"""Kept datapath events -> neutral flow records (plain dicts, one JSON line each). Pure.

Runs in the agent after a batch, never per packet. A record says what one node's datapath did
with one packet: where it came in, the headers it had, the conntrack state, the translation
(Service DNAT with the chosen backend, reverse NAT on replies), the policy verdict when the
datapath reports one, and where it went out (a pod veth, the overlay with the outer VXLAN
header, or back to the sender) or why it was dropped. `hubble` renders records for users.

Record fields: time, node, from ("endpoint"|"overlay"|"network"), in_port | outer, pkt (headers in),
ct ("new"|"established"|"reply"|"untracked"), verdict ("FORWARDED"|"DROPPED"), drop, service,
backend, nat_out (headers out when translated), policy [..], to, out_port | out_outer, traced.
"""

from __future__ import annotations

from typing import Any

from emunet.datapath import Drop, Encap, Send
from emunet.datapath.ipv6pkt import ETHERTYPE_IPV6, IP6_DST, IP6_HLIM, IP6_SRC, L4_6, PROTO_ICMP6
from emunet.datapath.ipv6pkt import ip6_str as _ip6_str
from emunet.observe.hook import FROM_NETWORK, FROM_OVERLAY, TRACE_TOS, Event, flow_key
from emunet.packets import (
    ETH_DST,
    ETH_LEN,
    ETH_SRC,
    ETH_TYPE,
    ETHERTYPE_ARP,
    ETHERTYPE_IP,
    ICMP_ECHO,
    ICMP_ECHO_REPLY,
    ICMP_OFF_ID,
    IP_DST,
    IP_PROTO,
    IP_SRC,
    IP_TOS,
    IP_TTL,
    IP_VIHL,
    L4_OFF_DPORT,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    TCP_OFF_DATA,
    TCP_OFF_FLAGS,
    VXLAN,
    ip_str,
)

PROTO_NAMES = {PROTO_TCP: "TCP", PROTO_UDP: "UDP", PROTO_ICMP: "ICMP"}
TCP_FLAG_NAMES = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")


def headers(frame: bytes, off: int = 0) -> dict[str, Any]:
    """The L2-L4 headers of the Ethernet frame at `off`, as JSON-ready values."""
    f = memoryview(frame)[off:]  # the frame itself, so the packets.* offsets apply
    h: dict[str, Any] = {"smac": f[ETH_SRC].hex(":"), "dmac": f[ETH_DST].hex(":"),
                         "len": len(f)}
    if f[ETH_TYPE] == ETHERTYPE_ARP:
        h["arp"] = True
        return h
    if f[ETH_TYPE] == ETHERTYPE_IPV6 and len(f) >= L4_6:
        return _headers6(f, h)
    if f[ETH_TYPE] != ETHERTYPE_IP or len(f) < ETH_LEN + 20:
        h["ethertype"] = f[ETH_TYPE].hex()
        return h
    proto = f[IP_PROTO]
    h.update(src=ip_str(f[IP_SRC]), dst=ip_str(f[IP_DST]),
             proto=PROTO_NAMES.get(proto, str(proto)), ttl=f[IP_TTL], tos=f[IP_TOS])
    l4 = ETH_LEN + (f[IP_VIHL] & 0xF) * 4
    _l4(f, h, proto, l4)
    return h


def _headers6(f: memoryview, h: dict[str, Any]) -> dict[str, Any]:
    """An IPv6 frame's headers (dual-stack): `ipv` 6 (Hubble's IP.ipVersion), the hop limit as
    `ttl`, the traffic class as `tos`; the upper layer right behind the fixed header."""
    nh = f[ETH_LEN + 6]
    h.update(ipv=6, src=_ip6_str(f[IP6_SRC]), dst=_ip6_str(f[IP6_DST]),
             proto="ICMPv6" if nh == PROTO_ICMP6 else PROTO_NAMES.get(nh, str(nh)),
             ttl=f[IP6_HLIM], tos=((f[ETH_LEN] & 0xF) << 4) | (f[ETH_LEN + 1] >> 4))
    if nh == PROTO_ICMP6 and len(f) >= L4_6 + 2:
        h["icmp"] = [f[L4_6], f[L4_6 + 1]]
        if f[L4_6] in (128, 129) and len(f) >= L4_6 + 6:  # RFC 4443 echo: its identifier
            h["id"] = int.from_bytes(f[L4_6 + 4:L4_6 + 6], "big")
    else:
        _l4(f, h, nh, L4_6)
    return h


def _l4(f: memoryview, h: dict[str, Any], proto: int, l4: int) -> None:
    if proto in (PROTO_TCP, PROTO_UDP) and len(f) >= l4 + 4:
        h["sport"] = int.from_bytes(f[l4:l4 + 2], "big")
        h["dport"] = int.from_bytes(f[l4 + L4_OFF_DPORT:l4 + L4_OFF_DPORT + 2], "big")
        if proto == PROTO_TCP and len(f) >= l4 + TCP_OFF_FLAGS + 1:
            fl = f[l4 + TCP_OFF_FLAGS]
            h["flags"] = [n for i, n in enumerate(TCP_FLAG_NAMES) if fl >> i & 1]
            h["payload"] = max(0, len(f) - l4 - (f[l4 + TCP_OFF_DATA] >> 4) * 4)
    elif proto == PROTO_ICMP and len(f) >= l4 + 2:
        h["icmp"] = [f[l4], f[l4 + 1]]  # type, code
        if f[l4] in (ICMP_ECHO, ICMP_ECHO_REPLY) and len(f) >= l4 + ICMP_OFF_ID + 2:
            h["id"] = int.from_bytes(f[l4 + ICMP_OFF_ID:l4 + ICMP_OFF_ID + 2], "big")  # its "port"


def _backend(b: tuple[bytes, int]) -> str:
    """ip:port, an IPv6 address in brackets (RFC 3986 §3.2.2, as Cilium prints backends)."""
    return f"{ip_str(b[0])}:{b[1]}" if len(b[0]) == 4 else f"[{_ip6_str(b[0])}]:{b[1]}"


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


Pinned = tuple[Event, Any, bool]
"""A kept event with what conntrack said of it right after its batch: the table's hit
(entry, is_reply) or None, and whether its flow is traced (`pin`)."""


def pin(ev: Event, ct_table: dict, traced: dict) -> Pinned:
    """What `record` needs from conntrack, looked up now: the agent pins each event right
    after the batch that produced it (the connection it opened is in the table then; a flood
    may evict it later) and describes it later, in idle time (emunet.agent.flows)."""
    key = flow_key(ev[3], VXLAN.size if ev[1] == FROM_OVERLAY else 0)
    if key is None:
        return ev, None, False
    return ev, ct_table.get(key), key in traced


def describe(ev: Event, node: str, underlay_ip: str, ct_table: dict, traced: dict,
             wall_offset: float, port_names: dict[str, str] | None = None,
             vxlan_port: int | None = None, underlay_ip6: str = "") -> dict[str, Any]:
    """One kept event as a record, conntrack read now (`pin` then `record`)."""
    return record(pin(ev, ct_table, traced), node, underlay_ip, wall_offset, port_names,
                  vxlan_port, underlay_ip6)


def record(pinned: Pinned, node: str, underlay_ip: str, wall_offset: float,
           port_names: dict[str, str] | None = None, vxlan_port: int | None = None,
           underlay_ip6: str = "") -> dict[str, Any]:
    """One pinned event as a record. `wall_offset` turns the pipeline's monotonic time to
    epoch. `underlay_ip6`: the node's IPv6 underlay address, the outer address of flannel-v6's
    VXLAN."""
    ev, hit, traced_flow = pinned
    now, where, src, data, out, new = ev
    off = VXLAN.size if where == FROM_OVERLAY else 0
    pkt = headers(data, off)
    rec: dict[str, Any] = {"time": round(now + wall_offset, 6), "node": node, "pkt": pkt}
    if where == FROM_OVERLAY:
        rec["from"] = "overlay"
        rec["outer"] = _outer(data, src, underlay_ip6 if ":" in src else underlay_ip,
                              vxlan_port)
    elif where == FROM_NETWORK:  # a node port's client, on the node's eth0
        rec["from"] = "network"
        rec["in_port"] = src
    else:
        rec["from"] = "endpoint"
        rec["in_port"] = src
        if port_names and src in port_names:
            rec["in_pod"] = port_names[src]
    rec["traced"] = pkt.get("tos") == TRACE_TOS or traced_flow
    if hit is None:
        rec["ct"] = "untracked"
    else:
        rec["ct"] = "new" if new else "reply" if hit[1] else "established"
        conn = hit[0]
        if conn.backend is not None:
            rec["service"] = conn.service
            rec["backend"] = _backend(conn.backend)
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
            rec["out_outer"] = _outer(a.payload, underlay_ip6 if ":" in a.dst_ip
                                      else underlay_ip, a.dst_ip, a.dst_port)
            rec["pkt_out"] = headers(a.payload, VXLAN.size)
        elif hasattr(a, "allowed") and hasattr(a, "direction"):
            policies.append(_policy(a))
    if policies:
        rec["policy"] = policies
    if rec["verdict"] == "FORWARDED" and "to" not in rec:
        # answered by the datapath itself (ARP, a ping to the gateway) or consumed silently
        rec["to"] = "sender" if "reply_to_sender" in rec else "none"
    return rec
