"""The established fast path: one lookup, one splice, one copy per packet. Pure.

DESIGN.md §3 (the idea of OVS's flow cache and Cilium's CT): the full pipeline decides a
connection, and each direction of its conntrack entry then holds a `Hop`, everything the next
packet of that direction needs: where it goes (a pod veth, the host port or a peer VTEP), the
bytes that replace its MAC header (the routed MACs, or the VXLAN header and inner VTEP MACs of
an encap, or the unchanged MACs of a bridged frame), the NAT'ed addresses and ports, and the
RFC 1624 checksum deltas with the TTL decrement folded in. An established packet of an assured
connection then costs one dict lookup, a small header patch and one copy of the frame.

A `Hop` is learnt from a packet the slow path forwarded as an established packet of its
connection (`Conntrack.hit`), and installed only if replaying it on that very packet gives
the slow path's answer byte for byte, so a hop never says anything the pipeline did not.

It is used only when the slow path would provably do the same:
  - the same entry point and source (pod port, or peer VTEP address) and the same header bytes
    before IP (MACs and ethertype; VXLAN header and inner MACs), so the source checks (MAC,
    IP against the port or the peer's subnet), bridging and the VNI check passed as before;
  - a plain IPv4 header (IHL 5, no fragment), its length within the frame, the L4 header
    whole; TTL > 1 when the hop routes; TCP without SYN, FIN or RST; or an IPv6 header
    followed at once by TCP, UDP or an ICMPv6 echo (no extension header), its payload within
    the frame, hop limit > 1 when the hop routes (`Hop6`: no header checksum, RFC 8200 §3;
    the upper-layer checksum takes the pseudo-header delta, RFC 1624);
  - the connection still live and `steady` in that direction (conntrack's own fast test: no
    state can change), so only the deadline moves, exactly as `Conntrack.established` does;
  - the routing inputs unchanged: `route_gen` (bumped by `Datapath.update` whenever pods,
    peers, MACs, the VNI or the host port change) equals the hop's. Policy and endpoints
    need no generation: a connection a new policy cuts is CUT (never steady), one whose UDP
    backend left is removed, and either way its conntrack entry, and with it the hop, no
    longer answers; a restored entry (a restarted agent) starts without hops.
Anything else (ARP, fragments, ICMP errors, TCP flag changes, NodePort replies, which depend
on the neighbour table, and packets marked for tracing, `slow_tos`) takes the full pipeline.
"""

from __future__ import annotations

import random
from collections import Counter

from emunet.datapath.actions import Action, Encap, Send
from emunet.datapath.affinity import Affinity
from emunet.datapath.conntrack import Conn, Conntrack, Rewrite
from emunet.datapath.ipv6pkt import PROTO_ICMP6
from emunet.datapath.reasons import DropReason
from emunet.datapath.tables import LocalPod, NodeTables
from emunet.packets import (
    ICMP_ECHO,
    ICMP_ECHO_REPLY,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    TTL_DEC_DELTA,
    concat,
)

_SFR = TCP_SYN | TCP_FIN | TCP_RST
_ZERO16 = b"\0\0"
# the L4 header bytes the slow path requires (packets._L4_MIN) and the hop's patch length: the
# bytes from the ethertype through the last one a NAT'ed packet changes (its L4 checksum)
_L4_MIN = {PROTO_TCP: 20, PROTO_UDP: 8, PROTO_ICMP: 8}
_PATCH = {PROTO_TCP: 40, PROTO_UDP: 30, PROTO_ICMP: 22}
_L4_CSUM = {PROTO_TCP: 38, PROTO_UDP: 28, PROTO_ICMP: 0}  # in the patch (ICMP: none, RFC 792)
_IP_ONLY = 14  # ethertype + IPv4 header through its checksum: a hop without NAT
FROM_POD, FROM_OVERLAY = 14, 22  # where the IP header starts in what each entry point gets
# IPv6 (RFC 8200 §3): the hop limit at 7, the addresses at 8-39, the upper layer at 40; in a
# hop's patch (from the ethertype on) 2 bytes later. A patch runs through the L4 checksum
# (TCP 16, UDP 6, ICMPv6 2 bytes into it, RFC 4443 §2.1), or through the hop limit
_L4_MIN6 = {PROTO_TCP: 20, PROTO_UDP: 8, PROTO_ICMP6: 8}
_L4_CSUM6 = {PROTO_TCP: 58, PROTO_UDP: 48, PROTO_ICMP6: 44}
_NAT6 = {PROTO_TCP: 36, PROTO_UDP: 36, PROTO_ICMP6: 32}  # addresses (+ ports) rewritten
_HLIM_ONLY6 = 10
ICMP6_ECHO, ICMP6_ECHO_REPLY = 128, 129


def _fold(d: int) -> int:
    while d >> 16:
        d = (d & 0xFFFF) + (d >> 16)
    return d


class Hop:
    """One direction of a connection, precomputed (see the module doc)."""

    __slots__ = ("gen", "src", "head", "prefix", "port", "dst_ip", "dst_port", "ttl", "ipd",
                 "nat", "l4c", "l4d", "udp", "patch", "counter")

    def __init__(self, gen: int, src: str, head: bytes, prefix: bytes, ttl: bool,
                 ipd: int, nat: bytes | None, proto: int, l4d: int) -> None:
        self.gen, self.src, self.head, self.prefix, self.ttl = gen, src, head, prefix, ttl
        self.ipd = _fold(ipd + (TTL_DEC_DELTA if ttl else 0))  # RFC 1624: deltas add up
        self.nat, self.l4d, self.udp = nat, _fold(l4d), proto == PROTO_UDP
        self.l4c = _L4_CSUM[proto] if nat is not None else 0
        self.patch = _PATCH[proto] if nat is not None else _IP_ONLY
        self.port = self.dst_ip = ""
        self.dst_port = 0
        self.counter = ""  # the routing counter the slow path moves for such a packet

    def emit(self, data: bytes, ip: int) -> bytes:
        """The packet `data` (IPv4 header at `ip`) as this hop sends it: the prefix, then the
        patched headers from the ethertype on, then the rest of `data`, joined in one copy."""
        base = ip - 2
        end = base + self.patch
        h = bytearray(data[base:end])
        if self.ttl:
            h[10] -= 1
        s = 0xFFFF - (h[12] << 8 | h[13]) + self.ipd  # RFC 1624 eqn. 3, both terms <= 0xFFFF
        s = 0xFFFF - ((s & 0xFFFF) + (s >> 16))
        h[12] = s >> 8
        h[13] = s & 0xFF
        nat = self.nat
        if nat is not None:
            h[14:14 + len(nat)] = nat
            off = self.l4c
            if off:
                old = h[off] << 8 | h[off + 1]
                if old or not self.udp:  # RFC 768: a zero UDP checksum was never computed
                    s = 0xFFFF - old + self.l4d
                    s = 0xFFFF - ((s & 0xFFFF) + (s >> 16))
                    if not s and self.udp:
                        s = 0xFFFF  # RFC 768: a computed zero is sent as all ones
                    h[off] = s >> 8
                    h[off + 1] = s & 0xFF
        return b"".join((self.prefix, h, memoryview(data)[end:]))


def fast_key(data: bytes, ip: int) -> bytes | None:
    """The conntrack key of the packet whose IPv4 header is at `ip`, if the fast path may take
    it (a plain header, not a fragment, the whole L4 header present, TCP/UDP or ICMP echo)."""
    if len(data) < ip + 28 or data[ip] != 0x45 or data[ip + 6] & 0x3F or data[ip + 7]:
        return None
    proto = data[ip + 9]
    lmin = _L4_MIN.get(proto)
    tot = data[ip + 2] << 8 | data[ip + 3]
    if lmin is None or tot < 20 + lmin or ip + tot > len(data):
        return None
    if proto != PROTO_ICMP:
        return concat(data[ip + 9:ip + 10], data[ip + 12:ip + 24])
    if data[ip + 20] != ICMP_ECHO and data[ip + 20] != ICMP_ECHO_REPLY:
        return None
    return b"".join((data[ip + 9:ip + 10], data[ip + 12:ip + 20], data[ip + 24:ip + 26], _ZERO16))


class Hop6(Hop):
    """`Hop` for an IPv6 packet: the hop limit instead of the TTL and no header checksum."""

    def __init__(self, gen: int, src: str, head: bytes, prefix: bytes, ttl: bool,
                 nat: bytes | None, proto: int, l4d: int) -> None:
        super().__init__(gen, src, head, prefix, ttl, 0, None, PROTO_UDP, 0)
        self.nat, self.l4d, self.udp = nat, _fold(l4d), proto == PROTO_UDP
        self.l4c = _L4_CSUM6[proto] if nat is not None else 0
        self.patch = _L4_CSUM6[proto] + 2 if nat is not None else _HLIM_ONLY6

    def emit(self, data: bytes, ip: int) -> bytes:
        base = ip - 2
        end = base + self.patch
        h = bytearray(data[base:end])
        if self.ttl:
            h[9] -= 1
        nat = self.nat
        if nat is not None:
            h[10:10 + len(nat)] = nat
            off = self.l4c
            s = 0xFFFF - (h[off] << 8 | h[off + 1]) + self.l4d
            s = 0xFFFF - ((s & 0xFFFF) + (s >> 16))
            if not s and self.udp:
                s = 0xFFFF  # RFC 8200 §8.1: UDP over IPv6 never sends a zero checksum
            h[off] = s >> 8
            h[off + 1] = s & 0xFF
        return b"".join((self.prefix, h, memoryview(data)[end:]))


def fast_key6(data: bytes, ip: int) -> bytes | None:
    """`fast_key` for the IPv6 packet whose header is at `ip` (ipv6pkt.tuple_key6's key): TCP,
    UDP or an ICMPv6 echo right behind the fixed header, the payload within the frame."""
    if len(data) < ip + 48 or data[ip] >> 4 != 6:
        return None
    nh = data[ip + 6]
    lmin = _L4_MIN6.get(nh)
    plen = data[ip + 4] << 8 | data[ip + 5]
    if lmin is None or plen < lmin or ip + 40 + plen > len(data):
        return None
    if nh != PROTO_ICMP6:
        return b"".join((data[ip + 6:ip + 7], data[ip + 8:ip + 44]))
    if data[ip + 40] != ICMP6_ECHO and data[ip + 40] != ICMP6_ECHO_REPLY:
        return None
    return b"".join((data[ip + 6:ip + 7], data[ip + 8:ip + 40], data[ip + 44:ip + 46], _ZERO16))


class FastPath:
    """Datapath's entry points for pod frames and VXLAN datagrams: the fast path first, the
    full pipeline (`_from_pod`, `_from_overlay`) for everything else, learning hops from it.

    It is also the root of Datapath's single line of ancestors (Datapath <- IPv6 <- Replies6
    <- Services <- Replies <- NodePort <- NodePort6 <- Fragments <- FastPath: mypyc compiles
    single inheritance only), so
    it declares the state Datapath.__init__ sets and the stages Datapath defines that the
    other ancestors call."""

    tables: NodeTables
    rng: random.Random
    ct: Conntrack
    affinity: Affinity
    frags: dict[bytes, tuple[Rewrite | None, float]]  # emunet.datapath.frags
    _c: Counter[str]
    _v: list[Action]
    _new: tuple[Conn, int] | None
    fastpath: bool
    route_gen: int
    slow_tos: int  # IPv4 TOS byte of packets kept off the fast path (emunet.observe); -1: none

    # ---- Datapath's own stages (emunet.datapath.pipeline) ---------------------------------------

    def _from_pod(self, frame: bytes, in_port: str, now: float) -> list[Action]:
        raise NotImplementedError

    def _from_overlay(self, payload: bytes, src_ip: str, now: float) -> list[Action]:
        raise NotImplementedError

    def _drop(self, reason: DropReason, detail: str = "", before: Action | None = None
              ) -> list[Action]:
        raise NotImplementedError

    def _track(self, f: bytearray, l4: int, end: int, proto: int, frag: bool, now: float,
               pod: LocalPod | None) -> list[Action] | None:
        raise NotImplementedError

    def _policy(self, f: bytearray, proto: int, dport: int, pod: LocalPod | None
                ) -> list[Action] | None:
        raise NotImplementedError

    def _check(self, src: bytes, dst: bytes, proto: int, dport: int, local_src: bool
               ) -> list[Action] | None:
        raise NotImplementedError

    def _route(self, f: bytearray) -> list[Action]:
        raise NotImplementedError

    def _verdicts(self, out: list[Action], now: float) -> list[Action]:
        raise NotImplementedError

    # ---- the entry points ---------------------------------------------------------------------

    def process(self, frame: bytes, in_port: str, now: float) -> list[Action]:
        """A frame from a pod veth (or the node's host port)."""
        if not self.fastpath:
            return self._from_pod(frame, in_port, now)
        hop = self._hop(frame, FROM_POD, in_port, now)
        if hop is not None:
            self._c[hop.counter] += 1
            if hop.port:
                return [Send(hop.port, hop.emit(frame, FROM_POD))]
            return [Encap(hop.dst_ip, hop.dst_port, hop.emit(frame, FROM_POD))]
        # `_learn` reads `ct.hit`, not this function: after `ct.hit = None` mypy narrows
        # `ct.hit` to None across the call, and mypyc compiles that narrowing into a type check
        self.ct.hit = None
        out = self._from_pod(frame, in_port, now)
        if len(out) == 1 and in_port in self.tables.pods_by_port:
            self._learn(frame, FROM_POD, in_port, out[0])
        return out

    def process_underlay(self, payload: bytes, src_ip: str, now: float) -> list[Action]:
        """A VXLAN datagram from a peer node (RFC 7348)."""
        if not self.fastpath:
            return self._from_overlay(payload, src_ip, now)
        hop = self._hop(payload, FROM_OVERLAY, src_ip, now)
        if hop is not None:
            c = self._c
            c["decap"] += 1
            c[hop.counter] += 1
            return [Send(hop.port, hop.emit(payload, FROM_OVERLAY))]
        self.ct.hit = None  # read by `_learn` only (see process)
        out = self._from_overlay(payload, src_ip, now)
        if len(out) == 1:
            self._learn(payload, FROM_OVERLAY, src_ip, out[0])
        return out

    def _hop(self, data: bytes, ip: int, src: str, now: float) -> Hop | None:
        """The hop of an established packet the fast path may take (module doc), its
        connection's deadline renewed as conntrack's own fast test does; else None."""
        if type(data) is not bytes or len(data) < ip + 28:
            return None
        if data[ip] >> 4 == 6:  # IPv6: the traffic class spans bytes 0-1 (RFC 8200 §3)
            if ((data[ip] & 0xF) << 4 | data[ip + 1] >> 4) == self.slow_tos:
                return None
            key = fast_key6(data, ip)
            hlim, nh, flags = ip + 7, ip + 6, ip + 53
        else:
            if data[ip + 1] == self.slow_tos:
                return None
            key = fast_key(data, ip)
            hlim, nh, flags = ip + 8, ip + 9, ip + 33  # TTL, protocol, TCP flags
        if key is None:
            return None
        hit = self.ct.table.get(key)
        if hit is None:
            return None
        conn, is_reply = hit
        if is_reply:
            hop, steady = conn.rhop, conn.rsteady
        else:
            hop, steady = conn.hop, conn.steady
        if hop is None or hop.gen != self.route_gen or hop.src != src or not steady \
                or conn.expires <= now or data[:ip] != hop.head \
                or (hop.ttl and data[hlim] <= 1) \
                or (data[nh] == PROTO_TCP and data[flags] & _SFR):
            return None
        conn.expires = now + steady
        return hop

    def _learn(self, data: bytes, ip: int, src: str, action: Action) -> None:
        """Leave on the connection the hop of the packet the slow path just forwarded as an
        established one (`ct.hit`), if replaying it gives the same answer (module doc)."""
        hit = self.ct.hit
        if hit is None:  # the packet was not an established one of a tracked connection
            return
        if type(data) is not bytes:
            return
        if data[ip] >> 4 == 6:
            self._learn6(data, ip, src, action)
            return
        key = fast_key(data, ip)
        entry = self.ct.table.get(key) if key is not None else None
        # the same connection and direction, not the same tuple object: compiled, a
        # tuple[Conn, bool] is unboxed and boxed again, so `entry is hit` would never hold
        conn, is_reply = hit
        if entry is None or entry[0] is not conn or entry[1] != is_reply:
            return
        t = type(action)
        if t is Send:
            out = action.frame  # type: ignore[union-attr]
        elif t is Encap and ip == FROM_POD:
            out = action.payload  # type: ignore[union-attr]
        else:
            return
        plen = len(out) - len(data) + ip - 2  # what replaced the bytes before the ethertype
        if plen < 0 or out[plen + 14:plen + 18] == self.tables.underlay_ip:
            return  # a NodePort reply: it depends on the neighbour table (datapath.nodeport)
        ttl = data[ip + 8] - out[plen + 10]
        if ttl not in (0, 1):
            return
        rw = conn.rev if is_reply else conn.fwd
        proto = data[ip + 9]
        nat = None if rw is None else \
            bytes(out[plen + 14:plen + (22 if proto == PROTO_ICMP else 26)])
        hop = Hop(self.route_gen, src, data[:ip], bytes(out[:plen]), ttl == 1,
                  rw.ip_delta if rw else 0, nat, proto, rw.l4_delta if rw else 0)
        self._install(hop, conn, is_reply, action, data, ip, out)

    def _learn6(self, data: bytes, ip: int, src: str, action: Action) -> None:
        """`_learn` for an IPv6 packet (`Hop6`)."""
        hit = self.ct.hit
        key = fast_key6(data, ip)
        entry = self.ct.table.get(key) if key is not None else None
        if hit is None or entry is None:
            return
        conn, is_reply = hit
        if entry[0] is not conn or entry[1] != is_reply:
            return
        t = type(action)
        if t is Send:
            out = action.frame  # type: ignore[union-attr]
        elif t is Encap and ip == FROM_POD:
            out = action.payload  # type: ignore[union-attr]
        else:
            return
        plen = len(out) - len(data) + ip - 2  # what replaced the bytes before the ethertype
        if plen < 0 or out[plen + 10:plen + 26] == self.tables.underlay_ip6:
            return  # a NodePort reply (datapath.nodeport6): the neighbour table decides
        ttl = data[ip + 7] - out[plen + 9]
        if ttl not in (0, 1):
            return
        rw = conn.rev if is_reply else conn.fwd
        proto = data[ip + 6]
        nat = None if rw is None else bytes(out[plen + 10:plen + 10 + _NAT6[proto]])
        l4d = 0 if rw is None else rw.ip_delta if proto == PROTO_ICMP6 else rw.l4_delta
        hop = Hop6(self.route_gen, src, data[:ip], bytes(out[:plen]), ttl == 1, nat, proto,
                   l4d)
        self._install(hop, conn, is_reply, action, data, ip, out)

    def _install(self, hop: Hop, conn: Conn, is_reply: bool, action: Action, data: bytes,
                 ip: int, out: bytes) -> None:
        """Give the hop its destination and leave it on the connection if replaying it on the
        packet gives the slow path's answer byte for byte."""
        if type(action) is Send:
            hop.port = action.port  # type: ignore[union-attr]
            # _route's counters (a decap also moves "decap", process_underlay counts it)
            hop.counter = "to_host" if hop.port == self.tables.host_port else "forwarded"
        else:
            hop.dst_ip, hop.dst_port = action.dst_ip, action.dst_port  # type: ignore[union-attr]
            hop.counter = "encap"
        if hop.emit(data, ip) != out:
            return
        if is_reply:
            conn.rhop = hop
        else:
            conn.hop = hop
