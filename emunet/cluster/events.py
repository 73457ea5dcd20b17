"""Cluster events: a bounded list, kept in the run dir across a supervisor restart, and
`emunet get events` as kubectl prints it.

The supervisor records what happens to pods, Deployments and Services (Scheduled, Started,
Ready, Unhealthy, Killing, ScalingReplicaSet, EndpointsChanged, ...) and serves the list over
the control socket. Like the API server's EventCorrelator, a repeat of the same event (same
object, type, reason and message) bumps its count and last-seen time instead of adding a line,
and the list is bounded: the oldest events fall off, as events expire after an hour in etcd.
Events live in etcd, not in a kubelet, so they outlive the component that recorded them: the
list is saved to `<run dir>/events.json` (at most once a second, when it changed) and read back
by a supervisor that adopts the cluster after a crash (emunet.cluster.adopt).
"""

from __future__ import annotations

import collections
import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
SAVE_EVERY = 1.0  # s: a burst of events is one write

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
        self.version = 0  # bumped by every record: the list needs saving when it moved
        self._saved = (0, 0.0)  # (version, when) of the last save

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
                self.version += 1
                return e
        e = Event(namespace, kind, name, type, reason, message, now, now)
        self.events.append(e)
        self.version += 1
        return e

    def maybe_save(self, path: Path, now: float) -> None:
        """Write the list if it changed and the last write is SAVE_EVERY old (temp file and
        rename: a crash mid-write leaves the previous list). A failed write is logged."""
        version, when = self._saved
        if version == self.version or now - when < SAVE_EVERY:
            return
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps([asdict(e) for e in self.events]))
            os.replace(tmp, path)
        except OSError as e:
            log.warning("cannot save the events to %s: %s", path, e)
        self._saved = (self.version, now)

    def load(self, path: Path) -> int:
        """Take back the events a previous supervisor saved; how many (0: none or unreadable,
        logged: events are history, never a reason not to start)."""
        names = {f.name for f in fields(Event)}
        try:
            saved = json.loads(path.read_text())
            events = [Event(**{k: v for k, v in e.items() if k in names}) for e in saved]
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, TypeError) as e:
            log.warning("ignoring unreadable saved events %s: %s", path, e)
            return 0
        self.events.extend(events)
        self._saved = (self.version, 0.0)
        return len(events)

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
