"""The L7 proxy on loopback: Cilium's HTTP rule semantics, exact 403 answers, body relaying and
keep-alive, with a real upstream server. No root: the proxy's decision and relay are the same
code the pod-namespace listeners run, only `connect` is plain TCP here."""

from __future__ import annotations

import asyncio

import pytest

from emunet.l7 import http1
from emunet.l7.httplog import open_log, read_events
from emunet.l7.proxy import Proxy, ProxyPolicy
from emunet.model import cilium as cnp
from emunet.packets import PROTO_TCP, ip_bytes
from emunet.policy.cilium import L7Entry, L7Port
from emunet.policy.verdict import DirectionBuilder, NodePolicy, PodPolicy, RuleRef

SERVER, CLIENT, STRANGER = "127.0.0.2", "127.0.0.3", "127.0.0.4"
CLIENT_ID = 300
NOW = 1764133200.0


# ---- the matcher: Cilium/Envoy semantics (RE2, whole-value match) --------------------------------

@pytest.mark.parametrize("rule, method, path, ok", [
    (cnp.HTTPRule(path="/api/.*"), "GET", "/api/posts", True),
    (cnp.HTTPRule(path="/api/.*"), "GET", "/api/", True),
    (cnp.HTTPRule(path="/api/.*"), "GET", "/api", False),  # full match, not a prefix
    (cnp.HTTPRule(path="/api/.*"), "GET", "/x/api/posts", False),  # anchored at the start
    (cnp.HTTPRule(path="/public"), "GET", "/public?page=2", False),  # :path has the query
    (cnp.HTTPRule(path="/public.*"), "GET", "/public?page=2", True),
    (cnp.HTTPRule(method="GET"), "GET", "/anything", True),
    (cnp.HTTPRule(method="GET"), "POST", "/anything", False),
    (cnp.HTTPRule(method="GET"), "GETX", "/", False),
    (cnp.HTTPRule(method="GET|HEAD"), "HEAD", "/", True),
    (cnp.HTTPRule(method="get"), "GET", "/", False),  # case-sensitive, as RE2 is
    (cnp.HTTPRule(method="PUT", path="/v1/.+"), "PUT", "/v1/", False),
    (cnp.HTTPRule(), "DELETE", "/any", True),  # no fields: matches every request
])
def test_http_rule_semantics(rule: cnp.HTTPRule, method: str, path: str, ok: bool) -> None:
    assert rule.matches(method, path, "", {}) is ok


def test_host_and_header_rules() -> None:
    r = cnp.HTTPRule(host="api\\.example\\.com", headers=(("X-Token", None),
                                                           ("X-Mode", "ro")))
    hdrs = {"x-token": ["abc"], "x-mode": ["ro"]}
    assert r.matches("GET", "/", "api.example.com", hdrs)
    assert not r.matches("GET", "/", "api.example.com:8080", hdrs)
    assert not r.matches("GET", "/", "api.example.com", {"x-mode": ["ro"]})
    assert not r.matches("GET", "/", "api.example.com", {"x-token": ["1"], "x-mode": ["rw"]})


def test_denied_response_is_ciliums() -> None:
    assert http1.denied_response(NOW) == (
        b"HTTP/1.1 403 Forbidden\r\ncontent-length: 15\r\ncontent-type: text/plain\r\n"
        b"date: Wed, 26 Nov 2025 05:00:00 GMT\r\nserver: envoy\r\n\r\nAccess denied\r\n")


# ---- the proxy, end to end on loopback ----------------------------------------------------------

async def _upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A keep-alive server answering `<method> <target> body=<bytes of the body>`."""
    try:
        while True:
            head = http1.parse_head(await reader.readuntil(b"\r\n\r\n"), request=True)
            kind, n = http1.body_framing(head, request=True)
            body = b""
            if kind == http1.LENGTH:
                body = await reader.readexactly(n)
            elif kind == http1.CHUNKED:
                while (size := http1.chunk_size(await reader.readuntil(b"\r\n"))) > 0:
                    body += (await reader.readexactly(size + 2))[:-2]
                await reader.readuntil(b"\r\n")
            text = f"{head.start[0]} {head.start[1]} body={body.decode()}".encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _policy(port: int, entries: tuple[L7Entry, ...], plain_peer: int | None = None
            ) -> ProxyPolicy:
    ing = DirectionBuilder()
    ing.isolate("web/api-only")
    lp = L7Port("web/server", SERVER, port, 15001, entries)
    ing.grant(CLIENT_ID, PROTO_TCP, port, port, RuleRef("web/api-only", 0, "CNP", lp))
    if plain_peer is not None:
        ing.grant(plain_peer, PROTO_TCP, port, port, RuleRef("web/l4", 0))
    node = NodePolicy(identities={ip_bytes(CLIENT): CLIENT_ID, ip_bytes(SERVER): 301})
    node.pods[ip_bytes(SERVER)] = PodPolicy("web/server", 301, ing.build())
    return ProxyPolicy(node, {(SERVER, port): lp}, {(SERVER, 15001): lp}, {SERVER: "x"},
                       {CLIENT: "web/client", SERVER: "web/server"})


GET_API = (L7Entry("web/api-only", 0, frozenset({CLIENT_ID}),
                   (cnp.HTTPRule(method="GET", path="/api/.*"),)),)


@pytest.fixture
async def rig(tmp_path):
    up = await asyncio.start_server(_upstream, SERVER, 0)
    port = up.sockets[0].getsockname()[1]

    async def connect(_netns: str, ip: str, p: int):
        return await asyncio.open_connection(ip, p)

    events = open_log(tmp_path / "l7-n1.jsonl")
    proxy = Proxy("n1", events, connect, clock=lambda: NOW)
    proxy.policy = _policy(port, GET_API)
    front = await asyncio.start_server(lambda r, w: proxy.serve(r, w, SERVER, port),
                                       SERVER, 0, limit=http1.MAX_HEAD)
    yield proxy, front.sockets[0].getsockname()[1], port, tmp_path / "l7-n1.jsonl"
    front.close()
    up.close()
    events.close()


async def _client(port: int, src: str = CLIENT):
    return await asyncio.open_connection(SERVER, port, local_addr=(src, 0))


async def _response(r: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await r.readuntil(b"\r\n\r\n")
    n = int(http1.parse_head(head, request=False).get("content-length") or 0)
    return head, await r.readexactly(n)


async def test_allowed_forwarded_denied_403_on_one_connection(rig) -> None:
    proxy, pport, port, log = rig
    r, w = await _client(pport)
    w.write(b"GET /api/posts HTTP/1.1\r\nHost: s\r\n\r\n")
    head, body = await _response(r)
    assert head.startswith(b"HTTP/1.1 200 OK") and body == b"GET /api/posts body="
    w.write(b"GET /admin HTTP/1.1\r\nHost: s\r\n\r\n")
    head, body = await _response(r)
    assert head + body == http1.denied_response(NOW)
    # a denied request with a body: the body is consumed, the connection stays in step
    w.write(b"POST /api/posts HTTP/1.1\r\nHost: s\r\nContent-Length: 5\r\n\r\nhello")
    head, body = await _response(r)
    assert head.startswith(b"HTTP/1.1 403 Forbidden") and body == b"Access denied\r\n"
    w.write(b"GET /api/x HTTP/1.1\r\nHost: s\r\n\r\n")
    assert (await _response(r))[1] == b"GET /api/x body="
    w.close()
    events = read_events(log)
    assert [(e["method"], e["path"], e["status"], e["verdict"]) for e in events] == [
        ("GET", "/api/posts", 200, "FORWARDED"), ("GET", "/admin", 403, "DENIED"),
        ("POST", "/api/posts", 403, "DENIED"), ("GET", "/api/x", 200, "FORWARDED")]
    first = events[0]
    assert first["policy"] == "web/api-only" and first["rule"] == 0
    assert first["src"]["pod"] == "web/client" and first["dst"] == {
        "ip": SERVER, "port": port, "pod": "web/server"}
    assert proxy.counters == {"requests": 4, "forwarded": 2, "denied": 2, "errors": 0}


async def test_bodies_pass_through(rig) -> None:
    proxy, pport, _, _ = rig
    proxy.policy.l7[(SERVER, rig[2])] = L7Port("web/server", SERVER, rig[2], 15001, (
        L7Entry("web/api-only", 0, None, (cnp.HTTPRule(method="POST"),)),))
    r, w = await _client(pport)
    w.write(b"POST /p HTTP/1.1\r\nHost: s\r\nContent-Length: 3\r\n\r\nabc")
    assert (await _response(r))[1] == b"POST /p body=abc"
    w.write(b"POST /c HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nxyz\r\n2;ext=1\r\n12\r\n0\r\n\r\n")
    assert (await _response(r))[1] == b"POST /c body=xyz12"
    w.close()


async def test_unknown_source_and_plain_grant(rig) -> None:
    proxy, pport, port, _ = rig
    r, w = await _client(pport, STRANGER)  # no identity: WORLD, no rule applies
    w.write(b"GET /api/posts HTTP/1.1\r\nHost: s\r\n\r\n")
    assert (await _response(r))[0].startswith(b"HTTP/1.1 403")
    w.close()
    # an L3/L4 grant for the same peer and port allows every request (Cilium's merge)
    proxy.policy = _policy(port, GET_API, plain_peer=CLIENT_ID)
    r, w = await _client(pport)
    w.write(b"DELETE /admin HTTP/1.1\r\nHost: s\r\n\r\n")
    assert (await _response(r))[1] == b"DELETE /admin body="
    w.close()


async def test_bad_request_and_connection_close(rig) -> None:
    _, pport, _, _ = rig
    r, w = await _client(pport)
    w.write(b"GET /api/a HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n")
    assert (await _response(r))[1] == b"GET /api/a body="
    assert await r.read() == b""  # closed after the response, as asked
    r, w = await _client(pport)
    w.write(b"NOT HTTP AT ALL\r\n\r\n")
    head = await r.read()
    assert head.startswith(b"HTTP/1.1 400 Bad Request")


def test_event_log_rotates(tmp_path) -> None:
    log = open_log(tmp_path / "l7.jsonl", max_bytes=200)
    for i in range(10):
        log.write([{"i": i, "pad": "x" * 40}])
    log.close()
    kept = [e["i"] for e in read_events(tmp_path / "l7.jsonl")]
    assert kept == list(range(kept[0], 10)) and 2 <= len(kept) < 10
    assert (tmp_path / "l7.jsonl.1").stat().st_size >= 200  # the older half, rotated once full
