"""Every file of the broken-config corpus (tests/configs/bad) through `emunet validate`, as a
user sees it: exit 2, one located message, no traceback. In process, no root (the `up` of the
same corpus is in tests/e2e/test_badinput.py)."""

from __future__ import annotations

import subprocess

from emunet.cli import main as cli
from tests.badconfigs import BAD, one_located_error


def test_corpus_is_large_enough():
    assert len(BAD) >= 30


def test_validate_rejects_every_bad_config(capsys):
    """In-process `emunet validate` (cli.main: exit code and stderr as a user sees them); the
    subprocess path is the same code, exercised by the `up` test in tests/e2e."""
    wrong = {}
    for f in BAD:
        code = cli.main(["validate", str(f)])
        out, err = capsys.readouterr()
        p = subprocess.CompletedProcess([], code, out, err)
        if why := one_located_error(p, f):
            wrong[f.name] = why
    assert not wrong
