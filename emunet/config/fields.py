"""Typed, located access to one YAML mapping: the reader every document parser uses.

`Obj` wraps an `LDict` with its field path and reports wrong types, missing fields and unknown
fields to the `Collector` instead of raising, returning None so checking can continue. Unknown
fields are errors, as with Kubernetes' strict field validation (`kubectl --validate=strict`),
with the closest known name suggested for typos.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

from emunet.config.errors import Collector
from emunet.config.yamlsrc import LDict, LList

Check = Callable[[str], "str | None"]


def describe(value: Any) -> str:
    """How a wrong value reads in an error: `a number (70000)`, `a list`, `text 'abc'`."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"text {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return f"a {type(value).__name__} ({value})"


def suggest(name: str, known: Iterable[str], noun: str = "fields") -> str:
    """`did you mean "x"?` for a misspelt name, else the list of valid names."""
    known = sorted(set(known))
    for k in known:
        if k.lower() == name.lower():
            return f'did you mean "{k}"? ({noun} are case-sensitive)'
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f'did you mean "{close[0]}"?'
    return f"known {noun}: " + ", ".join(known)


class Obj:
    """One mapping of a document, its field path (`spec.ports[0]`) and its line."""

    def __init__(self, col: Collector, data: LDict, path: str, line: int) -> None:
        self.col = col
        self.data = data
        self.path = path
        self.line = line
        self.misspelt: set[str] = set()  # known fields an unknown key looks like (a typo)

    # ---- location --------------------------------------------------------------------------

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def line_of(self, key: str) -> int:
        return self.data.key_lines.get(key, self.line)

    def error(self, key: str | None, message: str, hint: str = "") -> None:
        if key is None:
            self.col.error(self.line, self.path, message, hint)
        else:
            self.col.error(self.line_of(key), self.sub(key), message, hint)

    # ---- shape -----------------------------------------------------------------------------

    def check_fields(self, known: Iterable[str], ignored: Iterable[str] = (),
                     what: str = "") -> None:
        """Unknown fields are errors; `ignored` are real Kubernetes fields emunet accepts and
        does not act on (so files stay valid for a real cluster)."""
        known, ignored = set(known), set(ignored)
        for key in self.data:
            if key not in known and key not in ignored:
                where = f" in {what}" if what else ""
                self.error(key, f'unknown field "{key}"{where}', suggest(key, known | ignored))
                self.misspelt.update(k for k in known if k.lower() == key.lower())
                self.misspelt.update(difflib.get_close_matches(key, known, n=1, cutoff=0.6))

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str) -> Any:
        return self.data.get(key)

    def _missing(self, key: str, required: bool) -> bool:
        if self.data.get(key) is not None:
            return False
        if required and key in self.data:
            self.error(key, "must not be empty")
        elif required and key not in self.misspelt:  # a typo of it was reported already
            # reported at the enclosing mapping, named by the missing field's path
            self.col.error(self.line, self.sub(key), "required field is missing",
                           f'add "{key}:" here')
        return True

    # ---- scalars ---------------------------------------------------------------------------

    def str(self, key: str, required: bool = False, check: Check | None = None,
            choices: Iterable[str] | None = None) -> str | None:
        if self._missing(key, required):
            return None
        v = self.data[key]
        if not isinstance(v, str):
            hint = f'quote it: "{v}"' if isinstance(v, int | float | bool) else ""
            self.error(key, f"must be a string, got {describe(v)}", hint)
            return None
        if required and v == "":
            self.error(key, "must not be empty")
            return None
        if choices is not None:
            choices = list(choices)
            if v not in choices:
                self.error(key, f"must be one of {', '.join(choices)}, got {v!r}",
                           suggest(v, choices, noun="values"))
                return None
        if check is not None:
            bad = check(v)
            if bad:
                self.error(key, f"{v!r} {bad}")
                return None
        return v

    def int(self, key: str, required: bool = False, lo: int | None = None,
            hi: int | None = None, why: str = "") -> int | None:
        if self._missing(key, required):
            return None
        v = self.data[key]
        if isinstance(v, bool) or not isinstance(v, int):
            hint = "remove the quotes" if isinstance(v, str) and v.strip().isdigit() else ""
            self.error(key, f"must be an integer, got {describe(v)}", hint)
            return None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.error(key, f"must be {lo}-{hi}, got {v}", why or "fix the value")
            return None
        return v

    def bool(self, key: str) -> bool | None:
        if self._missing(key, False):
            return None
        v = self.data[key]
        if not isinstance(v, bool):
            self.error(key, f"must be true or false, got {describe(v)}")
            return None
        return v

    # ---- collections -----------------------------------------------------------------------

    def map(self, key: str, required: bool = False) -> Obj | None:
        if self._missing(key, required):
            return None
        v = self.data[key]
        if not isinstance(v, LDict):
            self.error(key, f"must be a mapping, got {describe(v)}")
            return None
        return Obj(self.col, v, self.sub(key), self.line_of(key))

    def list(self, key: str, required: bool = False) -> list[tuple[Any, str, int]]:
        """The items of a list field as (value, path, line)."""
        if self._missing(key, required):
            return []
        v = self.data[key]
        if not isinstance(v, LList):
            self.error(key, f"must be a list, got {describe(v)}",
                       "start each item with '- '" if isinstance(v, dict) else "")
            return []
        return [(item, f"{self.sub(key)}[{i}]", v.item_lines[i]) for i, item in enumerate(v)]

    def objs(self, key: str, required: bool = False) -> list[Obj]:
        """A list of mappings (containers, ports, nodes) as Objs; other items are errors."""
        out = []
        for item, path, line in self.list(key, required):
            if isinstance(item, LDict):
                out.append(Obj(self.col, item, path, line))
            else:
                self.col.error(line, path, f"must be a mapping, got {describe(item)}")
        return out

    def str_list(self, key: str) -> tuple[str, ...]:
        out = []
        for item, path, line in self.list(key):
            if isinstance(item, str):
                out.append(item)
            else:
                hint = f'quote it: "{item}"' if isinstance(item, int | float | bool) else ""
                self.col.error(line, path, f"must be a string, got {describe(item)}", hint)
        return tuple(out)

    def str_map(self, key: str, key_check: Check | None = None,
                value_check: Check | None = None) -> dict[str, str] | None:
        """labels, selector, annotations: string keys to string values."""
        m = self.map(key)
        if m is None:
            return None
        out: dict[str, str] = {}
        for k, v in m.data.items():
            if not isinstance(v, str):
                hint = f'quote it: {k}: "{v}"' if isinstance(v, int | float | bool) else ""
                m.error(k, f"must be a string, got {describe(v)}", hint)
                continue
            bad = key_check(k) if key_check else None
            if bad:
                m.error(k, f"key {k!r} {bad}")
                continue
            bad = value_check(v) if value_check else None
            if bad:
                m.error(k, f"value {v!r} {bad}")
                continue
            out[k] = v
        return out


def at(doc: Obj, *keys: str | int) -> tuple[int, str]:
    """(line, path) of a nested field of a document, e.g. at(doc, "spec", "ports", 0, "port");
    stops at the deepest part that exists."""
    value: Any = doc.data
    line, path = doc.line, doc.path
    for key in keys:
        if isinstance(key, int) and isinstance(value, LList) and key < len(value):
            line, path, value = value.item_lines[key], f"{path}[{key}]", value[key]
        elif isinstance(key, str) and isinstance(value, LDict) and key in value:
            line, value = value.key_lines[key], value[key]
            path = f"{path}.{key}" if path else key
        else:
            break
    return line, path
