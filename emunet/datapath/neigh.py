"""The NodePort neighbour table: the underlay clients' MACs, learned from their frames, as the
node's neighbour table would hold them (IPv4 and IPv6 addresses alike, 4- and 16-byte keys).
Bounded as Linux's is (gc_thresh3: a hard cap, the least recently seen entry goes first) and
aged (`NEIGH_AGE`), so a flood of spoofed sources cannot grow it. Pure.
"""

from __future__ import annotations

from collections import OrderedDict

NEIGH_MAX = 4096  # entries; Linux's default gc_thresh3 is 1024, NodePort clients may be more
NEIGH_AGE = 600.0  # seconds unseen before an entry goes (Linux: gc_stale_time 60 s, then GC)


class Neighbours:
    """NodePort clients: IP -> (reply MACs, last seen), least recently seen first."""

    def __init__(self, limit: int = NEIGH_MAX, age: float = NEIGH_AGE) -> None:
        self.limit, self.age = limit, age
        self._d: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._d)

    def learn(self, ip: bytes, macs: bytes, now: float) -> None:
        d = self._d
        if ip in d:
            d.move_to_end(ip)
        d[ip] = (macs, now)
        while d:  # the oldest first: stale ones, and any beyond the cap
            old_ip, (_, seen) = next(iter(d.items()))
            if len(d) <= self.limit and now - seen < self.age:
                break
            del d[old_ip]

    def get(self, ip: bytes, now: float) -> bytes | None:
        e = self._d.get(ip)
        if e is None or now - e[1] >= self.age:
            return None
        return e[0]
