"""The control channel between the CLI and the supervisor: JSON lines on a root-only socket.

Each request is one JSON object with an "op" on one line; the supervisor answers with one JSON
object per line: zero or more {"progress": ...} lines, then a final {"ok": true, ...} or
{"ok": false, "error": "...", "kind": "input"|"failure", "type": ...}. The error types:
BadRequest (not a request: not UTF-8 JSON, not an object, too long, nested too deep, an argument
missing or of the wrong type), UnknownOp, Invalid (a well-formed request the cluster refuses:
a bad manifest, an unknown object), Timeout (no request line in time), InternalError. `OPS` is
every op with its arguments; the supervisor checks a request against it before acting
(emunet.cluster.controlserver).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emunet import naming
from emunet.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EmunetError


class ControlError(EmunetError):
    """The supervisor is not running, or it refused the request (the message says why).

    `kind` is "input" when the request itself was wrong (a bad manifest, an unknown object:
    the CLI exits 2, as for any bad input) and "failure" otherwise (exit 1).
    """

    def __init__(self, message: str, kind: str = "failure",
                 errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message, EXIT_BAD_INPUT if kind == "input" else EXIT_FAILURE)
        self.kind = kind
        self.errors = errors or []  # a config error's mistakes: {"path", "message", "hint"}


def input_error(e: Exception) -> dict[str, Any]:
    """The answer to a request that was wrong (a StateError, a ConfigError): the message, and
    for a config error each mistake's field path, message and hint (the API's 422 causes)."""
    mistakes = getattr(e, "errors", None) if hasattr(e, "path") else None
    fields = [{"path": x.path, "message": x.message, "hint": x.hint} for x in mistakes or []]
    return {"ok": False, "error": str(e), "kind": "input", "errors": fields}


# op -> argument -> its type: str, int, bool, list[str], list[dict], impairment (an
# Impairment's fields); "?" suffix: optional (null allowed), else required.
OPS: dict[str, dict[str, str]] = {
    "ping": {}, "status": {}, "shutdown": {},
    "node": {"action": "str", "node": "str"},
    "link": {"node": "str", "impairment": "impairment?"},
    "label": {"kind": "str", "name": "str", "namespace": "str?", "labels": "list[str]",
              "overwrite": "bool?"},
    "apply": {"file": "str"},
    "apply_objects": {"objects": "list[dict]"},
    "delete": {"file": "str?", "kind": "str?", "name": "str?", "namespace": "str?",
               "grace": "int?", "propagation": "str?"},
    "scale": {"name": "str", "namespace": "str?", "replicas": "int"},
    "events": {"namespace": "str?"},
}
IMPAIRMENT_FIELDS = {"delay_ms": "number", "jitter_ms": "number", "loss_pct": "number",
                     "rate_bps": "int", "distribution": "str"}


def socket_path() -> Path:
    return naming.run_dir() / "control.sock"


def request(op: str, timeout: float = 60.0,
            on_progress: Callable[[str], None] | None = None, **args: Any) -> dict[str, Any]:
    path = socket_path()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as e:
        s.close()
        raise ControlError("the emunet supervisor is not running (is a cluster up? "
                           "`emunet up FILE` starts one)") from e
    with s, s.makefile("rwb") as f:
        f.write(json.dumps({"op": op, **args}).encode() + b"\n")
        f.flush()
        for line in f:
            msg = json.loads(line)
            if "progress" in msg:
                if on_progress:
                    on_progress(msg["progress"])
                continue
            if not msg.get("ok"):
                raise ControlError(msg.get("error", "request failed"),
                                   msg.get("kind", "failure"), msg.get("errors"))
            return msg
    raise ControlError("the supervisor closed the connection without an answer")


def alive() -> bool:
    try:
        request("ping", timeout=2.0)
        return True
    except (ControlError, OSError):
        return False
