"""Cluster events: a bounded in-memory list, and `emunet get events` as kubectl prints it.

The supervisor records what happens to pods, Deployments and Services (Scheduled, Started,
Ready, Unhealthy, Killing, ScalingReplicaSet, EndpointsChanged, ...) and serves the list over
the control socket. Like the API server's EventCorrelator, a repeat of the same event (same
object, type, reason and message) bumps its count and last-seen time instead of adding a line,
and the list is bounded: the oldest events fall off, as events expire after an hour in etcd.
"""

from __future__ import annotations

import collections
from dataclasses import asdict, dataclass
from typing import Any

MAX_EVENTS = 1000

NORMAL, WARNING = "Normal", "Warning"


@dataclass
class Event:
    namespace: str
    kind: str  # involvedObject.kind: Pod, Deployment, ReplicaSet, Service
    name: str
    type: str  # Normal | Warning
    reason: str
    message: str
    first: float
    last: float
    count: int = 1

    @property
    def key(self) -> tuple[str, ...]:
        return (self.namespace, self.kind, self.name, self.type, self.reason, self.message)


class EventLog:
    """The supervisor's events, oldest first, at most `limit` of them."""

    def __init__(self, limit: int = MAX_EVENTS) -> None:
        self.events: collections.deque[Event] = collections.deque(maxlen=limit)

    def record(self, now: float, namespace: str, kind: str, name: str, reason: str,
               message: str, type: str = NORMAL) -> Event:
        key = (namespace, kind, name, type, reason, message)
        # Only recent events are folded (a deque scan from the newest end stays short).
        for i, e in enumerate(reversed(self.events)):
            if i >= 50:
                break
            if e.key == key:
                e.count += 1
                e.last = now
                return e
        e = Event(namespace, kind, name, type, reason, message, now, now)
        self.events.append(e)
        return e

    def list(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return [asdict(e) for e in self.events if namespace is None or e.namespace == namespace]


def human_duration(seconds: float) -> str:
    """apimachinery duration.HumanDuration, the ages kubectl prints (5s, 3m20s, 2h5m, 3d)."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    return f"{h // 24}d"


def rows(events: list[dict[str, Any]], now: float, all_namespaces: bool) -> list[list[str]]:
    """`kubectl get events` columns, oldest first: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE."""
    head = ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    if all_namespaces:
        head.insert(0, "NAMESPACE")
    out = [head]
    for e in sorted(events, key=lambda e: e["last"]):
        seen = human_duration(now - e["last"])
        if e["count"] > 1:
            seen += f" (x{e['count']} over {human_duration(now - e['first'])})"
        row = [seen, e["type"], e["reason"], f"{e['kind'].lower()}/{e['name']}", e["message"]]
        if all_namespaces:
            row.insert(0, e["namespace"])
        out.append(row)
    return out
