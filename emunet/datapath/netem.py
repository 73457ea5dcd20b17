"""Link impairment in the agent: netem's delay, jitter and loss for frames a node sends onto its
underlay. Pure: the clock and the RNG are injected, the agent's timer heap does the waiting.

Why not the kernel's netem: it is an optional module (CONFIG_NET_SCH_NETEM) that some kernels,
this project's VM among them, do not have. Every emunet node already sends its underlay traffic
from userspace (VXLAN datagrams, NodePort replies), so the agent applies the same semantics
itself and `emunet link set` behaves the same on every machine. The rate limit stays with the
kernel's tbf (CONFIG_NET_SCH_TBF is in every distribution kernel): it queues in the kernel and
pushes back on the sending socket, which is what a slow link does. (emunet/host/tc.py)

netem semantics kept here (tc-netem(8), net/sched/sch_netem.c):
- delay d with jitter j: each packet waits d + a random variation, uniform in [-j, +j] by default
  or normal with standard deviation j (`distribution normal`), never below zero;
- the queue is netem's tfifo: packets leave in time-to-send order, so jitter reorders packets, as
  netem does (Linux >= 3.x);
- loss p%: each packet is dropped independently with probability p (netem's `loss random`),
  decided when it is enqueued, before the delay.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from typing import Generic, TypeVar

from emunet.datapath import gso
from emunet.datapath.actions import Encap, Send
from emunet.datapath.nodeport import UNDERLAY_PORT
from emunet.model import Impairment

T = TypeVar("T")



@dataclass(frozen=True)
class LinkShape:
    """The agent's share of an impairment: what it applies before a frame reaches eth0."""

    delay: float = 0.0  # seconds
    jitter: float = 0.0  # seconds
    loss: float = 0.0  # probability, 0..1
    distribution: str = "uniform"

    @property
    def active(self) -> bool:
        return bool(self.delay or self.jitter or self.loss)


def link_shape(imp: Impairment | None) -> LinkShape | None:
    """The agent's part of an impairment (delay, jitter, loss) in seconds and a probability;
    None when it has none (the rate alone is tbf's)."""
    if imp is None:
        return None
    shape = LinkShape(imp.delay_ms / 1000, imp.jitter_ms / 1000, imp.loss_pct / 100,
                      imp.distribution)
    return shape if shape.active else None


class Impairer(Generic[T]):
    """A tfifo of items (the agent's pending sends) due at computed times.

    `offer` decides an item's fate (lost, or due at a time); `due` pops what is ready;
    `next_due` tells the shell how long it may sleep. A new shape (`link set` again, or
    `link reset`) applies to items offered from then on; queued ones keep their times.
    """

    def __init__(self, shape: LinkShape, rng: random.Random) -> None:
        self.shape, self.rng = shape, rng
        self._heap: list[tuple[float, int, T]] = []
        self._seq = 0  # equal times leave in arrival order (the heap never compares items)
        self.sent = self.lost = 0

    def __len__(self) -> int:
        return len(self._heap)

    def offer(self, item: T, now: float) -> bool:
        """Queue `item`; False if the loss model dropped it."""
        s = self.shape
        if s.loss and self.rng.random() < s.loss:
            self.lost += 1
            return False
        wait = s.delay
        if s.jitter:
            if s.distribution == "normal":
                wait += self.rng.gauss(0.0, s.jitter)
            else:
                wait += self.rng.uniform(-s.jitter, s.jitter)
        self._seq += 1
        heapq.heappush(self._heap, (now + max(0.0, wait), self._seq, item))
        return True

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> list[T]:
        """Items whose time has come, in time-to-send order."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        self.sent += len(out)
        return out


class UnderlayShaper:
    """The agent's underlay sends under an impairment: `take` keeps the actions that leave on
    the underlay (Encap: VXLAN datagrams; Send to eth0: NodePort replies) and returns the rest;
    `release` returns the kept ones whose time has come. A TCP super-frame (GSO) is cut into
    its wire segments first, so loss and jitter hit packets, as on a link. `due` is when the
    next one is (inf: none), for the agent's select timeout."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.imp: Impairer[Send | Encap] | None = None
        self.due = math.inf

    def configure(self, shape: LinkShape | None) -> bool:
        """A new shape from the state; True while actions must go through `take`."""
        if shape is None:
            if self.imp is not None:  # queued actions still leave at their times
                self.imp.shape = LinkShape()
            return False
        if self.imp is None:
            self.imp = Impairer(shape, self.rng)
        else:
            self.imp.shape = shape
        return True

    def take(self, actions: list, gso_size: int, big: int, now: float) -> list:
        imp = self.imp
        assert imp is not None
        rest = []
        for a in actions:
            if type(a) is Encap:
                if gso_size and len(a.payload) > big + 8:  # + the VXLAN header
                    for seg in gso.segment_tcp(a.payload, 8, gso_size):
                        imp.offer(Encap(a.dst_ip, a.dst_port, seg), now)
                else:
                    imp.offer(a, now)
            elif type(a) is Send and a.port == UNDERLAY_PORT:
                if gso_size and len(a.frame) > big:
                    for seg in gso.segment_tcp(a.frame, 0, gso_size):
                        imp.offer(Send(UNDERLAY_PORT, seg), now)
                else:
                    imp.offer(a, now)
            else:
                rest.append(a)
        nxt = imp.next_due()
        self.due = math.inf if nxt is None else nxt
        return rest

    def release(self, now: float) -> list[Send | Encap]:
        imp = self.imp
        if imp is None:
            return []
        out = imp.due(now)
        nxt = imp.next_due()
        self.due = math.inf if nxt is None else nxt
        return out

    def counters(self) -> dict[str, int]:
        imp = self.imp
        return {"link_sent": imp.sent, "link_lost": imp.lost, "link_queued": len(imp)} \
            if imp is not None else {}
