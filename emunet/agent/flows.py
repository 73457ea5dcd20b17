"""The agent's flow records: kept datapath events turned into records and written to the flow
ring in the loop's idle time, off the packet path (issue 16 §3-4).

Before, the agent described every kept event and wrote it (one `write` each wake-up) right
after the batch that produced it, so a connection's first packet cost the pipeline ~9 µs and
its record another ~15 (describe, JSON, a syscall) before the loop looked at the next packet.
Now a batch only *pins* its events (`record.pin`: the conntrack hit read while the connection
is surely in the table, a dict lookup each), and the describing happens when no packet is
waiting: a few events each time the busy-poll finds the sockets empty, all of them before the
loop sleeps in epoll. Lines are written in one `write` per `WRITE_AFTER`, or sooner when
`WRITE_LINES` pile up. Under a load that never leaves the loop idle, nothing waits longer than
`MAX_DELAY`: then everything pending is described at once. `emunet trace` reads the records
`tracer.SETTLE` (0.4 s) after its probe, `observe -f` and the UI tail the file: a record is on
disk within `MAX_DELAY` of its packet.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from emunet.observe.flowlog import FlowLog
from emunet.observe.hook import Event
from emunet.observe.record import Pinned, pin, record

MAX_DELAY = 0.1  # s: the oldest kept event is on disk by then, idle or not
WRITE_AFTER = 0.05  # s: described lines are written together at most this late
WRITE_LINES = 256  # lines: written at once when this many are waiting
INF = float("inf")
IDLE_CHUNK = 4  # events described per empty busy-poll round (~10 µs each, compiled ~5)


class Records:
    """Pinned events waiting to be described, and described lines waiting to be written."""

    def __init__(self, flowlog: FlowLog, node: str, wall_offset: float) -> None:
        self.log, self.node, self.wall_offset = flowlog, node, wall_offset
        self.pending: deque[Pinned] = deque()
        self.lines: list[str] = []
        # when the oldest event not yet written must be on disk (inf: none kept); a plain
        # attribute, since the loop looks at it on every turn
        self.due = INF
        self.written_at = 0.0
        self.ctx: tuple[str, dict[str, str], int | None, str] = ("", {}, None, "")

    def context(self, underlay_ip: str, port_names: dict[str, str], vxlan_port: int | None,
                underlay_ip6: str) -> None:
        """The node's addresses and its veths' pod names, as of the last (re)load."""
        self.ctx = (underlay_ip, port_names, vxlan_port, underlay_ip6)

    def keep(self, events: list[Event], ct_table: dict, traced: dict) -> None:
        """Pin a batch's events (right after the batch, conntrack as it left them)."""
        if events and self.due == INF:
            self.due = events[0][0] + MAX_DELAY  # an event's first field: its packet's time
        self.pending.extend([pin(ev, ct_table, traced) for ev in events])

    @property
    def busy(self) -> bool:
        return self.due != INF

    def work(self, now: float, n: int = 0) -> None:
        """Describe up to `n` pending events (0: all), then write the lines if they are due."""
        ip, names, port, ip6 = self.ctx
        pending, lines, node, off = self.pending, self.lines, self.node, self.wall_offset
        for _ in range(n or len(pending)):
            if not pending:
                break
            rec: dict[str, Any] = record(pending.popleft(), node, ip, off, names, port, ip6)
            lines.append(json.dumps(rec, separators=(",", ":")))
        if lines and (not n or len(lines) >= WRITE_LINES or now - self.written_at
                      >= WRITE_AFTER or now >= self.due):
            self.flush(now)

    def flush(self, now: float) -> None:
        """Write every described line now (one `write`)."""
        if self.lines:
            self.log.write_lines(self.lines)
            self.lines = []
        self.written_at = now
        self.due = self.pending[0][0][0] + MAX_DELAY if self.pending else INF
