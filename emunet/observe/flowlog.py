"""The per-node flow ring on disk: size-capped JSON-lines files, written by agents, read by the CLI.

Why files and not a socket per agent: the CLI must merge every node's stream (and the L7 logs
of the DNS responder and the proxy) by time, also when an agent is restarting; appending lines
to a file in the root-only run dir needs no server loop in the agent, survives agent restarts
and is trivially tailed by `observe -f`. The ring: `flows-<node>.jsonl` grows to `CAP` bytes,
then becomes `flows-<node>.jsonl.1` (replacing the previous one) and a new file starts, so each
source keeps between CAP and 2*CAP bytes of history (about 8-16k flows at ~500 bytes each) and
the run dir (a tmpfs in /run: memory) holds at most 2*CAP per source.
"""

from __future__ import annotations

import fnmatch
import heapq
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

CAP = 4 << 20  # bytes per file; two files per source
# node datapaths; L7 proxies; the DNS responder (emunet.dns.querylog)
PATTERNS = ("flows-*.jsonl", "l7-*.jsonl", "dns-events.jsonl")


class FlowLog:
    """Appends records to one source's capped file (agent side). Never raises on I/O."""

    def __init__(self, path: Path, cap: int = CAP) -> None:
        self.path, self.cap = path, cap
        self.f: TextIO | None = None
        self.errors = 0

    def _open(self) -> TextIO:
        if self.f is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self.f = os.fdopen(fd, "a", encoding="utf-8")
        return self.f

    def write(self, records: list[dict[str, Any]]) -> None:
        self.write_lines([json.dumps(r, separators=(",", ":")) for r in records])

    def write_lines(self, lines: list[str]) -> None:
        """Append records already serialised (one JSON object each, no newline)."""
        if not lines:
            return
        try:
            f = self._open()
            f.write("\n".join(lines) + "\n")
            f.flush()
            if f.tell() >= self.cap:
                f.close()
                self.f = None
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        except (OSError, ValueError):
            self.errors += 1
            self.f = None

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


def read_source(path: Path) -> list[dict[str, Any]]:
    """One source's records still kept, oldest first: the rotated file, then the current one."""
    return [*_lines(path.with_name(path.name + ".1")), *_lines(path)]


def sources(run_dir: Path) -> list[Path]:
    """The current file of every source in the run dir, also of a source whose current file
    is not there (right after a rotation, until its next write: the DNS responder may be idle)."""
    try:
        names = os.listdir(run_dir)  # one listing, not a glob per pattern: `emunet ui` and
    except OSError:                  # `observe -f` look several times a second
        return []
    found = set()
    for name in names:
        base = name[:-2] if name.endswith(".1") else name
        if any(fnmatch.fnmatchcase(base, pat) for pat in PATTERNS):
            found.add(run_dir / base)
    return sorted(found)


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue  # a line cut by rotation: skip it
    except OSError:
        return


def read_all(run_dir: Path) -> list[dict[str, Any]]:
    """Every stored record of every source (rotated file first), merged by time."""
    streams = []
    for p in sources(run_dir):
        recs = list(_lines(p.with_name(p.name + ".1"))) + list(_lines(p))
        recs.sort(key=_time)
        streams.append(recs)
    return list(heapq.merge(*streams, key=_time))


def _time(r: dict[str, Any]) -> float:
    t = r.get("time", 0.0)
    return t if isinstance(t, (int, float)) else 0.0


def follow(run_dir: Path, poll: float = 0.2, lag: float = 0.3,
           stop: float | None = None) -> Iterator[dict[str, Any]]:
    """Records appended from now on, from all sources (new ones included), merged by time.

    Records are held back `lag` seconds so that a slightly later line from another node still
    comes out in time order; `stop` (a time.monotonic() deadline) ends the stream for tests.
    """
    pos: dict[Path, tuple[int, int]] = {}
    for p in sources(run_dir):  # now, not at the first next(): "from now on" means now
        try:
            st = p.stat()
            pos[p] = (st.st_ino, st.st_size)
        except OSError:
            pass
    return _follow(run_dir, pos, poll, lag, stop)


def _follow(run_dir: Path, pos: dict[Path, tuple[int, int]], poll: float, lag: float,
            stop: float | None) -> Iterator[dict[str, Any]]:
    held: list[tuple[float, int, dict[str, Any]]] = []
    seq = 0
    while stop is None or time.monotonic() < stop:
        for p in sources(run_dir):
            for r in _read_new(p, pos):
                seq += 1
                heapq.heappush(held, (_time(r), seq, r))
        cutoff = time.time() - lag
        while held and held[0][0] <= cutoff:
            yield heapq.heappop(held)[2]
        time.sleep(poll)
    while held:
        yield heapq.heappop(held)[2]


def _read_new(p: Path, pos: dict[Path, tuple[int, int]]) -> list[dict[str, Any]]:
    out = []
    for line in new_lines(p, pos):
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def new_lines(p: Path, pos: dict[Path, tuple[int, int]]) -> list[bytes]:
    """The complete lines appended to source `p` since `pos[p]` (inode, offset), unparsed;
    `pos` is moved past them. A new inode or a shorter file (rotated: the rest of the old file
    is in .1) starts again from 0; a half-written last line waits for the next call."""
    try:
        st = p.stat()
    except OSError:
        return []
    ino, off = pos.get(p, (st.st_ino, 0))
    if ino != st.st_ino or st.st_size < off:
        off = 0
    if st.st_size == off:
        pos[p] = (st.st_ino, off)
        return []
    with open(p, "rb") as f:
        f.seek(off)
        data = f.read()
    end = data.rfind(b"\n") + 1
    pos[p] = (st.st_ino, off + end)
    return data[:end].splitlines()
