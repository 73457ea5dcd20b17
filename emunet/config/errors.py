"""Located config errors and the collector that gathers them while a file is checked.

Every mistake a user can make in a config file becomes a `ConfigError` naming the file, the
1-based line and the field path (`spec.ports[0].targetPort`), in the one-line shape compilers
use, so editors and terminals can jump to it. Checking continues after an error so that one run
reports every mistake; `ConfigError.errors` holds them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emunet.errors import InputError

MAX_ERRORS = 50  # reported per file; the rest are counted ("... and N more")
MAX_MESSAGE = 400  # characters of one message: a value echoed in it is cut in the middle


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text`, or its head and tail around a note of how much was left out."""
    if len(text) <= limit:
        return text
    tail = limit // 5
    return f"{text[:limit - tail]}... ({len(text) - limit} characters left out) ...{text[-tail:]}"


class ConfigError(InputError):
    """One or more mistakes in a config file (exit 2; printed as `file:line: field: ...`).

    The attributes describe the first mistake (in file order); `errors` lists all of them, each
    itself a single-mistake `ConfigError`.
    """

    def __init__(self, file: str, line: int, path: str, message: str, hint: str = "",
                 errors: list[ConfigError] | None = None) -> None:
        self.file = file
        self.line = line
        self.path = shorten(path, 200)
        self.message = shorten(message)
        self.hint = shorten(hint, 200)
        self.errors: list[ConfigError] = errors if errors else [self]
        self.more = 0  # mistakes found beyond MAX_ERRORS, not listed
        super().__init__(str(self))

    label = ""  # the message starts with its own location

    @classmethod
    def from_list(cls, errors: list[ConfigError]) -> ConfigError:
        """One exception carrying several errors, sorted by line (stable for equal lines)."""
        ordered = sorted(errors, key=lambda e: e.line)
        first = ordered[0]
        out = cls(first.file, first.line, first.path, first.message, first.hint,
                  ordered[:MAX_ERRORS])
        out.more = len(ordered) - len(out.errors)
        out.args = (str(out),)
        return out

    def one_line(self) -> str:
        """`file:line: path: message — hint` (line and path left out when unknown)."""
        where = f"{self.file}:{self.line}" if self.line > 0 else self.file
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return f"{text} — {self.hint}" if self.hint else text

    def __str__(self) -> str:
        more = getattr(self, "more", 0)
        tail = [f"{self.file}: ... and {more} more errors"] if more else []
        return "\n".join([*(e.one_line() for e in self.errors), *tail])


@dataclass
class Collector:
    """Errors and warnings found so far in one file."""

    file: str
    errors: list[ConfigError] = field(default_factory=list)
    warnings: list[tuple[int, str]] = field(default_factory=list)

    def error(self, line: int, path: str, message: str, hint: str = "") -> None:
        self.errors.append(ConfigError(self.file, line, path, message, hint))

    def warn(self, line: int, message: str) -> None:
        self.warnings.append((line, f"{self.file}:{line}: {message}"))

    def raise_if_any(self) -> None:
        if self.errors:
            raise ConfigError.from_list(self.errors)

    def sorted_warnings(self) -> tuple[str, ...]:
        return tuple(text for _, text in sorted(self.warnings, key=lambda w: w[0]))
