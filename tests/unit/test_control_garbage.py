"""The control socket answers garbage with typed errors (issue 15 §3): every malformed request
gets exactly one answer {"ok": false, "type": ..., "error": ...}, no Python text leaks, nothing
is logged with a traceback, long lines, deep nesting and silent connections are bounded. The
supervisor's connection handler (emunet.cluster.controlserver) runs in-process on a real unix
socket, with stand-in handlers."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from emunet import control
from emunet.cluster import controlserver
from emunet.state.cluster import StateError

GARBAGE: list[tuple[str, bytes, str, str]] = [
    # (id, bytes sent, answer type, words the message must hold)
    ("not-json", b"hello\n", "BadRequest", "not JSON"),
    ("a-list", b"[]\n", "BadRequest", "must be a JSON object, not list"),
    ("null", b"null\n", "BadRequest", "must be a JSON object"),
    ("a-string", b'"ping"\n', "BadRequest", "must be a JSON object, not str"),
    ("invalid-utf8", b'{"op": "\xff\xfe"}\n', "BadRequest", "not UTF-8"),
    ("70-KiB-line", b"x" * 70 * 1024 + b"\n", "BadRequest", "not JSON"),
    ("30000-nested-arrays", b"[" * 30000 + b"]" * 30000 + b"\n", "BadRequest", "nested deeper"),
    ("150-nested-objects", b'{"op": "apply_objects", "objects": [' + b'{"a": ' * 150 + b"1"
     + b"}" * 150 + b"]}\n", "BadRequest", "nested deeper"),
    ("no-op", b"{}\n", "BadRequest", '"op"'),
    ("op-not-a-string", b'{"op": 5}\n', "BadRequest", '"op"'),
    ("unknown-op", b'{"op": "format-disk"}\n', "UnknownOp", "unknown op 'format-disk'"),
    ("missing-argument", b'{"op": "apply"}\n', "BadRequest", "'file' is missing"),
    ("wrong-type", b'{"op": "apply", "file": 5}\n', "BadRequest", "'file' must be str"),
    ("replicas-a-string", b'{"op": "scale", "name": "web", "replicas": "3"}\n', "BadRequest",
     "'replicas' must be int"),
    ("replicas-a-bool", b'{"op": "scale", "name": "web", "replicas": true}\n', "BadRequest",
     "'replicas' must be int"),
    ("unknown-argument", b'{"op": "ping", "force": 1}\n', "BadRequest",
     "unknown argument 'force'"),
    ("impairment-field", b'{"op": "link", "node": "n1", "impairment": {"bogus": 1}}\n',
     "BadRequest", "'impairment' must be impairment"),
    ("labels-not-strings", b'{"op": "label", "kind": "pod", "name": "a", "labels": [1]}\n',
     "BadRequest", "'labels' must be list[str]"),
    ("delete-of-nothing", b'{"op": "delete"}\n', "BadRequest", "'kind' and 'name'"),
    ("no-newline-then-eof", b'{"op": "ping"', "BadRequest", "not JSON"),
    ("empty", b"", "BadRequest", "not JSON"),
]


async def _failing(req, say):
    raise KeyError("file")


async def _refused(req, say):
    raise StateError("no such deployment")


async def _pong(req, say):
    say({"progress": "thinking"})
    return {"pid": 1}


HANDLERS = {"ping": _pong, "apply": _refused, "status": _failing}


async def exchange(tmp_path, data: bytes, close: bool = True) -> list[dict]:
    path = str(tmp_path / "c.sock")
    server = await asyncio.start_unix_server(
        lambda r, w: controlserver.serve(HANDLERS.__getitem__, r, w), path=path,
        limit=controlserver.MAX_LINE)
    try:
        r, w = await asyncio.open_unix_connection(path, limit=2 ** 20)
        w.write(data)
        await w.drain()
        if close:
            w.write_eof()
        out = await asyncio.wait_for(r.read(), 10)
        w.close()
        return [json.loads(x) for x in out.splitlines()]
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture(autouse=True)
def no_tracebacks(caplog):
    caplog.set_level(logging.DEBUG)
    yield caplog


@pytest.mark.parametrize("data,type_,words", [g[1:] for g in GARBAGE],
                         ids=[g[0] for g in GARBAGE])
def test_garbage_gets_one_typed_answer_and_no_traceback(tmp_path, caplog, data, type_, words):
    answers = asyncio.run(exchange(tmp_path, data))
    assert len(answers) == 1, answers
    a = answers[0]
    assert a["ok"] is False and a["type"] == type_ and a["kind"] == "input", a
    assert words in a["error"], a
    assert len(a["error"]) < 400  # nothing echoed whole
    assert not any(rec.exc_info for rec in caplog.records)


def test_a_line_beyond_the_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(controlserver, "MAX_LINE", 64 * 1024)
    answers = asyncio.run(exchange(tmp_path, b'{"op": "apply", "file": "' + b"a" * 100_000
                                   + b'"}\n'))
    assert answers == [controlserver.refusal("the request is longer than 65536 bytes",
                                             "BadRequest")]


def test_a_silent_connection_is_answered_and_closed(tmp_path, monkeypatch):
    monkeypatch.setattr(controlserver, "IDLE", 0.2)
    answers = asyncio.run(exchange(tmp_path, b"", close=False))
    assert [a["type"] for a in answers] == ["Timeout"]


def test_good_requests_still_work_and_errors_are_typed(tmp_path, caplog):
    assert asyncio.run(exchange(tmp_path, b'{"op": "ping"}\n')) == [
        {"progress": "thinking"}, {"ok": True, "pid": 1}]
    refused = asyncio.run(exchange(tmp_path, b'{"op": "apply", "file": "/x.yaml"}\n'))
    assert refused[0]["type"] == "Invalid" and refused[0]["error"] == "no such deployment"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    failed = asyncio.run(exchange(tmp_path, b'{"op": "status"}\n'))
    assert failed[0]["type"] == "InternalError" and failed[0]["kind"] == "failure"
    assert failed[0]["error"] == "status failed: KeyError: 'file'"


def test_every_op_the_clients_send_passes_the_checks():
    """What the CLI and the API server send (emunet.cli, emunet.api) is a valid request."""
    sent = [
        {"op": "status"}, {"op": "ping"}, {"op": "shutdown"},
        {"op": "apply", "file": "/a.yaml"}, {"op": "delete", "file": "/a.yaml"},
        {"op": "delete", "kind": "pod", "name": "a", "namespace": None},
        {"op": "node", "action": "stop", "node": "n1"},
        {"op": "link", "node": "n1", "impairment": {"delay_ms": 5.0, "jitter_ms": 0.0,
                                                    "loss_pct": 1, "rate_bps": 0,
                                                    "distribution": "normal"}},
        {"op": "link", "node": "n1", "impairment": None},
        {"op": "label", "kind": "pod", "name": "a", "namespace": "default",
         "labels": ["x=1"], "overwrite": False},
        {"op": "scale", "name": "web", "namespace": "default", "replicas": 3},
        {"op": "events", "namespace": None},
        {"op": "apply_objects", "objects": [{"kind": "Pod"}]},
    ]
    for req in sent:
        assert controlserver.parse(json.dumps(req).encode()) == req
    assert set(control.OPS) == {r["op"] for r in sent}
