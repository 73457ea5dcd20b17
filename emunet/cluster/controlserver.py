"""The supervisor's side of the control socket: read one bounded request, check it, answer it.

Whatever arrives gets one typed answer (emunet.control describes the envelope) and leaves no
traceback in the supervisor's log: the line is bounded (`MAX_LINE`, above the API server's
3 MiB body limit since `apply_objects` carries such bodies), so is the JSON nesting
(`MAX_DEPTH`, checked without recursion), a connection that sends no line within `IDLE`
seconds is answered Timeout and closed, and every argument is checked against `control.OPS`
before a handler sees it (a missing one or one of the wrong type is a BadRequest naming it, not
a KeyError or a TypeError text). Only a failure of emunet itself is logged with its traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from emunet import control
from emunet.config import ConfigError
from emunet.state.cluster import StateError

log = logging.getLogger("emunet.cluster.controlserver")
MAX_LINE = 8 * 1024 * 1024
MAX_DEPTH = 100
IDLE = 10.0  # seconds a connection may stay silent before its request line

Say = Callable[[dict[str, Any]], None]
Handler = Callable[[dict[str, Any], Say], Awaitable[dict[str, Any]]]


class BadRequest(Exception):
    """A request that is not one: answered with type BadRequest (or `type`)."""

    def __init__(self, message: str, type: str = "BadRequest") -> None:
        super().__init__(message)
        self.type = type


def refusal(message: str, type: str, kind: str = "input") -> dict[str, Any]:
    return {"ok": False, "error": message, "kind": kind, "type": type, "errors": []}


def _depth_ok(value: Any) -> bool:
    """Whether no list/object in `value` is nested deeper than MAX_DEPTH (iterative)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, dict)):
            if d > MAX_DEPTH:
                return False
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return True


def parse(line: bytes) -> dict[str, Any]:
    """The request object of one line, or BadRequest saying what is wrong with it."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"the request is not UTF-8 (byte {e.start})") from None
    try:
        req = json.loads(text)
    except RecursionError:
        raise BadRequest(f"the request is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # JSONDecodeError: its message names line and column
        raise BadRequest(f"the request is not JSON: {str(e)[:120]}") from None
    if not isinstance(req, dict):
        raise BadRequest(f"the request must be a JSON object, not {type(req).__name__}")
    if not _depth_ok(req):
        raise BadRequest(f"the request is nested deeper than {MAX_DEPTH} levels")
    op = req.get("op")
    if not isinstance(op, str):
        raise BadRequest('the request has no "op" (a string)')
    if op not in control.OPS:
        raise BadRequest(f"unknown op {op[:60]!r}: one of {', '.join(control.OPS)}",
                         "UnknownOp")
    check_args(op, req)
    return req


def _is(value: Any, t: str) -> bool:
    if t == "str":
        return isinstance(value, str)
    if t == "bool":
        return isinstance(value, bool)
    if t == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if t.startswith("list["):
        return isinstance(value, list) and all(_is(x, t[5:-1]) for x in value)
    if t == "dict":
        return isinstance(value, dict)
    if t == "impairment":
        return isinstance(value, dict) and all(
            k in control.IMPAIRMENT_FIELDS and _is(v, control.IMPAIRMENT_FIELDS[k])
            for k, v in value.items())
    raise AssertionError(t)


def check_args(op: str, req: dict[str, Any]) -> None:
    spec = control.OPS[op]
    for key in req:
        if key != "op" and key not in spec:
            raise BadRequest(f"{op}: unknown argument {str(key)[:60]!r}"
                             + (f" (it takes {', '.join(spec)})" if spec else ""))
    for key, t in spec.items():
        optional = t.endswith("?")
        value = req.get(key)
        if value is None:
            if not optional:
                raise BadRequest(f"{op}: argument {key!r} is missing")
            continue
        if not _is(value, t.rstrip("?")):
            raise BadRequest(f"{op}: argument {key!r} must be {t.rstrip('?')}, got "
                             f"{type(value).__name__}")
    if op == "delete" and not req.get("file") and not (req.get("kind") and req.get("name")):
        raise BadRequest("delete: give 'file', or 'kind' and 'name'")


async def serve(handlers: Callable[[str], Handler], reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter) -> None:
    """One connection: one request line, its progress lines and its answer. `handlers(op)`
    gives the coroutine that serves a checked request."""
    def say(msg: dict[str, Any]) -> None:
        writer.write(json.dumps(msg).encode() + b"\n")

    op = "?"
    try:
        try:
            req = parse(await asyncio.wait_for(reader.readline(), IDLE))
        except TimeoutError:
            say(refusal(f"no request within {IDLE:g} s", "Timeout"))
        except ValueError:  # the StreamReader's limit: LimitOverrunError
            say(refusal(f"the request is longer than {MAX_LINE} bytes", "BadRequest"))
        except BadRequest as e:
            say(refusal(str(e), e.type))
        else:
            op = req["op"]
            try:
                say({"ok": True, **(await handlers(op)(req, say))})
            except (StateError, ConfigError) as e:  # the request was wrong: exit 2
                say({**control.input_error(e), "type": "Invalid"})  # with the field paths
            except Exception as e:  # emunet's own failure: this one is worth a traceback
                log.exception("request %s failed", op)
                say(refusal(f"{op} failed: {type(e).__name__}: {str(e)[:300]}",
                            "InternalError", "failure"))
        await writer.drain()
    except ConnectionError:
        pass  # the client went away; nothing to answer
    finally:
        writer.close()
