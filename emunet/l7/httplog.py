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

The ring is the nodes' flow-log ring (`emunet.observe.flowlog.FlowLog`): when the file passes
`max_bytes` it becomes `l7-<node>.jsonl.1` (replacing the previous one) and a new file starts,
so at most about 2 x max_bytes are kept; readers read `.1`, then the current file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emunet.observe.flowlog import FlowLog, read_source

MAX_BYTES = 1 << 20  # per file: the proxy's events are fewer and larger than a node's flows


def open_log(path: Path, max_bytes: int = MAX_BYTES) -> FlowLog:
    """The proxy's ring: the same size-capped JSON-lines files as the nodes' flow logs."""
    return FlowLog(path, max_bytes)


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event still kept, oldest first (the rotated file, then the current one)."""
    return read_source(path)
