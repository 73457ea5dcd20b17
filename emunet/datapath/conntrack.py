"""Connection tracking with precomputed NAT rewrites (the fast path). Pure: `now` is injected.

A connection is tracked under two keys, its original and its reply tuple, as in Linux's
nf_conntrack. Each direction carries a `Rewrite` whose RFC 1624 checksum deltas are computed
once when the connection is created, so an established packet costs one dict lookup, a few
slice assignments and two checksum folds. Timeouts follow the Linux defaults
(net.netfilter.nf_conntrack_*_timeout*); the table is bounded with early drop, and can be
snapshotted so a restarted agent keeps established connections and their NAT (DESIGN.md §3).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from emunet.packets import (
    ETH_LEN,
    IPV4_OFF_CSUM,
    IPV4_OFF_DST,
    IPV4_OFF_SRC,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
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

# Linux defaults, seconds (Documentation/networking/nf_conntrack-sysctl.rst).
TCP_SYN_SENT = 120
TCP_ESTABLISHED = 432000
TCP_FIN_WAIT = 120  # fin_wait / time_wait
TCP_CLOSE = 10
UDP_UNREPLIED = 30
UDP_STREAM = 120
ICMP_TIMEOUT = 30

_SYN_ACK = TCP_SYN | TCP_ACK


@dataclass(frozen=True, slots=True)
class Rewrite:
    """The header changes for one direction of a NAT'ed connection, checksum deltas included."""

    src: bytes | None
    dst: bytes | None
    sport: bytes | None
    dport: bytes | None
    ip_delta: int  # RFC 1624 sum of ~m + m' over the IPv4 header words that change
    l4_delta: int  # the same for the TCP/UDP checksum (pseudo-header addresses + ports)

    @classmethod
    def between(cls, proto: int, old: tuple[bytes, bytes, bytes, bytes],
                new: tuple[bytes, bytes, bytes, bytes]) -> Rewrite | None:
        """The rewrite turning tuple `old` (src, dst, sport, dport) into `new`; None if equal."""
        if old == new or (proto == PROTO_ICMP and old[:2] == new[:2]):
            return None
        src, dst, sport, dport = (n if n != o else None for o, n in zip(old, new, strict=True))
        ip_delta = delta_bytes(old[0], new[0]) + delta_bytes(old[1], new[1])
        l4_delta = 0
        if proto in (PROTO_TCP, PROTO_UDP):  # ICMP has no pseudo-header (RFC 792)
            l4_delta = ip_delta + delta_bytes(old[2], new[2]) + delta_bytes(old[3], new[3])
        else:
            sport = dport = None  # an ICMP echo id is never rewritten here
        return cls(src, dst, sport, dport, ip_delta, l4_delta)

    def apply(self, f: bytearray, ip: int, l4: int, proto: int, end: int) -> None:
        """Rewrite the packet whose IPv4 header starts at `ip` and L4 header at `l4`.

        `end` bounds the L4 bytes present (ICMP errors quote truncated packets).
        """
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


class Conn:
    """One tracked connection: both keys, NAT rewrites per direction, state and deadline."""

    __slots__ = ("proto", "orig", "orig_key", "reply_key", "fwd", "rev", "replied", "closing",
                 "expires", "service", "backend", "json_parts")

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
        self.expires = 0.0
        self.service = service
        self.backend = backend
        self.json_parts: tuple[str, str] | None = None  # Conntrack.to_json's constant text

    def timeout(self, tcp_flags: int) -> float:
        if self.proto == PROTO_TCP:
            if tcp_flags & TCP_RST:
                return TCP_CLOSE
            if tcp_flags & TCP_FIN or self.closing:
                self.closing = True
                return TCP_FIN_WAIT
            return TCP_ESTABLISHED if self.replied else TCP_SYN_SENT
        if self.proto == PROTO_UDP:
            return UDP_STREAM if self.replied else UDP_UNREPLIED
        return ICMP_TIMEOUT


DEFAULT_MAX = 65536  # nf_conntrack_max's classic default; Cluster spec.conntrack.max sets it
_EARLY_DROP_SCAN = 1024  # connections looked at for a victim (bounds the cost of a full table)


class Conntrack:
    """The table: key -> (conn, is_reply). Expired entries vanish on lookup or `expire`.

    Bounded like Linux's: at `max_entries` connections a new one first evicts an old
    connection that never saw a reply or is closing (nf_conntrack's early_drop), so a SYN
    flood recycles its own half-open entries and never evicts established flows; when there
    is no such victim among those looked at, the new connection is refused (counted in
    `insert_failed`, Linux's "table full, dropping packet"). `version` changes with every add
    and remove, so the agent can snapshot the table when it changed (`to_records`); `inserts`
    counts the connections added, so a caller can tell that a packet opened one even when the
    same packet also removed one (a reused closing tuple, an expired entry, an eviction).
    """

    def __init__(self, max_entries: int = DEFAULT_MAX) -> None:
        self.table: dict[bytes, tuple[Conn, bool]] = {}
        self.max_entries = max_entries
        self.version = 0
        self.evicted = 0
        self.insert_failed = 0
        self.inserts = 0

    def __len__(self) -> int:
        return len(self.table) // 2

    def lookup(self, key: bytes, now: float) -> tuple[Conn, bool] | None:
        hit = self.table.get(key)
        if hit is not None and hit[0].expires <= now:
            self.remove(hit[0])
            return None
        return hit

    def add(self, conn: Conn, now: float, tcp_flags: int = 0) -> bool:
        """Track `conn`; False (not added) if its reply tuple clashes with a live entry or the
        table is full of connections that all saw replies."""
        for k in (conn.orig_key, conn.reply_key):
            if self.lookup(k, now) is not None:
                return False
        if len(self.table) >= 2 * self.max_entries and not self._early_drop(now):
            self.insert_failed += 1
            return False
        conn.expires = now + conn.timeout(tcp_flags)
        self.table[conn.orig_key] = (conn, False)
        self.table[conn.reply_key] = (conn, True)
        self.version += 1
        self.inserts += 1
        return True

    def _early_drop(self, now: float) -> bool:
        """Make room: evict an expired, unreplied or closing connection (Linux's early_drop
        and tcp_can_early_drop) among the oldest entries. The established ones looked at are
        moved to the back (a clock sweep), so the next call looks at others."""
        passed: list[Conn] = []
        victim = None
        for i, (conn, is_reply) in enumerate(self.table.values()):
            if i >= 2 * _EARLY_DROP_SCAN:
                break
            if is_reply:
                continue
            if conn.expires <= now or not conn.replied or conn.closing:
                victim = conn
                break
            passed.append(conn)
        for conn in passed:  # to the back of the (insertion-ordered) table
            for k in (conn.orig_key, conn.reply_key):
                self.table[k] = self.table.pop(k)
        if victim is None:
            return False
        self.remove(victim)
        self.evicted += 1
        return True

    def established(self, key: bytes, f: bytearray, l4: int, end: int, proto: int,
                    tcp_flags: int, now: float) -> bool:
        """The fast path every stage shares: True when `key` (the frame's tuple) is a live
        connection's; `f` then carries that direction's precomputed NAT rewrite and the entry a
        new deadline. False: the first packet of a new connection, for the caller to decide
        (and `add`).

        A new SYN (no ACK) on a closing connection's tuple means the client reused its port
        while our entry lingers: Linux conntrack destroys the old entry and tracks the SYN as a
        new connection (nf_conntrack_proto_tcp, TIME_WAIT/CLOSE + SYN), so it is load-balanced
        afresh and never sent to a backend that has since gone.
        """
        hit = self.lookup(key, now)
        if hit is None:
            return False
        conn, is_reply = hit
        if conn.closing and not is_reply and tcp_flags & _SYN_ACK == TCP_SYN:
            self.remove(conn)
            return False
        rw = conn.rev if is_reply else conn.fwd
        if rw is not None:
            rw.apply(f, ETH_LEN, l4, proto, end)
        if is_reply:
            conn.replied = True
        conn.expires = now + conn.timeout(tcp_flags)
        return True

    def remove(self, conn: Conn) -> None:
        for k in (conn.orig_key, conn.reply_key):
            if self.table.get(k, (None,))[0] is conn:
                del self.table[k]
                self.version += 1

    def expire(self, now: float) -> int:
        """Drop every expired connection; returns how many went."""
        dead = {id(c): c for c, _ in self.table.values() if c.expires <= now}
        for c in dead.values():
            self.remove(c)
        return len(dead)

    def conns(self) -> list[Conn]:
        return [c for c, is_reply in self.table.values() if not is_reply]

    # ---- snapshots: what a restarted agent needs to keep established flows (and their NAT) --

    def to_records(self, now: float, closing: bool = True) -> list[list]:
        """JSON-able records: the two tuples (the rewrites derive from them), the service and
        backend (the NAT decision), state flags and the time left. closing=False leaves out
        connections that saw a FIN or RST (see emunet.agent.ctstore)."""
        out = []
        for c in self.conns():
            if c.closing and not closing:
                continue
            out.append([c.proto, b"".join(c.orig).hex(), c.reply_key[1:].hex(),
                        c.replied, c.closing, round(max(0.0, c.expires - now), 3), c.service,
                        c.backend[0].hex() if c.backend else None,
                        c.backend[1] if c.backend else None])
        return out

    def to_json(self, now: float, closing: bool = True) -> str:
        """`json.dumps({"version": 1, "conns": to_records(now, closing)}, separators=(",",
        ":"))`, text for text, with each connection's constant part formatted once: the agent
        writes a snapshot up to 10 times a second (emunet.agent.ctstore), 5,000 connections measured
        20 ms with json.dumps."""
        out = []
        for c in self.conns():
            if c.closing and not closing:
                continue
            parts = c.json_parts
            if parts is None:
                sep = (",", ":")
                head = json.dumps([c.proto, b"".join(c.orig).hex(), c.reply_key[1:].hex()],
                                  separators=sep)
                tail = json.dumps([c.service, c.backend[0].hex() if c.backend else None,
                                   c.backend[1] if c.backend else None], separators=sep)
                parts = c.json_parts = (head[:-1] + ",", "," + tail[1:])
            left = round(max(0.0, c.expires - now), 3)
            out.append(f"{parts[0]}{'true' if c.replied else 'false'},"
                       f"{'true' if c.closing else 'false'},{float(left)!r}{parts[1]}")
        return '{"version":1,"conns":[' + ",".join(out) + "]}"

    def from_records(self, records: list[list], now: float) -> int:
        """Load records written by `to_records` (by a previous agent); returns how many.

        The time left is kept, so a flow idle before the crash expires on schedule; a record
        that does not parse is skipped (a snapshot is a hint, never a reason to fail).
        """
        n = 0
        for r in records:
            try:
                proto, orig, reply, replied, closing, left, service, bip, bport = r
                o, rp = bytes.fromhex(orig), bytes.fromhex(reply)
                if len(o) != 12 or len(rp) != 12:
                    continue
                conn = Conn(int(proto), (o[0:4], o[4:8], o[8:10], o[10:12]),
                            (rp[0:4], rp[4:8], rp[8:10], rp[10:12]), str(service),
                            (bytes.fromhex(bip), int(bport)) if bip else None)
            except (ValueError, TypeError):
                continue
            conn.replied, conn.closing = bool(replied), bool(closing)
            if self.add(conn, now):
                conn.expires = now + float(left)
                n += 1
        return n
