"""The `observe`, `trace` and `capture` verbs: argument parsers and the `observe` command.

`emunet.cli` calls `add_parsers(sub)`; each verb's function returns the exit status and prints
its own errors (exit 2 for bad flags, 1 for failures), as the rest of the CLI does.
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

OBSERVE_EPILOG = """\
examples:
  sudo emunet observe -n blog-website                        the last 20 flows in a namespace
  sudo emunet observe --verdict DROPPED -o json              drops, Hubble's JSON field names
  sudo emunet observe --to-pod blog-website/monospaced -f    follow flows to a pod, live
  sudo emunet observe --type policy-verdict --since 5m       which policy allowed/denied what
  sudo emunet observe --protocol dns                         DNS questions and answers

Events: the first packet of every connection (with the Service backend chosen), every drop
(with its reason and, for policy drops, the policy), every packet of a traced flow
(`emunet trace`), DNS answers and HTTP requests seen by the L7 proxy. Each node keeps
between 4 and 8 MiB of recent events (about 10k flows), in the run directory.
"""


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


def add_parsers(sub: Any) -> None:
    """Register `observe`, `trace` and `capture` on the CLI's subparsers."""
    p = sub.add_parser("observe", help="show flows: forwarded, dropped (why), translated, "
                       "policy verdicts, DNS/HTTP (like hubble observe)",
                       epilog=OBSERVE_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--namespace", help="flows from or to pods in this namespace")
    p.add_argument("--pod", action="append", metavar="[NS/]POD",
                   help="flows from or to this pod (name prefix)")
    p.add_argument("--from-pod", action="append", metavar="[NS/]POD")
    p.add_argument("--to-pod", action="append", metavar="[NS/]POD")
    p.add_argument("-l", "--label", action="append", metavar="KEY=VALUE[,...]",
                   help="flows from or to pods with these labels")
    p.add_argument("--verdict", action="append", metavar="VERDICT",
                   help="FORWARDED | DROPPED")
    p.add_argument("--protocol", action="append", metavar="PROTO",
                   help="tcp | udp | icmp | dns | http")
    p.add_argument("--port", action="append", type=int, help="source or destination port")
    p.add_argument("-t", "--type", action="append", metavar="TYPE",
                   help="drop | trace | l7 | policy-verdict")
    p.add_argument("--last", type=int, metavar="N", help="the last N flows (default 20)")
    p.add_argument("--since", metavar="WHEN", help="30s, 5m, 1h or an RFC 3339 time")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new flows")
    p.add_argument("--follow-for", type=float, metavar="S", help=argparse.SUPPRESS)
    p.add_argument("-o", "--output", choices=["compact", "json", "table"], default="compact")
    p.set_defaults(func=cmd_observe)
