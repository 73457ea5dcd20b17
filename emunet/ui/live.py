"""The page's live flows: the flow rings tailed as raw lines, and per batch only the records the
table will show parsed and rendered (every drop, the newest others).

Why not `flowlog.follow`: it parses every line and hands records over one by one, which at a
thousand flow records a second cost the server more than everything else it does (measured
with py-spy: a thread-to-loop wake-up and a `json.loads` per record), while the live table
shows a few dozen of them per batch. Unfiltered, a batch parses only the lines that may be
drops (the words DROPPED or DENIED appear in them) and the newest few others of each source;
with a filter every line is parsed, rendered and matched, as `emunet observe` does, so no
matching flow is missed for being old in its batch. The same files, the same Hubble rendering
and filters as the CLI: no second source of truth.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emunet.observe import filters, flowlog, hubble
from emunet.ui import model

# a record whose line has neither word is not dropped (hubble.flows: a DROPPED datapath
# verdict, a denying policy verdict; an L7 log's DENIED)
DROP_WORDS = (b"DROPPED", b"DENIED")
Chunks = dict[Path, list[bytes]]


class Tail:
    """New complete lines of every flow source, from the moment it was made (new sources, such
    as a node started later, from their first line)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.pos: dict[Path, tuple[int, int]] = {}
        for p in flowlog.sources(run_dir):
            try:
                st = p.stat()
                self.pos[p] = (st.st_ino, st.st_size)
            except OSError:
                pass

    def read(self) -> Chunks:
        out = {}
        for p in flowlog.sources(self.run_dir):  # a source's file may appear at any time
            lines = flowlog.new_lines(p, self.pos)
            if lines:
                out[p] = lines
        return out


def _maybe_drop(line: bytes) -> bool:
    return any(w in line for w in DROP_WORDS)


def _any_drop(lines: list[bytes]) -> bool:
    blob = b"\n".join(lines)  # one scan in C, not one per line
    return any(w in blob for w in DROP_WORDS)


REPEAT = 10.0  # seconds during which the same drop again is news no more


class Batch:
    """The lines gathered for one page until they are due: at once when they hold a drop not
    seen in the last REPEAT seconds (a drop is on the page within a second, issue 18), else
    `calm` seconds after the first arrived: a table redrawn once a second reads as well as
    twice and costs the browser half, also while the same flow keeps being dropped."""

    def __init__(self, calm: float) -> None:
        self.calm = calm
        self.chunks: Chunks = {}
        self.urgent = False
        self.since: float | None = None
        self.seen: dict[tuple, float] = {}  # a drop's key -> when it was last news

    def add(self, chunks: Chunks, now: float) -> None:
        for p, lines in chunks.items():
            self.chunks.setdefault(p, []).extend(lines)
            if _any_drop(lines):
                for rec in _parse([ln for ln in lines if _maybe_drop(ln)]):
                    if _dropped(rec) and self._news(rec, now):
                        self.urgent = True
        if self.chunks and self.since is None:
            self.since = now

    def _news(self, rec: dict[str, Any], now: float) -> bool:
        pkt = rec.get("pkt")
        if not isinstance(pkt, dict):
            return True  # an L7 denial: rare, always news
        drop = rec.get("drop") if isinstance(rec.get("drop"), dict) else {}
        key = (rec.get("node"), pkt.get("src"), pkt.get("dst"), pkt.get("proto"),
               pkt.get("dport"), drop.get("reason"), drop.get("detail"))
        last = self.seen.get(key)
        if last is not None and now - last < REPEAT:
            return False
        if len(self.seen) > 4096:  # a scan: forget what is old
            self.seen = {k: t for k, t in self.seen.items() if now - t < REPEAT}
        self.seen[key] = now
        return True

    def due(self) -> float | None:
        """When to send (a loop time), None when there is nothing."""
        if self.since is None:
            return None
        return self.since if self.urgent else self.since + self.calm

    def take(self) -> Chunks:
        chunks, self.chunks, self.urgent, self.since = self.chunks, {}, False, None
        return chunks


def _parse(lines: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut by rotation
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _time(r: dict[str, Any]) -> float:
    t = r.get("time", 0.0)
    return t if isinstance(t, (int, float)) else 0.0


def _dropped(rec: dict[str, Any]) -> bool:
    return rec.get("verdict") in ("DROPPED", "DENIED")


def _newest(xs: list[Any], n: int) -> list[Any]:
    return xs[max(0, len(xs) - n):]


def rows(chunks: Chunks, d: hubble.Directory, flt: filters.FlowFilter, drops: int,
         others: int) -> tuple[list[dict[str, Any]], int]:
    """A batch's table rows (time order): up to `drops` dropped flows and the newest `others`
    of the rest that pass `flt`; and how many records (unfiltered) or matching flows
    (filtered) were left out."""
    if flt != filters.FlowFilter():
        recs = sorted((r for lines in chunks.values() for r in _parse(lines)), key=_time)
        found = model.flow_rows(recs, d, flt)
        keep = _sample(found, lambda r: r["verdict"] == "DROPPED", drops, others)
        return keep, len(found) - len(keep)
    total = sum(len(lines) for lines in chunks.values())
    picked: list[dict[str, Any]] = []
    for lines in chunks.values():
        if _any_drop(lines):
            maybe = [ln for ln in lines if _maybe_drop(ln)]
            rest = [ln for ln in lines if not _maybe_drop(ln)]
        else:
            maybe, rest = [], lines
        # every dropped record of this source is among `maybe`; the newest others are among
        # the last `others` of `rest` and whatever of `maybe` was not a drop after all
        picked += _parse(_newest(maybe, max(drops, others)) + _newest(rest, others))
    picked.sort(key=_time)
    recs = _sample(picked, _dropped, drops, others)
    return model.flow_rows(recs, d, flt), total - len(recs)


def _sample(xs: list[dict[str, Any]], is_drop: Any, drops: int, others: int
            ) -> list[dict[str, Any]]:
    """The last `drops` of xs that are drops and the last `others` that are not, in order."""
    dropped = _newest([x for x in xs if is_drop(x)], drops)
    rest = _newest([x for x in xs if not is_drop(x)], others)
    keep = {id(x) for x in dropped} | {id(x) for x in rest}
    return [x for x in xs if id(x) in keep]
