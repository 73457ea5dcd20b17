"""Command line of the per-node processes the supervisor starts (node agent, L7 proxy).

Both take the same arguments and log the same way; one parser keeps them in step.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def parse_args(prog: str, doc: str | None, argv: list[str] | None) -> argparse.Namespace:
    """--state, --node, --run-dir (default: the state file's directory), --debug; and logging
    to stderr, which the supervisor sends to `<run dir>/logs/<role>.log`."""
    ap = argparse.ArgumentParser(prog=prog, description=(doc or prog).splitlines()[0])
    ap.add_argument("--state", required=True, type=Path)
    ap.add_argument("--node", required=True)
    ap.add_argument("--run-dir", type=Path, help="default: the state file's directory")
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args(argv)
    args.run_dir = args.run_dir or args.state.parent
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return args
