"""The `emunet` command line: parse the arguments (emunet.cli.parser), import and run the
verb's function, and turn its errors into one clear message: exit 2 for bad input, 1 for
failures; a traceback only with --debug.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from emunet.cli.parser import parser
from emunet.errors import EmunetError


def handler(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    """The function of the chosen verb ("module:function" in emunet.cli), imported now: only
    what that verb needs is loaded."""
    module, _, name = args.func.partition(":")
    return getattr(importlib.import_module(f"emunet.cli.{module}"), name)


def parse(argv: list[str]) -> argparse.Namespace:
    """The arguments; for `exec`, what follows the first `--` is the command, verbatim
    (argparse would drop the `--` itself, and with it whether a POD came before it)."""
    if "--" in argv:
        i = argv.index("--")
        args = parser().parse_args(argv[:i])
        if args.verb == "exec":
            args.after_dashes = argv[i + 1:]
            return args
    args = parser().parse_args(argv)
    args.after_dashes = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        return handler(args)(args)
    except EmunetError as e:
        print(f"emunet: {e.label}{e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("emunet: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(f"emunet: internal error: {type(e).__name__}: {e} (run with --debug for "
              "details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
