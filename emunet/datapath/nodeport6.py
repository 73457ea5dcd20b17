"""NodePort over IPv6 (dual-stack), the NAT both families share, and the MTU of what arrives on
the underlay: ICMP fragmentation needed / ICMPv6 Packet Too Big. Pure.

kube-proxy runs one proxier per family: a Service's node port is programmed for the families of
the Service only (kubernetes/kubernetes#90101: since 1.18 an IPv4 Service's node port is
IPv4-only). So a connection to [node IPv6]:nodePort is DNAT'ed to a ready IPv6 endpoint of a
Service of the IPv6 family (`NodeTables.nodeports6`) on any node, and SNAT'ed to the node's
IPv6 pod gateway (`<pod /64>::1`, as IPv4 SNATs to 10.42.<n>.1: it lies in this node's /64, so a
remote backend's replies come back by flannel-v6's tunnel). A SingleStack IPv4 Service has no
IPv6 node port: the node's kernel would answer (no listener: RST / port unreachable), and so
does the agent, as for a node port no Service owns, and as for one without ready endpoints
(kube-proxy's REJECT: a RST, or ip6tables' default icmp6-port-unreachable). Replies are
reverse-NAT'ed by conntrack and leave eth0 to the client's learned MACs (`nodeport_reply6`).
IPv6 has no header checksum: only the hop limit changes at each hop, and NAT changes the
upper-layer checksum over the pseudo-header (ctconn.Rewrite._apply6).

MTU: the pod MTU is cni0's and flannel.1's (flannel-v6.1's) MTU, and the underlay's is larger
(1500, 1520 dual-stack), so an outside client can send a frame the node cannot forward to a
pod. Linux's forwarding path (ip_forward / ip6_forward, after PREROUTING's DNAT) then answers
with an ICMP error from the node's own address and drops the packet: IPv6 always Packet Too Big
(RFC 8200 §5: routers never fragment; RFC 4443 §3.2, its MTU field the next-hop MTU), IPv4
with DF set fragmentation needed (RFC 792 type 3 code 4, the Next-Hop MTU of RFC 1191 §4).
IPv4 without DF is forwarded in fragments of the pod MTU, as ip_forward fragments it
(emunet.datapath.frags.split, NodePort._fragmented). The quote is the packet
as the client sent it (Linux quotes the DNAT'ed one and nf_nat reverses the quote, the same
bytes). Neither is rate limited, as in Linux: icmpv4_mask_allow never limits ICMP_FRAG_NEEDED
("Don't limit PMTU discovery") and ICMPv6 type 2 is outside icmpv6_ratemask's default
(0-1,3-127); nor does the datapath limit its other ICMP errors. Only MTU-sized frames are
judged: a GSO super-frame (eth0's GRO merging an outside client's TCP segments) is cut to MSS
before a pod or the tunnel sees it, so it is never too big.

A mixin below NodePort (emunet.datapath.nodeport): Datapath inherits these methods; IPv6's own
routing stage is declared here and defined by emunet.datapath.ipv6.
"""

from __future__ import annotations

from emunet import packets as pk
from emunet.datapath.actions import Action, Send
from emunet.datapath.conntrack import OK, Conn
from emunet.datapath.frags import Fragments
from emunet.datapath.ipv6pkt import (
    ICMP6_TOO_BIG,
    ICMP6_UNREACH,
    IP6_DST,
    IP6_HLIM,
    IP6_SRC,
    KEY6_DPORT,
    KEY6_SPORT,
    UNREACH6_PORT,
    icmp6_error,
    ip6_str,
    parse_ipv6,
    tcp_rst6,
    tuple_key6,
)
from emunet.datapath.neigh import Neighbours
from emunet.datapath.reasons import DropReason
from emunet.datapath.tables import ServiceTarget
from emunet.packets import (
    ETH_DST,
    ETH_LEN,
    ETH_MACS,
    ETH_SRC,
    PROTO_TCP,
    PROTO_UDP,
    TCP_OFF_FLAGS,
    U16,
)

UNDERLAY_PORT = "eth0"  # the action port of the node's underlay link (pod ports are veth*)
SNAT_TRIES = 8  # the client's port first, then random ones in Linux's ephemeral range
EPHEMERAL = (32768, 61000)  # net.ipv4.ip_local_port_range default: clear of node ports


class NodePort6(Fragments):
    """Methods of Datapath for IPv6 node ports and the underlay's MTU (see module doc)."""

    neigh: Neighbours  # set by Datapath.__init__

    def _route6(self, f: bytearray) -> list[Action]:
        raise NotImplementedError  # emunet.datapath.ipv6

    def _from_underlay6(self, frame: bytes, now: float, gso: bool) -> list[Action]:
        """An IPv6 frame for a node port that arrived on eth0 (`process_nodeport`)."""
        t = self.tables
        if not t.underlay_ip6:
            return self._drop(DropReason.UNSUPPORTED_L3, "IPv6 on eth0 (no IPv6 underlay)")
        f = bytearray(frame)
        parsed = parse_ipv6(f)
        if parsed is None:
            return self._drop(DropReason.INVALID_PACKET, "bad IPv6 header on eth0")
        l4, end, nh = parsed
        if (nh != PROTO_TCP and nh != PROTO_UDP) or f[IP6_DST] != t.underlay_ip6:
            return self._drop(DropReason.NO_ROUTE, "not for a node port of this node")
        if f[IP6_HLIM] <= 1:
            return self._drop(DropReason.TTL_EXCEEDED, "node port packet")
        src = bytes(f[IP6_SRC])
        s = int.from_bytes(src, "big")
        if src[0] == 0xFF or s & t.local_mask6 == t.local_net6 or t.remote_for6(s) is not None:
            return self._drop(DropReason.INVALID_SOURCE, f"source {ip6_str(src)} on eth0")
        macs = b"".join((f[ETH_SRC], f[ETH_DST]))  # the replies': to the client, from us
        self.neigh.learn(src, macs, now)
        quote = None if gso or end - ETH_LEN <= t.mtu else bytes(f[ETH_LEN:end])
        key = tuple_key6(f, l4, nh)
        assert key is not None
        flags = f[l4 + TCP_OFF_FLAGS] if nh == PROTO_TCP else 0
        if self.ct.established(key, f, l4, end, nh, flags, now):
            return self._route6(f) if quote is None else self._too_big(quote, macs, True)
        dport = U16.unpack(key[KEY6_DPORT])[0]
        target = t.nodeports6.get((nh, dport))
        if target is None or not target.backends:
            why = (f"{target.name}: no ready IPv6 endpoints" if target else f"no Service has "
                   f"IPv6 node port {dport}/{'TCP' if nh == PROTO_TCP else 'UDP'}")
            return self._nodeport_reject6(f, l4, end, nh, macs, why)
        if quote is not None:  # to be forwarded, and it does not fit (module doc)
            return self._too_big(quote, macs, True)
        out = self._nodeport_dnat(f, l4, end, nh, flags, now, target, src, t.underlay_ip6,
                                  key[KEY6_SPORT], key[KEY6_DPORT], t.gateway_ip6)
        return out if out is not None else self._route6(f)

    def _nodeport_dnat(self, f: bytearray, l4: int, end: int, proto: int, flags: int,
                       now: float, target: ServiceTarget, src: bytes, me: bytes, sport: bytes,
                       dport: bytes, gateway: bytes) -> list[Action] | None:
        """A new node port connection, either family: a backend by `Affinity`, the backend's
        ingress policy (it sees the node: `gateway`), a conntrack entry with both rewrites
        (DNAT to the backend, SNAT to the gateway; the client's port kept unless that reply
        tuple is taken), and the DNAT+SNAT applied to `f`. None: route it; else the drop."""
        bip, bport = self.affinity.pick(target, src, now, self.rng)
        denied = self._check(gateway, bip, proto, bport, False)
        if denied is not None:
            return denied
        conn = None
        for i in range(SNAT_TRIES):
            snat = sport if i == 0 else U16.pack(self.rng.randrange(*EPHEMERAL))
            c = Conn(proto, (src, me, sport, dport), (bip, gateway, U16.pack(bport), snat),
                     target.name, (bip, bport))
            if self.ct.admit(c, now) == OK:
                conn = c
                break
        if conn is None or conn.fwd is None:
            return self._drop(DropReason.CT_INVALID, f"no free SNAT port for {target.name}")
        self._new = (conn, flags)  # confirmed when it leaves (Datapath._verdicts)
        self._c["nodeport_dnat"] += 1
        conn.fwd.apply(f, ETH_LEN, l4, proto, end)
        return None

    def _too_big(self, quote: bytes, macs: bytes, v6: bool) -> list[Action]:
        """The packet `quote` (from its IP header on) cannot be forwarded to a pod: ICMPv6
        Packet Too Big (RFC 4443 §3.2) or ICMP fragmentation needed (RFC 1191 §4), MTU = the
        pod MTU, from this node's underlay address back out of eth0; the packet is dropped."""
        t = self.tables
        dst_mac, src_mac = macs[:6], macs[6:]
        if v6:
            err = icmp6_error(dst_mac, src_mac, t.underlay_ip6, ICMP6_TOO_BIG, 0, quote, t.mtu)
            what = "ICMPv6 packet too big"
        else:
            err = pk.icmp_error(dst_mac, src_mac, t.underlay_ip, pk.ICMP_UNREACH,
                                pk.UNREACH_FRAG_NEEDED, quote, t.mtu)
            what = "ICMP fragmentation needed"
        self._c["icmp_too_big"] += 1
        return self._drop(DropReason.FRAG_NEEDED, f"{len(quote)} bytes > pod MTU {t.mtu}: "
                          f"{what} sent", Send(UNDERLAY_PORT, err))

    def _nodeport_reject6(self, f: bytearray, l4: int, end: int, nh: int, macs: bytes,
                          why: str) -> list[Action]:
        """TCP RST / ICMPv6 port unreachable from the node's IPv6 address, out of eth0."""
        dst_mac, src_mac = macs[:6], macs[6:]
        me, client = bytes(f[IP6_DST]), bytes(f[IP6_SRC])
        if nh == PROTO_TCP:
            sport, dport, seq, ack, off, tflags, *_ = pk.TCP.unpack_from(f, l4)
            if tflags & pk.TCP_RST:  # RFC 9293: never answer a reset with a reset
                return self._drop(DropReason.NO_ENDPOINTS, why)
            answer = tcp_rst6(dst_mac, src_mac, me, client, dport, sport, seq, ack, tflags,
                              end - l4 - (off >> 4) * 4)
        else:
            answer = icmp6_error(dst_mac, src_mac, me, ICMP6_UNREACH, UNREACH6_PORT,
                                 f[ETH_LEN:end])
        return self._drop(DropReason.NO_ENDPOINTS, why, Send(UNDERLAY_PORT, answer))

    def nodeport_reply6(self, f: bytearray, now: float) -> list[Action] | None:
        """An IPv6 packet that conntrack's reverse NAT turned into a NodePort reply (from this
        node's IPv6 underlay address, which no pod can send from) goes out of eth0, hop limit
        - 1, to the client's learned MACs; None for anything else, a pod's own connection to
        [node IPv6]:nodePort included (its reply is routed back to the pod)."""
        t = self.tables
        if f[IP6_SRC] != t.underlay_ip6:  # never equal when there is none (b"")
            return None
        d = int.from_bytes(f[IP6_DST], "big")
        if d & t.local_mask6 == t.local_net6 or t.remote_for6(d) is not None:
            return None
        macs = self.neigh.get(bytes(f[IP6_DST]), now)
        if macs is None:  # aged out or evicted: Linux would solicit it again, emunet cannot
            return self._drop(DropReason.NO_ROUTE, f"no neighbour entry for NodePort client "
                              f"{ip6_str(f[IP6_DST])}")
        f[IP6_HLIM] -= 1
        f[ETH_MACS] = macs
        self._c["nodeport_out"] += 1
        return [Send(UNDERLAY_PORT, bytes(f))]
