"""Datapath's answers and ICMP errors: off the forwarding fast path, the frames the node writes
itself (ARP replies, kube-proxy's REJECT, the gateway's echo replies, to local pods and back
over VXLAN to other nodes' pods, time exceeded at either end of the tunnel) and the NAT of ICMP
errors about tracked flows. A mixin: Datapath inherits these methods, so calls cost what they did.
"""

from __future__ import annotations

from emunet import packets as pk
from emunet.datapath.actions import Action, Encap, Send
from emunet.datapath.conntrack import Rewrite
from emunet.datapath.nodeport import NodePort
from emunet.datapath.reasons import DropReason
from emunet.datapath.tables import LocalPod, RemoteNode
from emunet.packets import (
    ETH_LEN,
    ICMP_OFF_CSUM,
    ICMP_OFF_ID,
    IP_DST,
    IP_SRC,
    IPV4_OFF_DST,
    IPV4_OFF_PROTO,
    IPV4_OFF_SRC,
    L4_OFF_DPORT,
    L4_OFF_SPORT,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    U16,
    concat,
    make_key,
)

# ICMP queries (RFC 792/950: echo, timestamp, information, address mask, both ways): an error
# may quote these; any other type is an error message, which never gets one (RFC 1122)
_ICMP_QUERIES = frozenset((0, 8, 13, 14, 15, 16, 17, 18))
_ZERO16 = b"\0\0"  # ICMP echo's second "port" in a conntrack tuple (as in packets.tuple_key)


class Replies(NodePort):
    """Methods of Datapath that answer a frame or translate an ICMP error (see module doc)."""

    def _arp(self, frame: bytes, pod: LocalPod) -> list[Action]:
        """Answer who-has for the gateway and for local pods (as the bridge would let them)."""
        if len(frame) < ETH_LEN + pk.ARP.size:
            return self._drop(DropReason.INVALID_PACKET, "short ARP")
        _, ptype, hlen, plen, op, sha, spa, _, tpa = pk.ARP.unpack_from(frame, ETH_LEN)
        if ptype != pk.ETH_P_IP or hlen != 6 or plen != 4 or sha != pod.mac:
            return self._drop(DropReason.INVALID_PACKET, "ARP not IPv4-over-Ethernet")
        if spa != pod.ip and spa != b"\0\0\0\0":  # 0.0.0.0: RFC 5227 address probe
            return self._drop(DropReason.INVALID_SOURCE, f"ARP from {pk.ip_str(spa)}")
        t = self.tables
        if op != pk.ARP_REQUEST or tpa == spa:
            return []  # replies and gratuitous ARP: nothing to answer
        if tpa == t.gateway_ip:
            mac = t.gateway_mac
        else:
            target = t.pods_by_ip.get(tpa)
            if target is None:
                return []  # nobody on the segment has that address: no answer, as on a LAN
            mac = target.mac
        self._c["arp_replies"] += 1
        return [Send(pod.port, pk.arp_reply(pod.mac, mac, tpa, pod.mac, spa))]

    def _reject(self, f: bytearray, l4: int, end: int, proto: int, pod: LocalPod,
                why: str) -> list[Action]:
        """kube-proxy's REJECT: TCP gets a RST, UDP an ICMP port unreachable, from the VIP."""
        t = self.tables
        if proto == PROTO_TCP:
            sport, dport, seq, ack, off, flags, *_ = pk.TCP.unpack_from(f, l4)
            if flags & pk.TCP_RST:  # RFC 9293: never answer a reset with a reset
                return self._drop(DropReason.NO_ENDPOINTS, why)
            seg_len = end - l4 - (off >> 4) * 4
            answer = pk.tcp_rst(pod.mac, t.gateway_mac, bytes(f[IP_DST]), pod.ip, dport, sport,
                                seq, ack, flags, seg_len)
        else:
            answer = pk.icmp_error(pod.mac, t.gateway_mac, bytes(f[IP_DST]), pk.ICMP_UNREACH,
                                   pk.UNREACH_PORT, f[ETH_LEN:end])
        return self._drop(DropReason.NO_ENDPOINTS, why, Send(pod.port, answer))

    def _to_gateway(self, f: bytearray, l4: int, end: int, proto: int,
                    pod: LocalPod | None) -> list[Action]:
        """The gateway answers pings (like cni0's address); it offers no other service, so a
        TCP segment gets a RST and a UDP datagram an ICMP port unreachable, as the node's own
        stack answers a port nobody listens on (RFC 9293 §3.10.7.1, RFC 1122 §4.1.3.1)."""
        t = self.tables
        if pod is None:  # from another node's pod, by the tunnel from its node
            peer = t.remote_for(int.from_bytes(f[IP_SRC], "big"))
            closed = None if peer is None else self._overlay_closed_port(f, l4, end, proto, peer)
            return closed or self._drop(DropReason.NO_ROUTE, "the gateway only answers ICMP echo")
        if proto == PROTO_ICMP and f[l4] == pk.ICMP_ECHO:
            self._c["echo_replies"] += 1
            return [Send(pod.port, pk.echo_reply(pod.mac, t.gateway_mac, t.gateway_ip, pod.ip,
                                                 f[l4:end]))]
        answer = self._closed_port(f, l4, end, proto, pod.mac, t.gateway_mac)
        if answer is None:
            return self._drop(DropReason.NO_ROUTE, "the gateway only answers ICMP echo")
        return self._drop(DropReason.NO_ROUTE, "no listener on the gateway",
                          Send(pod.port, answer))

    def _closed_port(self, f: bytearray, l4: int, end: int, proto: int, eth_dst: bytes,
                     eth_src: bytes) -> bytes | None:
        """The node stack's answer from the gateway address to a packet for a port with no
        listener: a RST for TCP (never for a RST), port unreachable for UDP (never for a
        non-first fragment: RFC 1122 §3.2.2); None for anything else (no answer)."""
        t = self.tables
        if U16.unpack_from(f, ETH_LEN + 6)[0] & 0x1FFF:
            return None
        if proto == PROTO_TCP:
            sport, dport, seq, ack, off, flags, *_ = pk.TCP.unpack_from(f, l4)
            if flags & pk.TCP_RST:
                return None
            return pk.tcp_rst(eth_dst, eth_src, t.gateway_ip, bytes(f[IP_SRC]), dport, sport,
                              seq, ack, flags, end - l4 - (off >> 4) * 4)
        if proto == PROTO_UDP:
            return pk.icmp_error(eth_dst, eth_src, t.gateway_ip, pk.ICMP_UNREACH,
                                 pk.UNREACH_PORT, f[ETH_LEN:end])
        return None

    def _overlay_to_node(self, f: bytearray, l4: int, end: int, proto: int, frag: bool,
                         peer: RemoteNode) -> list[Action] | None:
        """A decapsulated packet for this node's own stack, as Linux behind flannel.1 answers
        it: to the gateway (cni0's address) a local delivery with no TTL check, echo answered
        (RFC 792; anything else finds no listener); else a routed hop with no TTL left, ICMP
        time exceeded from the gateway (ip_forward), so traceroute sees this hop. The answer
        goes back through the tunnel it came in by (peer's VTEP). None: not ours to answer
        (other traffic to the gateway: the replies of NodePort masquerade, conntrack's)."""
        t = self.tables
        zero = b"\0" * 6  # MACs: replaced by the encap prefix's VTEP MACs
        if f[IP_DST] == t.gateway_ip:
            if proto != PROTO_ICMP or frag or f[l4] != pk.ICMP_ECHO:
                return None
            self._c["echo_replies"] += 1
            frame = pk.echo_reply(zero, zero, t.gateway_ip, bytes(f[IP_SRC]), f[l4:end])
            return [Encap(peer.underlay_ip, t.vxlan_port, concat(peer.encap_prefix, frame[12:]))]
        # RFC 1122 §3.2.2: never an ICMP error about an ICMP error or a non-first fragment
        # (nor, here, about a fragment of an ICMP message, whose type may not be in it)
        if (proto == PROTO_ICMP and (frag or f[l4] not in _ICMP_QUERIES)) or \
                U16.unpack_from(f, ETH_LEN + 6)[0] & 0x1FFF:
            return self._drop(DropReason.TTL_EXCEEDED, "decapsulated packet (no ICMP)")
        err = pk.icmp_error(zero, zero, t.gateway_ip, pk.ICMP_TIME_EXCEEDED, 0, f[ETH_LEN:end])
        return self._drop(DropReason.TTL_EXCEEDED, "decapsulated packet: ICMP time exceeded sent",
                          Encap(peer.underlay_ip, t.vxlan_port,
                                concat(peer.encap_prefix, err[12:])))

    def _overlay_closed_port(self, f: bytearray, l4: int, end: int, proto: int,
                             peer: RemoteNode) -> list[Action] | None:
        """Another node's pod reached this node's gateway address on a port nobody listens
        on (no NodePort reply, no flow): the RST or port unreachable, back through the tunnel
        (None: no answer is due, the caller drops)."""
        answer = self._closed_port(f, l4, end, proto, b"\0" * 6, b"\0" * 6)
        if answer is None:
            return None
        t = self.tables
        return self._drop(DropReason.NO_ROUTE, "no listener on the gateway",
                          Encap(peer.underlay_ip, t.vxlan_port,
                                concat(peer.encap_prefix, answer[12:])))

    def _icmp_error(self, f: bytearray, l4: int, end: int) -> list[Action] | None:
        """Translate an ICMP error about a NAT'ed flow (RFC 5508 §4.2, Linux nf_nat_icmp).

        The quoted packet travelled the other way; its reversed tuple is our lookup key. The
        outer header gets this direction's rewrite, the quote the inverse of the other's.
        """
        e = l4 + 8  # RFC 792: the quoted IP header follows the 8-byte ICMP header
        q = _ipv4_quote(f, e, end)
        if q is None:
            return self._drop(DropReason.INVALID_PACKET, "ICMP error quote too short")
        el4, eproto = q
        qsrc = bytes(f[e + IPV4_OFF_SRC:e + IPV4_OFF_SRC + 4])
        qdst = bytes(f[e + IPV4_OFF_DST:e + IPV4_OFF_DST + 4])
        qsport = bytes(f[el4 + L4_OFF_SPORT:el4 + L4_OFF_SPORT + 2])
        qdport = bytes(f[el4 + L4_OFF_DPORT:el4 + L4_OFF_DPORT + 2])
        if eproto == PROTO_ICMP:
            ports = (bytes(f[el4 + ICMP_OFF_ID:el4 + ICMP_OFF_ID + 2]), _ZERO16)
        else:
            ports = (qdport, qsport)
        key = make_key(eproto, qdst, qsrc, *ports)
        hit = self.ct.lookup(key, float("-inf"))
        if hit is None:
            return None  # not tracked (or not NAT'ed): route it as is
        conn, is_reply = hit
        outer = conn.rev if is_reply else conn.fwd
        if outer is None:
            return None
        outer.apply(f, ETH_LEN, l4, PROTO_ICMP, end)  # the outer rewrite leaves the quote be
        quoted = (qsrc, qdst, *ports) if eproto == PROTO_ICMP else (qsrc, qdst, qsport, qdport)
        want = conn.orig if is_reply else _mirror(conn.orig)
        inner = Rewrite.between(eproto, quoted, want)
        if inner is not None:
            inner.apply(f, e, el4, eproto, end)
        f[l4 + ICMP_OFF_CSUM:l4 + ICMP_OFF_CSUM + 2] = _ZERO16
        U16.pack_into(f, l4 + ICMP_OFF_CSUM, pk.checksum(memoryview(f)[l4:end]))
        return None


def _mirror(tup: tuple[bytes, bytes, bytes, bytes]) -> tuple[bytes, bytes, bytes, bytes]:
    return (tup[1], tup[0], tup[3], tup[2])


def _ipv4_quote(f: bytearray, e: int, end: int) -> tuple[int, int] | None:
    """(l4 offset, protocol) of the IPv4 packet quoted in an ICMP error at offset e."""
    if e + 20 > end or f[e] >> 4 != 4:
        return None
    el4 = e + (f[e] & 0xF) * 4
    proto = f[e + IPV4_OFF_PROTO]
    if proto not in (PROTO_TCP, PROTO_UDP, PROTO_ICMP) or el4 + 8 > end:
        return None
    return el4, proto
