"""The one error path: every error emunet raises for a user derives from `EmunetError`, which
carries its exit code (2: bad input the user can fix, a file, a flag, a name; 1: a failure).

`emunet.cli.main` catches the base class once and prints `emunet: error: MESSAGE` (a located
config error prints its own `file:line: field: ...` form); anything else is an internal error,
shown with its traceback only under `--debug`.
"""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class EmunetError(Exception):
    """A failure a user can read (exit 1 unless the subclass or `code` says otherwise)."""

    exit_code = EXIT_FAILURE
    label = "error: "  # printed before the message

    def __init__(self, message: str = "", code: int | None = None) -> None:
        super().__init__(message)
        self.code = self.exit_code if code is None else code


class InputError(EmunetError):
    """Bad input: a config file, a flag, an object name. Nothing was changed (exit 2)."""

    exit_code = EXIT_BAD_INPUT
