"""`emunet observe`: Hubble-like flows from the nodes' event logs, filtered and printed.

Its arguments are in emunet.cli.parser; the verb returns the exit status and prints its own
errors (exit 2 for bad flags, 1 for failures), as the rest of the CLI does.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from emunet import naming
from emunet.cli import views
from emunet.cli.common import CLIError, load_state
from emunet.observe import filters, flowlog, hubble
from emunet.state import codec


class _Printer:
    def __init__(self, output: str) -> None:
        self.output = output
        self.rows: list[tuple[str, ...]] = [filters.TABLE_HEAD]

    def add(self, f: dict[str, Any]) -> None:
        if self.output == "json":
            print(filters.as_json(f), flush=True)
        elif self.output == "table":
            self.rows.append(filters.table_row(f))
        else:
            print(filters.compact(f), flush=True)

    def end(self) -> None:
        if self.output == "table" and len(self.rows) > 1:
            print(views.table([list(r) for r in self.rows]))


def _flows(records: Iterable[dict[str, Any]], d: hubble.Directory,
           flt: filters.FlowFilter) -> Iterable[dict[str, Any]]:
    for r in records:
        for f in hubble.flows(r, d):
            if flt.match(f):
                yield f


def cmd_observe(a: argparse.Namespace) -> int:
    flt = filters.FlowFilter.from_args(a)
    state = load_state()
    run_dir = naming.run_dir()
    if not os.access(run_dir, os.R_OK | os.X_OK):
        raise CLIError(f"cannot read {run_dir}: run with sudo")
    d = hubble.Directory(state)
    out = _Printer(a.output)
    last = a.last if a.last is not None else (None if (a.follow or a.since) else 20)
    stop = time.monotonic() + a.follow_for if a.follow_for else None
    live = flowlog.follow(run_dir, stop=stop) if a.follow else None  # before the read: no gap
    stored = list(_flows(flowlog.read_all(run_dir), d, flt))
    for f in stored[-last:] if last else ([] if last == 0 else stored):
        out.add(f)
    out.end()
    if live is None:
        return 0
    state_path = run_dir / "state.json"
    seen = _mtime(state_path)
    try:
        for r in live:
            if _mtime(state_path) != seen:  # pods come and go: names follow the state
                seen = _mtime(state_path)
                d = hubble.Directory(codec.from_json(state_path.read_text()))
            for f in _flows([r], d, flt):
                out.add(f)
    except KeyboardInterrupt:
        pass
    out.end()
    return 0


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


