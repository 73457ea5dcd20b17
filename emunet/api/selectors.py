"""`?labelSelector=` and `?fieldSelector=` of list and watch requests, parsed and matched.

Label selectors have apimachinery's syntax (pkg/labels/selector.go): `k=v`, `k==v`, `k!=v`,
`k in (a,b)`, `k notin (a)`, `k`, `!k`, comma-separated and ANDed. Field selectors
(pkg/fields/selector.go) are `path=value`, `path==value` or `path!=value` on a dotted JSON path
(`metadata.name`, `spec.nodeName`, `status.phase`, `involvedObject.uid`, ...). A bad selector is
a 400 BadRequest, as the API server answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Match = Callable[[dict[str, Any]], bool]


class SelectorError(ValueError):
    """An unparsable selector (the message says where)."""


def _split(text: str) -> list[str]:
    """Split at commas outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


_SET = re.compile(r"^([A-Za-z0-9_./-]+)\s+(in|notin)\s+\(([^)]*)\)$")
_EQ = re.compile(r"^([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_.-]*)$")
_KEY = re.compile(r"^(!?)\s*([A-Za-z0-9_./-]+)$")


def label_selector(text: str | None) -> Match:
    if not text:
        return lambda o: True
    reqs: list[Callable[[dict[str, str]], bool]] = []
    for part in _split(text):
        m = _SET.match(part)
        if m:
            key, op, vals = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                reqs.append(lambda lb, k=key, vs=vals: k in lb and lb[k] in vs)
            else:
                reqs.append(lambda lb, k=key, vs=vals: k not in lb or lb[k] not in vs)
            continue
        m = _EQ.match(part)
        if m:
            key, op, val = m.groups()
            if op == "!=":
                reqs.append(lambda lb, k=key, v=val: lb.get(k) != v)
            else:
                reqs.append(lambda lb, k=key, v=val: k in lb and lb[k] == v)
            continue
        m = _KEY.match(part)
        if m:
            neg, key = m.groups()
            reqs.append((lambda lb, k=key: k not in lb) if neg else (lambda lb, k=key: k in lb))
            continue
        raise SelectorError(f"unable to parse requirement: {part!r}")

    def match(o: dict[str, Any]) -> bool:
        labels = (o.get("metadata") or {}).get("labels") or {}
        return all(r(labels) for r in reqs)
    return match


def _path(o: dict[str, Any], path: str) -> str:
    cur: Any = o
    for p in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(p)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def field_selector(text: str | None) -> Match:
    if not text:
        return lambda o: True
    reqs: list[tuple[str, bool, str]] = []
    for part in _split(text):
        m = re.match(r"^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise SelectorError(f"invalid selector: {part!r}; can't understand it")
        reqs.append((m.group(1), m.group(2) != "!=", m.group(3)))

    def match(o: dict[str, Any]) -> bool:
        return all((_path(o, p) == v) == eq for p, eq, v in reqs)
    return match
