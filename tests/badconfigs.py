"""The broken-config corpus (tests/configs/bad) and what a clean rejection of one looks like:
exit 2, no traceback, one `emunet: FILE:LINE: ...` line on stderr. Shared by the in-process
`validate` test (tests/unit) and the `up` one (tests/e2e)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BAD = sorted((ROOT / "tests" / "configs" / "bad").glob("*.yaml"))


def one_located_error(p: subprocess.CompletedProcess, file: Path) -> str | None:
    """None if `p` is a clean bad-input rejection of `file`, else what is wrong with it."""
    errs = [line for line in p.stderr.splitlines() if line.strip()]
    if p.returncode != 2:
        return f"exit {p.returncode}"
    if "Traceback" in p.stderr + p.stdout:
        return "traceback"
    if len(errs) != 1:
        return f"{len(errs)} stderr lines: {errs}"
    if not re.match(rf"emunet: {re.escape(str(file))}:\d+: \S", errs[0]):
        return f"not located: {errs[0]}"
    return None
