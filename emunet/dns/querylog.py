"""DNS query/answer events: the responder's half of `emunet observe --protocol dns`.

Cost model: the responder answers tens of thousands of queries a second, so the hot path only
keeps a reference to the query and reply bytes it already has (one tuple append, no parsing);
`flush`, run by the server every `TICK` seconds off the hot path, decodes what was kept into two
records per query (the question, then the answer), the shape `emunet.observe.hubble.l7_flow`
renders as Hubble `l7.dns` flows, and appends them in one write to `<run dir>/dns-events.jsonl`,
the same size-capped ring as the nodes' flow logs (`emunet.observe.flowlog`: 4 MiB + `.1`).
At most `PER_TICK` queries are kept per tick (200 a second): a flood is counted
(`dns_events_suppressed` in `emunet status`), not described, like the agents' event budget, so
memory and decoding time are bounded whatever the query rate (measured: ~30 µs to describe a
query, under 1 % of the responder's CPU at the budget; `bench/dns.py`). Decoded answers are
memoised by reply bytes (after the ID) because the same few answers repeat, as in the
responder's own wire cache.

Record fields (besides time, node, type "l7-dns", verdict, src/dst {ip, port, pod}):
the question `query` (with the trailing dot, as Hubble prints it), `qtype`, `id`, `proto`;
answers add `response: true`, `rcode` (name), `rcode_num`, `ips`, `ttl` (the smallest answer
TTL, 0 without answers), `cnames`, `rrtypes`.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any

from emunet.dns.wire import AAAA, CNAME, HEADER, QFIXED, RCODE_NAMES, RRFIXED, A
from emunet.observe.flowlog import CAP, FlowLog
from emunet.state.cluster import KUBE_SYSTEM, ClusterState

TICK = 0.1  # seconds between flushes
PER_TICK = 20  # queries described per tick; the rest are counted
MEMO_MAX = 1024  # decoded answers remembered
FILE_NAME = "dns-events.jsonl"
# RFC 1035 3.2.2, RFC 3596, RFC 2782, RFC 6891; others print as TYPEn (RFC 3597 5)
TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT",
              28: "AAAA", 33: "SRV", 41: "OPT", 65: "HTTPS", 252: "AXFR", 255: "ANY"}
MAX_JUMPS = 64  # compression pointers followed per name (a loop guard)

Kept = tuple[float, str, tuple[str, int], bytes, bytes]
"""(wall time, "UDP"|"TCP", client (ip, port), query bytes, reply bytes)."""


def type_name(t: int) -> str:
    return TYPE_NAMES.get(t, f"TYPE{t}")


def read_name(msg: bytes, off: int) -> tuple[str, int]:
    """A possibly compressed name (RFC 1035 4.1.4) -> (lowercased, no trailing dot; next off).

    Raises IndexError or ValueError on a malformed name (the caller keeps what it decoded)."""
    labels: list[str] = []
    end = None
    for _ in range(MAX_JUMPS):
        n = msg[off]
        if n == 0:
            return ".".join(labels), (off + 1 if end is None else end)
        if n & 0xC0 == 0xC0:
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            continue
        if n > 63:
            raise ValueError("extended label type")
        label = msg[off + 1:off + 1 + n]
        if len(label) != n:
            raise IndexError("label runs past the end")
        labels.append(label.lower().decode("latin-1"))
        off += 1 + n
    raise ValueError("compression loop")


def question(msg: bytes) -> tuple[int, str, str]:
    """(id, query name with the trailing dot, qtype name) of a query or reply; "" if none."""
    if len(msg) < 12:
        return 0, "", ""
    ident, _, qd, _, _, _ = HEADER.unpack_from(msg)
    if qd < 1:
        return ident, "", ""
    try:
        name, off = read_name(msg, 12)
        (qtype, _) = QFIXED.unpack_from(msg, off)
    except (IndexError, ValueError, struct.error):
        return ident, "", ""
    return ident, name + ".", type_name(qtype)


def answer(reply: bytes) -> dict[str, Any]:
    """The answer section of a reply: rcode, ips, smallest ttl, cnames, rrtypes (Hubble's DNS)."""
    rcode = reply[3] & 0xF if len(reply) >= 4 else 2  # no reply header: SERVFAIL
    out: dict[str, Any] = {"rcode": RCODE_NAMES.get(rcode, str(rcode)), "rcode_num": rcode,
                           "ips": [], "ttl": 0, "cnames": [], "rrtypes": []}
    if len(reply) < 12:
        return out
    _, _, qd, an, _, _ = HEADER.unpack_from(reply)
    ttls = []
    try:
        off = 12
        for _ in range(qd):
            off = read_name(reply, off)[1] + 4
        for _ in range(an):
            off = read_name(reply, off)[1]
            rtype, _, ttl, rdlen = RRFIXED.unpack_from(reply, off)
            off += 10
            rdata = reply[off:off + rdlen]
            if rtype == A and rdlen == 4:
                out["ips"].append(socket.inet_ntop(socket.AF_INET, rdata))
            elif rtype == AAAA and rdlen == 16:
                out["ips"].append(socket.inet_ntop(socket.AF_INET6, rdata))
            elif rtype == CNAME:
                out["cnames"].append(read_name(reply, off)[0] + ".")
            off += rdlen
            ttls.append(ttl)
            if type_name(rtype) not in out["rrtypes"]:
                out["rrtypes"].append(type_name(rtype))
    except (IndexError, ValueError, struct.error):
        pass  # a malformed (e.g. upstream) reply: show what was readable
    out["ttl"] = min(ttls) if ttls else 0
    return out


class DnsEvents:
    """Kept queries (hot path: `pending`, `room`) and their decoding to the event file."""

    def __init__(self, path: Path | None, per_tick: int = PER_TICK, cap: int = CAP) -> None:
        self.log = FlowLog(path, cap) if path is not None else None
        self.per_tick = per_tick if self.log is not None else 0
        self.room = self.per_tick  # queries that may still be kept this tick
        self.pending: list[Kept] = []
        self.suppressed = 0
        self.node = ""
        self.server: dict[str, Any] = {"ip": None, "port": 53}
        self.pods: dict[str, str] = {}  # pod IP -> "namespace/name", for the records
        self._memo: dict[bytes, dict[str, Any]] = {}  # reply after the ID -> answer()

    def set_state(self, st: ClusterState, host: str, port: int) -> None:
        """Who is who, from the state the responder just loaded."""
        self.pods = {p.ip: f"{p.pod.namespace}/{p.pod.name}" for p in st.pods.values()}
        me = next((p for p in st.pods.values() if p.pod.namespace == KUBE_SYSTEM
                   and p.pod.labels.get("k8s-app") == "kube-dns"), None)
        self.node = me.node if me is not None else ""
        self.server = {"ip": me.ip if me is not None else host, "port": port}
        if me is not None:
            self.server["pod"] = f"{me.pod.namespace}/{me.pod.name}"

    def add(self, now: float, proto: str, client: tuple[str, int], query: bytes,
            reply: bytes) -> None:
        """Keep one answered query (TCP and forwarded answers; UDP inlines this)."""
        if self.room > 0:
            self.room -= 1
            self.pending.append((now, proto, client, query, reply))
        elif self.per_tick:
            self.suppressed += 1

    def records(self, kept: list[Kept]) -> list[dict[str, Any]]:
        out = []
        for now, proto, (ip, port), query, reply in kept:
            ident, qname, qtype = question(query)
            client: dict[str, Any] = {"ip": ip, "port": port}
            if ip in self.pods:
                client["pod"] = self.pods[ip]
            base = {"time": round(now, 6), "node": self.node, "type": "l7-dns",
                    "verdict": "FORWARDED", "proto": proto, "id": ident, "query": qname,
                    "qtype": qtype}
            out.append({**base, "response": False, "src": client, "dst": self.server})
            ans = self._memo.get(reply[2:])
            if ans is None:
                if len(self._memo) >= MEMO_MAX:
                    self._memo = {}
                ans = self._memo[reply[2:]] = answer(reply)
            out.append({**base, "response": True, **ans, "src": self.server, "dst": client})
        return out

    def flush(self) -> int:
        """Decode and write what was kept since the last flush; open the next tick's budget."""
        kept, self.pending = self.pending, []
        self.room = self.per_tick
        if kept and self.log is not None:
            self.log.write(self.records(kept))
        return len(kept)

    def close(self) -> None:
        self.flush()
        if self.log is not None:
            self.log.close()
