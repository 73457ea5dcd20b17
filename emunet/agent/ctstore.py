"""Keep a node agent's connection tracking (and so its NAT decisions) across agent restarts.

The agent is an ordinary process: SIGKILL it and the supervisor starts a new one within a
second, but established connections through a ClusterIP must not notice (as Cilium promises
for its agent: its conntrack lives in BPF maps that outlive the agent). emunet's conntrack lives
in the agent's memory, so the agent writes it to `<run_dir>/conntrack-<node>.json` whenever
the table changed, at most every SAVE_INTERVAL, and at least every second; the new agent loads
it before it reads its first frame. Atomic (temp file + rename) and root-only (0600): a reader
sees the old or the new snapshot, never half of one.

What can still be lost is the last < 100 ms of *new* connections, and connections already
closing (FIN or RST seen: their last ACKs meet no entry); an established flow's entry is in the
snapshot from the moment its handshake completed, and the time left on each entry is kept.
Unassured connections (a TCP handshake not completed, UDP not yet a stream) are never written:
a SYN flood's half-open entries die with the agent instead of filling the next one's table.

The snapshot also names the pod holding each pod IP when it was written (`ctscrub.pod_owners`),
so an agent started after pods went or changed (its predecessor dead meanwhile) forgets the
restored entries of those IPs, as a running agent does on reload (`rescrub`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from emunet.datapath.conntrack import DEFAULT_MAX, Conntrack
from emunet.datapath.ctscrub import stale_ips

log = logging.getLogger("emunet.agent")

SAVE_INTERVAL = 0.1  # seconds between snapshots while the table changes
REFRESH_INTERVAL = 1.0  # an unchanged table is still rewritten (state flags, time left)


class CtStore:
    """The snapshot file of one node's conntrack."""

    def __init__(self, ct: Conntrack, path: Path) -> None:
        self.ct, self.path = ct, path
        self.saved_version = -1
        self.saved_at = -math.inf
        self.restored = 0
        self.save_errors = 0
        self.flushed = 0
        self.owners: dict[str, str] = {}  # pod IP -> its pod, for the state the table matches
        self._owners_json = "{}"

    @classmethod
    def attach(cls, ct: Conntrack, run_dir: Path, node: str, max_entries: int | None,
               now: float, owners: dict[str, str] | None = None) -> CtStore:
        """Configure `ct`, load the previous agent's snapshot into it, return the store.
        `owners`: the pods by IP of the state in force (`ctscrub.pod_owners`)."""
        store = cls(ct, run_dir / f"conntrack-{node}.json")
        store.configure(max_entries)
        store.load(now, owners)
        return store

    def configure(self, max_entries: int | None) -> None:
        self.ct.max_entries = max_entries or DEFAULT_MAX

    def load(self, now: float, owners: dict[str, str] | None = None) -> int:
        try:
            doc = json.loads(self.path.read_text())
            records = doc["conns"]
            saved_owners = doc.get("pods")
        except FileNotFoundError:
            saved_owners = None
            records = []
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("conntrack snapshot %s unreadable (%s): starting empty", self.path, e)
            saved_owners = None
            records = []
        self.restored = self.ct.from_records(records, now)
        if owners is not None:
            if isinstance(saved_owners, dict):
                self.owners = {str(k): str(v) for k, v in saved_owners.items()}
            self.rescrub(owners)
        if records:
            log.info("restored %d tracked connections from %s (%d of IPs whose pod changed "
                     "forgotten)", self.restored, self.path, self.flushed)
        return self.restored

    def rescrub(self, owners: dict[str, str]) -> int:
        """The pods by IP changed (a reload): forget the connections of every IP whose pod
        went or changed (emunet.datapath.ctscrub), remember the new owners. Returns how many
        connections went."""
        n = self.ct.flush_ips(stale_ips(self.owners, owners))
        self.flushed += n
        if owners != self.owners:
            self.owners = dict(owners)
            self._owners_json = json.dumps(self.owners, separators=(",", ":"), sort_keys=True)
            self.ct.version += 1  # the snapshot names the owners: write it again
        return n

    @property
    def due(self) -> float:
        """When the next snapshot should be written (monotonic time)."""
        if self.ct.version != self.saved_version:
            return self.saved_at + SAVE_INTERVAL
        return self.saved_at + REFRESH_INTERVAL

    def maybe_save(self, now: float) -> None:
        if now >= self.due:
            self.save(now)

    def save(self, now: float) -> None:
        version = self.ct.version
        # the JSON of to_records, faster (conntrack.py). Closing connections (FIN or RST seen)
        # are left out: a connection-per-request client leaves thousands of them lingering
        # (TCP_FIN_WAIT) and writing them 10 times a second cost ~20% of an agent's time in the
        # rr benchmark (py-spy); a restarted agent only needs the live ones.
        data = self.ct.to_json(now, closing=False, assured_only=True)
        data = f'{data[:-1]},"pods":{self._owners_json}}}'
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(data)
            os.replace(tmp, self.path)
        except OSError as e:
            self.save_errors += 1
            if self.save_errors == 1:
                log.warning("cannot write %s: %s", self.path, e)
        self.saved_version, self.saved_at = version, now

    def counters(self) -> dict[str, int]:
        return {"ct_evicted": self.ct.evicted, "ct_insert_failed": self.ct.insert_failed,
                "ct_restored": self.restored, "ct_max": self.ct.max_entries,
                "ct_flushed": self.flushed}
