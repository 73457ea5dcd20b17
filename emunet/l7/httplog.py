"""The L7 event log: one JSON line per HTTP request the proxy decided, in a bounded file ring.

`<run_dir>/l7-<node>.jsonl` receives one object per request (Hubble's L7 flow, flattened):

    {"time": 1764133200.123, "node": "node-2", "type": "l7-http",
     "verdict": "FORWARDED" | "DENIED" | "ERROR",
     "method": "GET", "path": "/api/posts", "host": "10.42.2.2:3000", "status": 200,
     "policy": "blog-website/api-only", "rule": 0,            # null when denied
     "src": {"ip": "10.42.1.3", "port": 40312, "pod": "blog-website/frontend-client",
             "identity": 257},
     "dst": {"ip": "10.42.2.2", "port": 3000, "pod": "blog-website/monospaced-test"},
     "latency_ms": 1.7}

When the file passes `max_bytes` it is renamed to `l7-<node>.jsonl.1` (replacing the previous
one) and a new file starts, so at most about 2 x max_bytes are kept: readers read `.1`, then the
current file. Lines are written whole with one write(2) on an O_APPEND descriptor.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MAX_BYTES = 1 << 20


class EventLog:
    def __init__(self, path: Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.fd = -1
        self.size = 0
        self._open()

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                          0o600)
        self.size = os.fstat(self.fd).st_size

    def write(self, event: dict[str, Any]) -> None:
        line = (json.dumps(event, separators=(",", ":"), sort_keys=True) + "\n").encode()
        if self.size + len(line) > self.max_bytes and self.size > 0:
            os.close(self.fd)
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self._open()
        os.write(self.fd, line)
        self.size += len(line)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event still kept, oldest first (the rotated file, then the current one)."""
    out = []
    for p in (path.with_name(path.name + ".1"), path):
        try:
            text = p.read_text()
        except FileNotFoundError:
            continue
        out.extend(json.loads(line) for line in text.splitlines() if line.strip())
    return out
