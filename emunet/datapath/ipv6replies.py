"""Datapath's IPv6 answers: Neighbour Discovery, the gateway's echo replies and closed ports,
kube-proxy's REJECT for IPv6 ClusterIPs, ICMPv6 Time Exceeded at either end of the tunnel, and
the NAT of ICMPv6 errors about tracked flows. Pure. A mixin (emunet.datapath.replies is the
IPv4 one): Datapath inherits these methods.

Neighbour Discovery (RFC 4861), as a pod behind a Linux bridge CNI (cni0 holding the gateway
address) sees it: a Neighbor Solicitation for the gateway is answered with the gateway MAC
(Router, Solicited and Override flags, the target link-layer address option), one for a pod of
this node with that pod's MAC (the bridge would carry it to the pod, which answers), as ARP is
answered. Router Solicitations get no answer: cni0 sends no Router Advertisement (Linux never
originates RAs; only radvd would, and k3s runs none), so a pod's IPv6 default route is the
static one its CNI IPAM installs, via the gateway address. MLD reports and other link-scope
multicast find no listener and are consumed without a drop, as on a bridge with no querier.
"""

from __future__ import annotations

from emunet.datapath.actions import Action, Encap, Send
from emunet.datapath.conntrack import Rewrite
from emunet.datapath.ipv6pkt import (
    ALL_NODES,
    ALL_NODES_MAC,
    ICMP6_ECHO,
    ICMP6_OFF_CSUM,
    ICMP6_OFF_ID,
    ICMP6_TIME_EXCEEDED,
    ICMP6_UNREACH,
    IP6_DST,
    IP6_HDR,
    IP6_HLIM,
    IP6_OFF_DST,
    IP6_OFF_NH,
    IP6_OFF_SRC,
    IP6_SRC,
    NA_OVERRIDE,
    NA_ROUTER,
    NA_SOLICITED,
    ND_HOP_LIMIT,
    ND_NS,
    PROTO_ICMP6,
    UNREACH6_PORT,
    UNSPECIFIED,
    echo_reply6,
    icmp6_error,
    ip6_str,
    l4_checksum6,
    link_local,
    neighbor_advert,
    solicited_node,
    tcp_rst6,
)
from emunet.datapath.reasons import DropReason
from emunet.datapath.services import Services
from emunet.datapath.tables import LocalPod, RemoteNode
from emunet.packets import (
    ETH_LEN,
    L4_OFF_DPORT,
    L4_OFF_SPORT,
    PROTO_TCP,
    PROTO_UDP,
    TCP,
    TCP_RST,
    U16,
    concat,
    make_key,
)

_NS_MIN = 24  # RFC 4861 §7.1.1: an NS is at least 24 octets (header + target)
_ZERO16 = b"\0\0"
_ZERO_MACS = b"\0" * 6  # replaced by the encap prefix's VTEP MACs


class Replies6(Services):
    """Methods of Datapath that answer an IPv6 frame or translate an ICMPv6 error."""

    # ---- Neighbour Discovery ------------------------------------------------------------------

    def _nd(self, f: bytearray, l4: int, end: int, nh: int, pod: LocalPod) -> list[Action]:
        """ND and link-scope multicast from a pod (module doc): answer an NS for an address
        the node answers for, consume the rest."""
        if nh != PROTO_ICMP6 or f[l4] != ND_NS:
            self._c["nd_ignored"] += 1  # RS (no router advertises), MLD, unsolicited NA
            return []
        # RFC 4861 §7.1.1: hop limit 255 (never forwarded), code 0, length, no multicast target
        if f[IP6_HLIM] != ND_HOP_LIMIT or f[l4 + 1] != 0 or end - l4 < _NS_MIN \
                or f[l4 + 8] == 0xFF:
            return self._drop(DropReason.INVALID_PACKET, "invalid Neighbor Solicitation")
        src, target = bytes(f[IP6_SRC]), bytes(f[l4 + 8:l4 + 24])
        dad = src == UNSPECIFIED
        if dad and bytes(f[IP6_DST]) != solicited_node(target):  # RFC 4861 §7.1.1
            return self._drop(DropReason.INVALID_PACKET, "DAD probe not to solicited-node")
        if not dad and src != pod.ip6 and not link_local(src):
            return self._drop(DropReason.INVALID_SOURCE, "Neighbor Solicitation from "
                              f"{ip6_str(src)}")
        t = self.tables
        if target == t.gateway_ip6 and t.gateway_ip6:
            mac, flags = t.gateway_mac, NA_ROUTER | NA_SOLICITED | NA_OVERRIDE
        else:
            other = t.pods_by_ip6.get(target)
            if other is None or other is pod:
                return []  # nobody else has it (a DAD probe of its own address: no answer)
            mac, flags = other.mac, NA_SOLICITED | NA_OVERRIDE
        if dad:  # RFC 4861 §7.2.4: to all-nodes, Solicited clear
            eth_dst, dst, flags = ALL_NODES_MAC, ALL_NODES, flags & ~NA_SOLICITED
        else:
            eth_dst, dst = pod.mac, src
        self._c["nd_adverts"] += 1
        return [Send(pod.port, neighbor_advert(eth_dst, mac, target, dst, target, flags))]

    # ---- the gateway and the Services' REJECT ------------------------------------------------

    def _to_gateway6(self, f: bytearray, l4: int, end: int, nh: int,
                     pod: LocalPod | None) -> list[Action]:
        """The gateway answers ICMPv6 echo (cni0's address, as IPv4's does); a TCP segment
        gets a RST and a UDP datagram a port unreachable, as the node's stack answers a port
        nobody listens on (RFC 9293 §3.10.7.1, RFC 4443 §3.1 code 4)."""
        t = self.tables
        if pod is None:  # another node's pod, by the tunnel
            peer = t.remote_for6(int.from_bytes(f[IP6_SRC], "big"))
            answer = None if peer is None else self._closed_port6(f, l4, end, nh, _ZERO_MACS,
                                                                  _ZERO_MACS)
            if peer is None or answer is None:
                return self._drop(DropReason.NO_ROUTE, "the gateway only answers ICMPv6 echo")
            return self._drop(DropReason.NO_ROUTE, "no listener on the gateway",
                              self._encap6(peer, answer))
        if nh == PROTO_ICMP6 and f[l4] == ICMP6_ECHO:
            self._c["echo_replies"] += 1
            return [Send(pod.port, echo_reply6(pod.mac, t.gateway_mac, bytes(f[IP6_DST]),
                                               bytes(f[IP6_SRC]), f[l4:end]))]
        answer = self._closed_port6(f, l4, end, nh, pod.mac, t.gateway_mac)
        if answer is None:
            return self._drop(DropReason.NO_ROUTE, "the gateway only answers ICMPv6 echo")
        return self._drop(DropReason.NO_ROUTE, "no listener on the gateway",
                          Send(pod.port, answer))

    def _closed_port6(self, f: bytearray, l4: int, end: int, nh: int, eth_dst: bytes,
                      eth_src: bytes) -> bytes | None:
        """RST for TCP (never for a RST), port unreachable for UDP, from the packet's own
        destination; None for anything else."""
        me = bytes(f[IP6_DST])
        if nh == PROTO_TCP:
            sport, dport, seq, ack, off, flags, *_ = TCP.unpack_from(f, l4)
            if flags & TCP_RST:
                return None
            return tcp_rst6(eth_dst, eth_src, me, bytes(f[IP6_SRC]), dport, sport, seq, ack,
                            flags, end - l4 - (off >> 4) * 4)
        if nh == PROTO_UDP:
            return icmp6_error(eth_dst, eth_src, me, ICMP6_UNREACH, UNREACH6_PORT,
                               f[ETH_LEN:end])
        return None

    def _reject6(self, f: bytearray, l4: int, end: int, nh: int, pod: LocalPod,
                 why: str) -> list[Action]:
        """kube-proxy's REJECT for an IPv6 ClusterIP without endpoints, as for IPv4 (a RST,
        or ip6tables' default icmp6-port-unreachable), from the VIP."""
        answer = self._closed_port6(f, l4, end, nh, pod.mac, self.tables.gateway_mac)
        if answer is None:
            return self._drop(DropReason.NO_ENDPOINTS, why)
        return self._drop(DropReason.NO_ENDPOINTS, why, Send(pod.port, answer))

    def _time_exceeded6(self, f: bytearray, l4: int, end: int, nh: int) -> bytes | None:
        """ICMPv6 Time Exceeded, code 0 (RFC 4443 §3.3), from the gateway; None when no error
        is due: never about an ICMPv6 error (§2.4(e.1)), nor a multicast destination."""
        if (nh == PROTO_ICMP6 and f[l4] < 128) or f[IP6_DST.start] == 0xFF:
            return None
        return icmp6_error(_ZERO_MACS, _ZERO_MACS, self.tables.gateway_ip6,
                           ICMP6_TIME_EXCEEDED, 0, f[ETH_LEN:end])

    def _encap6(self, peer: RemoteNode, frame: bytes) -> Encap:
        """`frame` (its MACs to be replaced) back to `peer` by flannel-v6.1's tunnel."""
        return Encap(peer.underlay_ip6, self.tables.vxlan_port,
                     concat(peer.encap_prefix6, frame[12:]))

    def _overlay_to_node6(self, f: bytearray, l4: int, end: int, nh: int,
                          peer: RemoteNode) -> list[Action] | None:
        """A decapsulated packet for this node's own stack (IPv4's `_overlay_to_node`): an
        echo to the gateway answered, no hop limit left: Time Exceeded back by the tunnel.
        None: not ours to answer."""
        t = self.tables
        if f[IP6_DST] == t.gateway_ip6:
            if nh != PROTO_ICMP6 or f[l4] != ICMP6_ECHO:
                return None
            self._c["echo_replies"] += 1
            return [self._encap6(peer, echo_reply6(_ZERO_MACS, _ZERO_MACS, t.gateway_ip6,
                                                   bytes(f[IP6_SRC]), f[l4:end]))]
        err = self._time_exceeded6(f, l4, end, nh)
        if err is None:
            return self._drop(DropReason.TTL_EXCEEDED, "decapsulated packet (no ICMPv6)")
        return self._drop(DropReason.TTL_EXCEEDED, "decapsulated packet: ICMPv6 time "
                          "exceeded sent", self._encap6(peer, err))

    # ---- ICMPv6 errors about NAT'ed flows -----------------------------------------------------

    def _icmp6_error(self, f: bytearray, l4: int, end: int) -> list[Action] | None:
        """Translate an ICMPv6 error about a NAT'ed flow (RFC 5508 §4.2's rule for IPv4, as
        Linux's nf_nat_icmpv6 does): the outer header gets this direction's rewrite, the quote
        the inverse of the other's, and the checksum is computed anew over the pseudo-header
        of the final addresses. None: carry on (routed, translated or not)."""
        e = l4 + 8  # RFC 4443 §3: the invoking packet follows the 8-byte header
        el4 = e + IP6_HDR
        if el4 + 8 > end or f[e] >> 4 != 6:
            return self._drop(DropReason.INVALID_PACKET, "ICMPv6 error quote too short")
        eproto = f[e + IP6_OFF_NH]
        if eproto not in (PROTO_TCP, PROTO_UDP, PROTO_ICMP6):
            return None
        qsrc = bytes(f[e + IP6_OFF_SRC:e + IP6_OFF_SRC + 16])
        qdst = bytes(f[e + IP6_OFF_DST:e + IP6_OFF_DST + 16])
        qsport = bytes(f[el4 + L4_OFF_SPORT:el4 + L4_OFF_SPORT + 2])
        qdport = bytes(f[el4 + L4_OFF_DPORT:el4 + L4_OFF_DPORT + 2])
        if eproto == PROTO_ICMP6:
            ports = (bytes(f[el4 + ICMP6_OFF_ID:el4 + ICMP6_OFF_ID + 2]), _ZERO16)
        else:
            ports = (qdport, qsport)
        hit = self.ct.lookup(make_key(eproto, qdst, qsrc, *ports), float("-inf"))
        if hit is None:
            return None
        conn, is_reply = hit
        outer = conn.rev if is_reply else conn.fwd
        if outer is None:
            return None
        outer.apply(f, ETH_LEN, l4, PROTO_ICMP6, end)
        quoted = (qsrc, qdst, *ports) if eproto == PROTO_ICMP6 else (qsrc, qdst, qsport, qdport)
        want = conn.orig if is_reply else (conn.orig[1], conn.orig[0], conn.orig[3],
                                           conn.orig[2])
        inner = Rewrite.between(eproto, quoted, want)
        if inner is not None:
            inner.apply(f, e, el4, eproto, end)
        f[l4 + ICMP6_OFF_CSUM:l4 + ICMP6_OFF_CSUM + 2] = _ZERO16
        U16.pack_into(f, l4 + ICMP6_OFF_CSUM, l4_checksum6(bytes(f[IP6_SRC]), bytes(f[IP6_DST]),
                                                           PROTO_ICMP6, memoryview(f)[l4:end]))
        return None

