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

from emunet.datapath import cttcp
from emunet.datapath.ctconn import (  # noqa: F401  (re-exported: the datapath's one door)
    ICMP_TIMEOUT,
    KILL,
    NEW,
    PASS,
    TCP_CLOSE,
    TCP_ESTABLISHED,
    TCP_FIN_WAIT,
    TCP_SYN_SENT,
    UDP_STREAM,
    UDP_STREAM_AFTER,
    UDP_UNREPLIED,
    Conn,
    Rewrite,
)
from emunet.datapath.ipv6pkt import PROTO_ICMP6
from emunet.packets import (
    ETH_LEN,
    KEY_DST,
    KEY_SRC,
    PROTO_TCP,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
)

_SFR = TCP_SYN | TCP_FIN | TCP_RST  # flags that may move a TCP connection's state


DEFAULT_MAX = 65536  # nf_conntrack_max's classic default; Cluster spec.conntrack.max sets it
_EARLY_DROP_SCAN = 1024  # connections looked at for a victim (bounds the cost of a full table)
OK, CLASH, FULL = 0, 1, 2  # Conntrack.admit's answers


class Conntrack:
    """The table: key -> (conn, is_reply). Expired entries vanish on lookup or `expire`.

    A new connection is admitted (`admit`: its tuples are free, there is room) when the
    pipeline decides on it, and inserted (`confirm`) only when its packet leaves, as Linux
    confirms at the last hook (__nf_conntrack_confirm): a packet dropped later (no route,
    policy) leaves no entry. Bounded like Linux's: at `max_entries` connections a new one first
    evicts an unassured or closing connection (early_drop, tcp_can_early_drop), so a SYN flood
    recycles its own half-open entries and never evicts established flows; when there is no
    such victim among those looked at, the new connection is refused (counted in
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
        # the entry `established` last found (emunet.datapath.fastpath learns its hops from it)
        self.hit: tuple[Conn, bool] | None = None
        # Expiry without walking the table (issue 16: a walk of 80k entries each second, and
        # a snapshot's walk ten times a second, stalled the packet loop for milliseconds). A
        # connection is filed in the one-second bucket of its deadline when it is confirmed
        # and whenever the slow path moves its deadline; the fast path only pushes deadlines
        # later, so `expire` re-files a connection it finds alive (a lazy timer wheel).
        self.wheel: dict[int, dict[Conn, None]] = {}
        self.swept = 0  # buckets below this one are swept
        # the assured, not closing, not CUT connections: what a snapshot keeps (ctstore)
        self.live: dict[Conn, None] = {}

    def __len__(self) -> int:
        return len(self.table) // 2

    def lookup(self, key: bytes, now: float) -> tuple[Conn, bool] | None:
        hit = self.table.get(key)
        if hit is not None and hit[0].expires <= now:
            self.remove(hit[0])
            return None
        return hit

    def admit(self, conn: Conn, now: float) -> int:
        """May `conn` be tracked? OK; CLASH: one of its tuples is a live connection's (NAT
        picks another, nf_nat_used_tuple); FULL: no room, even after early drop."""
        table = self.table
        for k in (conn.orig_key, conn.reply_key):
            hit = table.get(k)
            if hit is not None:
                if hit[0].expires > now:
                    return CLASH
                self.remove(hit[0])  # expired: gone, as `lookup` would
        if len(self.table) >= 2 * self.max_entries and not self._early_drop(now):
            self.insert_failed += 1
            return FULL
        return OK

    def confirm(self, conn: Conn, now: float, tcp_flags: int = 0) -> None:
        """Insert an admitted connection: its first packet has left."""
        conn.start(tcp_flags, now)
        self.table[conn.orig_key] = (conn, False)
        self.table[conn.reply_key] = (conn, True)
        self.version += 1
        self.inserts += 1
        self._refile(conn)

    def _refile(self, conn: Conn) -> None:
        """`conn`'s deadline or state moved in the slow path: its bucket, its place in `live`."""
        e = conn.expires
        b = int(e)
        if b < e:
            b += 1  # the bucket is the deadline's second rounded up
        if b != conn.bucket:
            old = self.wheel.get(conn.bucket)
            if old is not None:
                old.pop(conn, None)
                if not old:
                    del self.wheel[conn.bucket]
            conn.bucket = b
            d = self.wheel.get(b)
            if d is None:
                d = self.wheel[b] = {}
            d[conn] = None
        if conn.assured and not conn.closing and conn.state != cttcp.CUT:
            self.live[conn] = None
        else:
            self.live.pop(conn, None)

    def add(self, conn: Conn, now: float, tcp_flags: int = 0) -> bool:
        """admit + confirm at once; False (not added) if its tuples clash or the table is full."""
        if self.admit(conn, now) != OK:
            return False
        self.confirm(conn, now, tcp_flags)
        return True

    def _early_drop(self, now: float) -> bool:
        """Make room: evict an expired, unassured or closing connection (Linux's early_drop
        and tcp_can_early_drop) among the oldest entries. The assured ones looked at are
        moved to the back (a clock sweep), so the next call looks at others."""
        passed: list[Conn] = []
        victim = None
        for i, (conn, is_reply) in enumerate(self.table.values()):
            if i >= 2 * _EARLY_DROP_SCAN:
                break
            if is_reply:
                continue
            if conn.expires <= now or not conn.assured or conn.closing:
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
        (and `admit`).

        An assured ESTABLISHED connection (or UDP stream) costs one test (`Conn.steady`): no
        SYN, FIN or RST keeps it where it is. Anything else goes through `Conn.advance` (the
        state machine).
        A new SYN on a TIME_WAIT/CLOSE connection's tuple means the client reused its port
        while our entry lingers: Linux conntrack destroys the old entry and tracks the SYN as a
        new connection (nf_conntrack_proto_tcp, TIME_WAIT/CLOSE + SYN), so it is load-balanced
        afresh and never sent to a backend that has since gone. A CUT connection (denied by a
        newer policy) stays as a tombstone and its packets are new ones, to be policed.
        """
        hit = self.table.get(key)
        if hit is None:
            return False
        conn, is_reply = hit
        if conn.expires <= now:
            self.remove(conn)
            return False
        steady = conn.rsteady if is_reply else conn.steady
        if steady and not tcp_flags & _SFR:
            conn.expires = now + steady
            rw = conn.rev if is_reply else conn.fwd
            if rw is not None:
                rw.apply(f, ETH_LEN, l4, proto, end)
            self.hit = hit
            return True
        assured = conn.assured
        verdict = conn.advance(is_reply, tcp_flags, now)
        if conn.assured != assured:
            # now worth keeping across an agent restart: the next snapshot (SAVE_INTERVAL, not
            # REFRESH_INTERVAL) must hold it, as emunet.agent.ctstore promises
            self.version += 1
        if verdict == NEW:
            if conn.state != cttcp.CUT:
                self.remove(conn)
            return False
        rw = conn.rev if is_reply else conn.fwd
        if rw is not None:
            rw.apply(f, ETH_LEN, l4, proto, end)
        if verdict == KILL:
            self.remove(conn)
        else:
            self._refile(conn)
        self.hit = hit
        return True

    def remove(self, conn: Conn) -> None:
        for k in (conn.orig_key, conn.reply_key):
            if self.table.get(k, (None,))[0] is conn:
                del self.table[k]
                self.version += 1
        d = self.wheel.get(conn.bucket)
        if d is not None:
            d.pop(conn, None)
            if not d:
                del self.wheel[conn.bucket]
        self.live.pop(conn, None)

    def expire(self, now: float) -> int:
        """Drop every connection expired by `now`; returns how many went. Looks only at the
        buckets due (deadlines up to `now` rounded up: the last one is looked at again next
        time); a connection the fast path kept alive moves on to its new deadline's bucket."""
        end = int(now)
        if end < now:
            end += 1
        wheel = self.wheel
        due = (range(self.swept, end + 1) if 0 <= end - self.swept <= 64
               else sorted(b for b in wheel if b <= end))
        self.swept = end
        n = 0
        for b in due:
            d = wheel.pop(b, None)
            if d is None:
                continue
            for c in d:
                c.bucket = 0
                if c.expires <= now:
                    if self.table.get(c.orig_key, (None,))[0] is c:
                        n += 1
                    self.remove(c)
                else:
                    self._refile(c)
        return n

    def conns(self) -> list[Conn]:
        return [c for c, is_reply in self.table.values() if not is_reply]

    def flush_ips(self, ips: set[bytes] | frozenset[bytes]) -> int:
        """Forget every connection naming one of `ips` in either tuple, either direction (an
        IP whose pod went away or changed: Cilium scrubs an endpoint's IP from its CT, so a
        new owner of the address never inherits the old one's flows). Returns how many."""
        if not ips:
            return 0
        gone = [c for c in self.conns()
                if c.orig[0] in ips or c.orig[1] in ips
                or c.reply_key[KEY_SRC] in ips or c.reply_key[KEY_DST] in ips]
        for c in gone:
            self.remove(c)
        return len(gone)

    def cut(self, conn: Conn, now: float) -> None:
        """A connection a new policy denies: it keeps its tuples (so neither side's next
        packet is picked up as a new, unpoliced flow) but every packet is policed anew."""
        conn.set_state(cttcp.CUT)
        conn.expires = now + cttcp.TIMEOUTS[cttcp.CUT]
        self.version += 1
        self._refile(conn)

    # ---- snapshots: what a restarted agent needs to keep established flows (and their NAT) --

    def _kept(self, closing: bool, assured_only: bool) -> list[Conn]:
        # the agent's snapshot (closing=False, assured_only=True) is `live`, kept as they change
        return [c for c in (self.live if assured_only and not closing else self.conns())
                if (closing or not c.closing) and (c.assured or not assured_only)
                and c.state != cttcp.CUT]

    def to_records(self, now: float, closing: bool = True, assured_only: bool = False
                   ) -> list[list]:
        """JSON-able records: the two tuples (the rewrites derive from them), the service and
        backend (the NAT decision), state flags, the time left, the TCP state and assured.
        closing=False leaves out connections that saw a FIN or RST, assured_only=True the
        unassured ones (see emunet.agent.ctstore); CUT tombstones are never written."""
        out = []
        for c in self._kept(closing, assured_only):
            out.append([c.proto, b"".join(c.orig).hex(), c.reply_key[1:].hex(),
                        c.replied, c.closing, round(max(0.0, c.expires - now), 3), c.service,
                        c.backend[0].hex() if c.backend else None,
                        c.backend[1] if c.backend else None, c.state, c.assured])
        return out

    def to_json(self, now: float, closing: bool = True, assured_only: bool = False) -> str:
        """`json.dumps({"version": 1, "conns": to_records(now, closing, assured_only)},
        separators=(",", ":"))`, text for text, with each connection's constant part formatted
        once: the agent writes a snapshot up to 10 times a second (emunet.agent.ctstore),
        5,000 connections measured 20 ms with json.dumps."""
        out = []
        for c in self._kept(closing, assured_only):
            parts = c.json_parts
            if parts is None:
                sep = (",", ":")
                head = json.dumps([c.proto, b"".join(c.orig).hex(), c.reply_key[1:].hex()],
                                  separators=sep)
                tail = json.dumps([c.service, c.backend[0].hex() if c.backend else None,
                                   c.backend[1] if c.backend else None], separators=sep)
                parts = c.json_parts = (head[:-1] + ",", "," + tail[1:-1] + ",")
            left = round(max(0.0, c.expires - now), 3)
            out.append(f"{parts[0]}{'true' if c.replied else 'false'},"
                       f"{'true' if c.closing else 'false'},{float(left)!r}{parts[1]}"
                       f"{c.state},{'true' if c.assured else 'false'}]")
        return '{"version":1,"conns":[' + ",".join(out) + "]}"

    def from_records(self, records: list[list], now: float) -> int:
        """Load records written by `to_records` (by a previous agent); returns how many.

        The time left is kept, so a flow idle before the crash expires on schedule; a record
        that does not parse is skipped (a snapshot is a hint, never a reason to fail). Records
        of an older agent (9 fields, no TCP state) count as assured ESTABLISHED when replied.
        """
        n = 0
        for r in records:
            try:
                proto, orig, reply, replied, closing, left, service, bip, bport = r[:9]
                state, assured = (int(r[9]), bool(r[10])) if len(r) == 11 else (
                    (cttcp.TIME_WAIT if closing else cttcp.ESTABLISHED) if replied
                    else cttcp.SYN_SENT, bool(replied))
                o, rp = bytes.fromhex(orig), bytes.fromhex(reply)
                # 4 + 2 addresses: 12 bytes for IPv4, 36 for IPv6 (dual-stack)
                if len(o) not in (12, 36) or len(rp) != len(o) or not 0 <= state < cttcp.CUT:
                    continue
                a = (len(o) - 4) // 2
                conn = Conn(int(proto), (o[:a], o[a:2 * a], o[2 * a:2 * a + 2], o[2 * a + 2:]),
                            (rp[:a], rp[a:2 * a], rp[2 * a:2 * a + 2], rp[2 * a + 2:]),
                            str(service), (bytes.fromhex(bip), int(bport)) if bip else None)
                if conn.proto == PROTO_ICMP6:
                    conn.fwd = conn.rev = None  # as emunet.datapath.ipv6 tracks an echo
                left = float(left)
            except (ValueError, TypeError):
                continue
            if not self.add(conn, now):
                continue
            conn.replied, conn.assured = bool(replied), assured
            conn.set_state(state if conn.proto == PROTO_TCP else 0)
            conn.born = now - UDP_STREAM_AFTER if assured else now
            conn.expires = now + left
            self._refile(conn)
            n += 1
        return n
