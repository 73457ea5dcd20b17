"""A tracked connection (`Conn`) and its precomputed NAT rewrite (`Rewrite`). Pure.

Each direction carries a `Rewrite` whose RFC 1624 checksum deltas are computed once when the
connection is created; `Conn.advance` is the state machine of the packets off the fast path
(TCP: emunet.datapath.cttcp, Linux's nf_conntrack_proto_tcp; UDP: nf_conntrack_proto_udp).
The table holding them is emunet.datapath.conntrack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emunet.datapath import cttcp
from emunet.packets import (
    ICMP6_OFF_CSUM,
    IP6_OFF_DST,
    IP6_OFF_SRC,
    IPV4_OFF_CSUM,
    IPV4_OFF_DST,
    IPV4_OFF_SRC,
    PROTO_ICMP,
    PROTO_ICMP6,
    PROTO_TCP,
    PROTO_UDP,
    TCP_FIN,
    TCP_OFF_CSUM,
    TCP_RST,
    TCP_SYN,
    U16,
    UDP_OFF_CSUM,
    apply_delta,
    delta_bytes,
    make_key,
)

# Linux defaults, seconds (Documentation/networking/nf_conntrack-sysctl.rst); TCP's per
# state in emunet.datapath.cttcp
TCP_SYN_SENT = cttcp.TIMEOUTS[cttcp.SYN_SENT]
TCP_ESTABLISHED = cttcp.TIMEOUTS[cttcp.ESTABLISHED]
TCP_FIN_WAIT = cttcp.TIMEOUTS[cttcp.FIN_WAIT]
TCP_CLOSE = cttcp.TIMEOUTS[cttcp.CLOSE]
UDP_UNREPLIED = 30.0
UDP_STREAM = 120.0
UDP_STREAM_AFTER = 2.0  # nf_conntrack_proto_udp.c: stream_ts = now + 2 s
ICMP_TIMEOUT = 30.0

_SFR = TCP_SYN | TCP_FIN | TCP_RST  # flags that may move a TCP connection's state


@dataclass(frozen=True, slots=True)
class Rewrite:
    """The header changes for one direction of a NAT'ed connection, checksum deltas included."""

    src: bytes | None
    dst: bytes | None
    sport: bytes | None
    dport: bytes | None
    ip_delta: int  # RFC 1624 sum of ~m + m' over the IPv4 header words that change
    l4_delta: int  # the same for the TCP/UDP checksum (pseudo-header addresses + ports)
    v6: bool = False  # 16-byte addresses: an IPv6 packet's rewrite (`apply`)

    @classmethod
    def between(cls, proto: int, old: tuple[bytes, bytes, bytes, bytes],
                new: tuple[bytes, bytes, bytes, bytes]) -> Rewrite | None:
        """The rewrite turning tuple `old` (src, dst, sport, dport) into `new`; None if equal."""
        if old == new or (proto in (PROTO_ICMP, PROTO_ICMP6) and old[:2] == new[:2]):
            return None
        src, dst, sport, dport = (n if n != o else None for o, n in zip(old, new, strict=True))
        ip_delta = delta_bytes(old[0], new[0]) + delta_bytes(old[1], new[1])
        l4_delta = 0
        if proto in (PROTO_TCP, PROTO_UDP):  # ICMP has no pseudo-header (RFC 792)
            l4_delta = ip_delta + delta_bytes(old[2], new[2]) + delta_bytes(old[3], new[3])
        else:
            sport = dport = None  # an ICMP echo id is never rewritten here
        return cls(src, dst, sport, dport, ip_delta, l4_delta, len(old[0]) == 16)

    def apply(self, f: bytearray, ip: int, l4: int, proto: int, end: int) -> None:
        """Rewrite the packet whose IPv4 header starts at `ip` and L4 header at `l4`.

        `end` bounds the L4 bytes present (ICMP errors quote truncated packets). An IPv6
        connection's rewrite (`v6`) has its own (`_apply6`): one test here, so that the
        conntrack fast path (`Conntrack.established`) serves both families.
        """
        if self.v6:
            self._apply6(f, ip, l4, proto, end)
            return
        if self.src is not None:
            f[ip + IPV4_OFF_SRC:ip + IPV4_OFF_SRC + 4] = self.src
        if self.dst is not None:
            f[ip + IPV4_OFF_DST:ip + IPV4_OFF_DST + 4] = self.dst
        U16.pack_into(f, ip + IPV4_OFF_CSUM,
                      apply_delta(U16.unpack_from(f, ip + IPV4_OFF_CSUM)[0], self.ip_delta))
        if proto == PROTO_ICMP:
            return
        # RFC 9293 §3.1, RFC 768: the source port at l4, the destination port at l4 + 2
        # (packets.L4_OFF_*; literal here, the established fast path pays for every lookup)
        if self.sport is not None and l4 + 2 <= end:
            f[l4:l4 + 2] = self.sport
        if self.dport is not None and l4 + 4 <= end:
            f[l4 + 2:l4 + 4] = self.dport
        off = l4 + (TCP_OFF_CSUM if proto == PROTO_TCP else UDP_OFF_CSUM)
        if off + 2 > end:
            return
        old = U16.unpack_from(f, off)[0]
        if proto == PROTO_UDP and old == 0:
            return  # RFC 768: zero means the sender computed no checksum; keep it so
        new = apply_delta(old, self.l4_delta)
        U16.pack_into(f, off, 0xFFFF if (proto == PROTO_UDP and new == 0) else new)

    def _apply6(self, f: bytearray, ip: int, l4: int, proto: int, end: int) -> None:
        """`apply` for the IPv6 packet whose header starts at `ip`: IPv6 has no header
        checksum (RFC 8200 §3), so only the addresses, the ports and the upper-layer checksum
        change, by the RFC 1624 delta over the pseudo-header and ports (`l4_delta`; for ICMPv6,
        whose checksum also covers the pseudo-header (RFC 4443 §2.3), the address part)."""
        if self.src is not None:
            f[ip + IP6_OFF_SRC:ip + IP6_OFF_SRC + 16] = self.src
        if self.dst is not None:
            f[ip + IP6_OFF_DST:ip + IP6_OFF_DST + 16] = self.dst
        if proto == PROTO_ICMP6:
            off, delta = l4 + ICMP6_OFF_CSUM, self.ip_delta
        else:
            if self.sport is not None and l4 + 2 <= end:
                f[l4:l4 + 2] = self.sport
            if self.dport is not None and l4 + 4 <= end:
                f[l4 + 2:l4 + 4] = self.dport
            off = l4 + (TCP_OFF_CSUM if proto == PROTO_TCP else UDP_OFF_CSUM)
            delta = self.l4_delta
        if off + 2 > end:
            return  # a truncated quote in an ICMPv6 error
        new = apply_delta(U16.unpack_from(f, off)[0], delta)
        U16.pack_into(f, off, 0xFFFF if (proto == PROTO_UDP and new == 0) else new)


class Conn:
    """One tracked connection: both keys, NAT rewrites per direction, state and deadline.

    `state` is the TCP state (emunet.datapath.cttcp, nf_conntrack's numbers; 0 for UDP and
    ICMP), `replied` Linux's IPS_SEEN_REPLY, `assured` IPS_ASSURED (TCP: the handshake
    completed; UDP: a stream, answered and still active 2 s on), `closing` a TCP state from
    FIN_WAIT on. `steady` (`rsteady` for the reply direction) is the timeout a packet of that
    direction renews without any state change (an assured ESTABLISHED TCP connection or UDP
    stream; the original direction of a picked-up flow or of unanswered UDP), 0 when the packet
    may move the state: the fast path's one test. `hop` and `rhop` are the per-direction
    forwarding decisions of emunet.datapath.fastpath.
    """

    __slots__ = ("proto", "orig", "orig_key", "reply_key", "fwd", "rev", "replied", "closing",
                 "expires", "service", "backend", "json_parts", "state", "assured", "steady",
                 "rsteady", "born", "hop", "rhop", "bucket")

    def __init__(self, proto: int, orig: tuple[bytes, bytes, bytes, bytes],
                 reply: tuple[bytes, bytes, bytes, bytes], service: str = "",
                 backend: tuple[bytes, int] | None = None) -> None:
        """`orig` is the tuple as sent by the initiator; `reply` the tuple its peer answers with.

        For a DNAT'ed flow client->ClusterIP:port, reply is backend:bport->client (or ->gateway
        when hairpinned); the rewrites are derived from the two.
        """
        self.proto = proto
        self.orig = orig
        rsrc, rdst, rsport, rdport = reply
        self.orig_key = make_key(proto, *orig[:2], *orig[2:])
        self.reply_key = make_key(proto, rsrc, rdst, rsport, rdport)
        # what the original direction looks like once NAT'ed: the mirror of the reply tuple
        nat_orig = (rdst, rsrc, rdport, rsport)
        mirrored_orig = (orig[1], orig[0], orig[3], orig[2])
        self.fwd = Rewrite.between(proto, orig, nat_orig)
        self.rev = Rewrite.between(proto, reply, mirrored_orig)
        self.replied = False
        self.closing = False
        self.assured = False
        self.state = 0
        self.steady = self.rsteady = 0.0
        self.expires = 0.0
        self.born = 0.0
        self.service = service
        self.backend = backend
        self.json_parts: tuple[str, str] | None = None  # Conntrack.to_json's constant text
        # each direction's precomputed forwarding (emunet.datapath.fastpath.Hop), learnt from
        # the pipeline; never snapshotted: a restored connection learns them again
        self.hop: Any = None
        self.rhop: Any = None
        self.bucket = 0  # its expiry bucket in Conntrack.wheel (0: none yet)

    def start(self, tcp_flags: int, now: float) -> None:
        """The state and deadline its first packet gives a new connection (tcp_new)."""
        self.born = now
        if self.proto == PROTO_TCP:
            state = self.state = cttcp.first_state(tcp_flags)
            if state == cttcp.ESTABLISHED:  # picked up: see settle (inlined, a new flow's cost)
                self.steady = self.expires = cttcp.UNACK
                self.expires += now
            else:
                self.closing = state == cttcp.CLOSE
                self.expires = now + cttcp.TIMEOUTS[state]
        else:
            self.expires = now + (UDP_UNREPLIED if self.proto == PROTO_UDP else ICMP_TIMEOUT)
            self.settle()

    def set_state(self, state: int) -> None:
        self.state = state
        self.closing = state in cttcp.CLOSING
        self.settle()

    def settle(self) -> None:
        """Derive `steady`/`rsteady` from the state (see the class doc)."""
        proto = self.proto
        if self.state == cttcp.CUT:
            s = r = 0.0
        elif proto == PROTO_TCP:
            if self.state != cttcp.ESTABLISHED:
                s = r = 0.0
            elif self.assured:
                s = r = TCP_ESTABLISHED
            else:  # picked up, unanswered: its peer's first word assures it (advance)
                s, r = cttcp.UNACK, 0.0
        elif proto == PROTO_UDP:
            if self.assured:
                s = r = UDP_STREAM
            elif self.replied:
                s = r = 0.0  # a stream yet? advance looks at the time
            else:
                s, r = UDP_UNREPLIED, 0.0
        else:
            s, r = ICMP_TIMEOUT, (ICMP_TIMEOUT if self.replied else 0.0)
        self.steady, self.rsteady = s, r

    def advance(self, is_reply: bool, tcp_flags: int, now: float) -> int:
        """A packet of this connection off the fast path: move the state, renew the deadline.

        Returns PASS, KILL (pass it, then forget the connection) or NEW (the packet starts
        a new connection on this tuple: the caller removes this one or, CUT, polices it).
        """
        if self.state == cttcp.CUT:
            self.expires = now + cttcp.TIMEOUTS[cttcp.CUT]
            return NEW
        proto = self.proto
        if proto != PROTO_TCP:
            if is_reply:
                self.replied = True
            if proto != PROTO_UDP:
                self.expires = now + ICMP_TIMEOUT
            elif not self.replied:
                self.expires = now + UDP_UNREPLIED
            else:
                # nf_conntrack_proto_udp.c: seen both ways and still active after 2 s (its
                # stream_ts): a stream, assured, udp_timeout_stream; before that 30 s
                if not self.assured and now >= self.born + UDP_STREAM_AFTER:
                    self.assured = True
                self.expires = now + (UDP_STREAM if self.assured else UDP_UNREPLIED)
            self.settle()
            return PASS
        old = self.state
        i = cttcp.index(tcp_flags)
        new = cttcp.TABLE[is_reply][i][old]
        if new == cttcp.SYN_SENT and old >= cttcp.TIME_WAIT:
            return NEW  # a SYN reopening a closed tuple: a new connection (RFC 9293 §3.6.1)
        if new == cttcp.IGNORE:
            return PASS  # sIG/sIV: neither the state nor the timeout moves
        if not self.replied and i == cttcp.RST_SET:
            # "If only reply is a RST, we can consider ourselves not to have an established
            # connection" (nf_conntrack_tcp_packet): a refused connect leaves nothing behind
            return KILL
        if is_reply:
            self.replied = True
        if self.replied and not self.assured and new == cttcp.ESTABLISHED and \
                old in (cttcp.SYN_RECV, cttcp.ESTABLISHED):
            self.assured = True  # the ACK of the SYN-ACK, or an answer to a picked-up flow
        self.set_state(new)
        if i == cttcp.SYN_SET and old == cttcp.SYN_SENT:
            return PASS  # a retransmitted SYN does not renew the timeout
        if new == cttcp.ESTABLISHED and not self.assured:
            self.expires = now + cttcp.UNACK
        else:
            self.expires = now + cttcp.TIMEOUTS[new]
        return PASS


PASS, KILL, NEW = 1, 2, 0  # Conn.advance's answers
