"""The event hook: a `Datapath` that remembers the decisions worth showing. Pure.

Cost model (DESIGN.md §3: established packets must stay ~1 µs of Python). The hook never
parses or formats anything per packet. After the pipeline has decided, it keeps a reference to
the input frame and the action list (a tuple append, no copy) only when the packet
  - opened a conntrack entry (the first packet of a flow, what `hubble observe` lists: the
    table's insertion counter moved),
  - was dropped (every drop, with its reason),
  - carries the trace mark (IPv4 TOS or IPv6 traffic class `TRACE_TOS`, set by `emunet trace`
    on its probe socket; `marked`),
  - or belongs to a flow whose first packet carried the mark (its replies do not: the server's
    socket knows nothing of the mark, so the flow's conntrack keys are remembered instead).
Turning a kept event into a record happens later, outside the fast path (`record.describe`,
tens of µs each), so a flood of new flows or drops (a SYN flood, a scan, garbage frames) could
make the agent spend its time describing: untraced events are kept up to `EVENTS_PER_S` per
second, the rest only counted (`suppressed_events`), like Cilium's monitor aggregation.
Byte and packet counters cost one `len` and an add per packet.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from emunet.datapath import Datapath, Drop, Encap, NodeTables, Send
from emunet.datapath.ipv6pkt import ETHERTYPE_IPV6, IP6_NH, L4_6, tuple_key6
from emunet.packets import (
    ETH_LEN,
    ETH_TYPE,
    ETHERTYPE_IP,
    IP_PROTO,
    IP_TOS,
    IP_VIHL,
    VXLAN,
    tuple_key,
)

# DSCP 45 (TOS byte 0xB4): unassigned by IANA (RFC 2474 pool 1 is 0-63, no standard meaning
# for 45), so ordinary pod traffic never carries it. The datapath never rewrites TOS, and
# RFC 7348 §5 keeps the inner header intact, so the peer node sees the mark too.
TRACE_TOS = 0xB4
EVENTS_MAX = 4096  # kept events between two drains (the agent drains after every batch)
TRACED_MAX = 1024  # conntrack keys of traced flows remembered at most
EVENTS_PER_S = 2000  # untraced events kept per second (new flows and drops); traced: all

# IPv6 (dual-stack): the traffic class spans the header's first two bytes (RFC 8200 §3):
# version 6 and its high nibble, then its low nibble above the flow label's top bits
MARK6_BYTE0, MARK6_NIBBLE = 0x60 | TRACE_TOS >> 4, TRACE_TOS & 0xF

# where a kept event's frame entered the datapath: a pod veth, VXLAN, or the node's eth0 (a
# node port's client outside the cluster: Cilium's FROM_NETWORK)
FROM_ENDPOINT, FROM_OVERLAY, FROM_NETWORK = 0, 1, 2

Event = tuple[float, int, str, bytes, list[Any], bool]
"""(now, FROM_ENDPOINT|FROM_OVERLAY|FROM_NETWORK, in_port, peer underlay IP or "eth0", input
bytes, actions, new)."""

# Ethernet, an IPv4 header with the most options (IHL 15: 60 bytes) and the 8 L4 bytes a key
# is read from: all of a frame `flow_key` looks at.
_KEY_HEADERS = ETH_LEN + 60 + 8


def flow_key(frame: bytes | bytearray, off: int = 0) -> bytes | None:
    """The conntrack key (emunet.packets.tuple_key) of the IPv4 frame at `off`.

    A light check of its own (the frame is in hand before or after the pipeline judged it),
    then the pipeline's own key. Behind a VXLAN header only the headers are copied (a GRO
    train can be 64 KB; a memoryview measured slower than this short copy).
    """
    f = frame[off:off + _KEY_HEADERS] if off else frame
    if len(f) < ETH_LEN + 20 or f[ETH_TYPE] != ETHERTYPE_IP:
        if len(f) >= L4_6 + 8 and f[ETH_TYPE] == ETHERTYPE_IPV6:  # dual-stack (ipv6pkt)
            return tuple_key6(f, L4_6, f[IP6_NH])
        return None
    l4 = ETH_LEN + (f[IP_VIHL] & 0xF) * 4
    if len(f) < l4 + 8:
        return None
    return tuple_key(f, l4, f[IP_PROTO])


def marked(data: bytes, off: int = 0) -> bool:
    """The frame at `off` carries the trace mark: IPv4 TOS or IPv6 traffic class TRACE_TOS."""
    if len(data) <= off + IP_TOS:
        return False
    if data[off + ETH_LEN] == MARK6_BYTE0:  # only an IPv6 header can start so (version 6)
        return data[off + IP_TOS] >> 4 == MARK6_NIBBLE
    return data[off + IP_TOS] == TRACE_TOS and data[off + 12:off + 14] == ETHERTYPE_IP


class ObservedDatapath(Datapath):
    """`Datapath` plus kept events (`events`), traced flows and byte counters."""

    def __init__(self, tables: NodeTables, rng: random.Random,
                 max_events: int = EVENTS_MAX, fastpath: bool = True) -> None:
        super().__init__(tables, rng, fastpath)
        # a traced packet always takes the full pipeline (emunet.datapath.fastpath: the answer
        # is the same either way, but a trace shows the pipeline deciding)
        self.slow_tos = TRACE_TOS
        self.events: deque[Event] = deque(maxlen=max_events)
        self.traced: dict[bytes, bool] = {}  # conntrack key -> is the flow's reply direction
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.lost_events = 0
        self.suppressed_events = 0
        self._window = 0.0
        self._budget = EVENTS_PER_S

    @property
    def counters(self) -> dict[str, int]:
        return {**super().counters, "rx_bytes": self.rx_bytes, "tx_bytes": self.tx_bytes,
                "traced_flows": len(self.traced) // 2,
                "flow_events_suppressed": self.suppressed_events}

    def process(self, frame: bytes, in_port: str, now: float) -> list[Any]:
        # A new flow is an insertion, not a bigger table: the packet that opens a connection
        # may also have removed one (a reused closing tuple, an expired entry, an eviction).
        n = self.ct.inserts
        out = super().process(frame, in_port, now)
        self.rx_bytes += len(frame)
        new = self.ct.inserts != n
        # (an IPv4 frame pays one byte test for the IPv6 mark: its byte 14 is 0x4N)
        if (new or (out and type(out[-1]) is Drop)
                or (len(frame) > IP_TOS and (frame[IP_TOS] == TRACE_TOS
                                             and frame[ETH_TYPE] == ETHERTYPE_IP
                                             or frame[ETH_LEN] == MARK6_BYTE0))
                or (self.traced and flow_key(frame) in self.traced)):
            self._keep(now, FROM_ENDPOINT, in_port, frame, out, new, 0,
                       marked(frame) or bool(self.traced))
        return self._count_tx(out)

    def process_underlay(self, payload: bytes, src_ip: str, now: float) -> list[Any]:
        n = self.ct.inserts  # see process
        out = super().process_underlay(payload, src_ip, now)
        self.rx_bytes += len(payload)
        new = self.ct.inserts != n
        v = VXLAN.size
        if (new or (out and type(out[-1]) is Drop)
                or (len(payload) > v + IP_TOS and (payload[v + IP_TOS] == TRACE_TOS
                                                   or payload[v + ETH_LEN] == MARK6_BYTE0))
                or (self.traced and flow_key(payload, v) in self.traced)):
            self._keep(now, FROM_OVERLAY, src_ip, payload, out, new, v,
                       marked(payload, v) or bool(self.traced))
        return self._count_tx(out)

    def process_nodeport(self, frame: bytes, now: float, gso: bool = False) -> list[Any]:
        """A frame for a node port from the node's eth0: kept as `process` keeps pod frames
        (new connections, drops), so node port traffic from outside shows in flows too."""
        n = self.ct.inserts
        out = super().process_nodeport(frame, now, gso)
        self.rx_bytes += len(frame)
        new = self.ct.inserts != n
        if new or (out and type(out[-1]) is Drop) or (
                self.traced and flow_key(frame) in self.traced):
            self._keep(now, FROM_NETWORK, "eth0", frame, out, new, 0, bool(self.traced))
        return self._count_tx(out)

    def _count_tx(self, out: list[Any]) -> list[Any]:
        for a in out:
            t = type(a)
            if t is Send:
                self.tx_bytes += len(a.frame)
            elif t is Encap:
                self.tx_bytes += len(a.payload)
        return out

    def _keep(self, now: float, where: int, src: str, data: bytes, out: list[Any], new: bool,
              off: int, maybe_traced: bool) -> None:
        if not maybe_traced:  # the budget (module doc); a possibly traced packet always passes
            if now >= self._window:
                self._window, self._budget = now + 1.0, EVENTS_PER_S
            if self._budget <= 0:
                self.suppressed_events += 1
                return
            self._budget -= 1
        if len(self.events) == self.events.maxlen:
            self.lost_events += 1
        self.events.append((now, where, src, data, out, new))
        if new and marked(data, off):
            self._remember(data, off)

    def _remember(self, data: bytes, off: int) -> None:
        """Trace every packet of the flow this marked packet opened, replies included."""
        key = flow_key(data, off)
        hit = self.ct.table.get(key) if key is not None else None
        if hit is None:
            return
        if len(self.traced) >= 2 * TRACED_MAX:
            self.prune()
            if len(self.traced) >= 2 * TRACED_MAX:
                return  # a tracing storm: keep what we have rather than grow without bound
        conn = hit[0]
        self.traced[conn.orig_key] = False
        self.traced[conn.reply_key] = True

    def prune(self) -> None:
        """Forget traced keys whose connection is gone."""
        table = self.ct.table
        self.traced = {k: r for k, r in self.traced.items() if k in table}

    def expire(self, now: float) -> int:
        n = super().expire(now)
        if self.traced:
            self.prune()
        return n

    def drain(self) -> list[Event]:
        """Hand the kept events to the caller (the agent), oldest first."""
        out = list(self.events)
        self.events.clear()
        return out
