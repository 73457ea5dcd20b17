"""Service session affinity (`sessionAffinity: ClientIP`): which backend a client IP keeps. Pure.

kube-proxy (iptables mode) gives each Service port a `recent` list per endpoint: a new
connection from a client IP seen within `timeoutSeconds` goes to the same endpoint, and every
new connection refreshes the entry (`-m recent --rcheck --seconds T --reap` then `--set`). An
entry whose backend is no longer a ready endpoint is forgotten and the client is balanced
afresh. Time and the RNG are injected, as everywhere in the datapath.
"""

from __future__ import annotations

import random

from emunet.datapath.tables import ServiceTarget

Backend = tuple[bytes, int]


class Affinity:
    """(service port, client IP) -> (backend, deadline)."""

    def __init__(self) -> None:
        self._m: dict[tuple[str, bytes], tuple[Backend, float]] = {}

    def __len__(self) -> int:
        return len(self._m)

    def pick(self, target: ServiceTarget, client: bytes, now: float,
             rng: random.Random) -> Backend:
        """The backend for a new connection of `client` (target.backends is non-empty)."""
        backends = target.backends
        if not target.affinity:
            return backends[rng.randrange(len(backends))]
        key = (target.name, client)
        hit = self._m.get(key)
        if hit is not None and hit[1] > now and hit[0] in backends:
            backend = hit[0]
        else:
            backend = backends[rng.randrange(len(backends))]
        self._m[key] = (backend, now + target.affinity)
        return backend

    def expire(self, now: float) -> int:
        """Forget entries past their deadline (called once a second by the agent)."""
        dead = [k for k, (_, deadline) in self._m.items() if deadline <= now]
        for k in dead:
            del self._m[k]
        return len(dead)
