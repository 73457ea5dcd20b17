"""pods/exec over SPDY/3.1 in-process, as kubectl <= 1.29 speaks it (client-go remotecommand):
the POST with `Upgrade: SPDY/3.1` and its X-Stream-Protocol-Version list, the 101 naming one,
the streams opened one by one (each waiting for its SYN_REPLY), stdin's FIN, the resize stream
of a tty, FIN on stdout/stderr, the Status on the error stream (v4 JSON, v2 text), and the
handshake's refusals. The command is a local process (argv_for is replaced): no root."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer

from emunet.api import channelspdy, podexec, spdy
from emunet.api.server import make_app
from emunet.api.view import View
from tests.unit.test_api import state
from tests.unit.test_api_portforward import Speaker

URL = "/api/v1/namespaces/blog-website/pods/frontend-client/exec"
# what kubectl 1.29 offers (1.27 and 1.28: the same without v5), one header each, as Go sends
KUBECTL_129 = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io",
               "v2.channel.k8s.io", "channel.k8s.io")


class SpdyCall:
    """One upgraded connection: the answer's status and headers, then a Speaker on it."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.sp: Speaker | None = None
        self.ids: dict[str, int] = {}
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, *kinds: str) -> None:
        """Streams in client-go's order, each after the previous one's SYN_REPLY."""
        assert self.sp is not None
        for kind in kinds:
            sid = 2 * len(self.ids) + 1
            self.ids[kind] = sid
            await self.sp.send(spdy.SynStream(sid, {"streamtype": kind}))
            await self.sp.until(lambda g, s=sid: any(
                isinstance(f, spdy.SynReply) and f.stream_id == s for f in g))

    async def write(self, kind: str, data: bytes, fin: bool = False) -> None:
        assert self.sp is not None
        await self.sp.send(spdy.Data(self.ids[kind], data, fin))

    async def ended(self, timeout: float = 10) -> None:
        """Until the error stream's FIN (the session's last word)."""
        assert self.sp is not None
        await self.sp.until(lambda g: self.sp.fin(self.ids["error"]), timeout)

    def data(self, kind: str) -> bytes:
        assert self.sp is not None
        return self.sp.data(self.ids[kind])

    def fin(self, kind: str) -> bool:
        assert self.sp is not None
        return self.sp.fin(self.ids[kind])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def spdy_call(client, path: str, params: list[tuple[str, str]],
                    versions: tuple[str, ...] = KUBECTL_129) -> SpdyCall:
    call = SpdyCall()
    reader, writer = await asyncio.open_connection(client.host, client.port)
    call.writer = writer
    offers = "".join(f"X-Stream-Protocol-Version: {v}\r\n" for v in versions)
    writer.write(f"POST {path}?{urlencode(params)} HTTP/1.1\r\nHost: x\r\n"
                 f"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n{offers}"
                 "Content-Length: 0\r\n\r\n".encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    lines = head.split("\r\n")
    call.status = int(lines[0].split()[1])
    call.headers = {k.strip().lower(): v.strip() for k, _, v in
                    (line.partition(":") for line in lines[1:] if line)}
    if call.status != 101:
        call.body = await reader.readexactly(int(call.headers.get("content-length", "0")))
        writer.close()
        return call

    async def send(data: bytes) -> None:
        writer.write(data)
        await writer.drain()
    call.sp = Speaker(send, lambda: reader.read(65536))
    return call


@pytest.fixture
async def api():
    async with TestClient(TestServer(make_app(View(None, state=state())))) as c:
        yield c


@pytest.fixture
def command(monkeypatch):
    """`command(script)`: what the exec runs (a local sh instead of the pod's namespaces)."""
    def use(script: str, tty: bool = False) -> None:
        argv = ["setsid", "-c", "sh", "-c", script] if tty else ["sh", "-c", script]
        monkeypatch.setattr(podexec, "argv_for", lambda *a: (argv, {"PATH": "/bin:/usr/bin"}))
    return use


EXEC = [("command", "x"), ("stdout", "true"), ("stderr", "true")]


async def test_v4_streams_and_the_exit_code_on_the_error_stream(api, command):
    command("echo out; echo err >&2; exit 3")
    call = await spdy_call(api, URL, EXEC)
    try:
        assert call.status == 101 and call.headers["upgrade"] == "SPDY/3.1"
        assert call.headers["x-stream-protocol-version"] == "v4.channel.k8s.io"
        await call.open("error", "stdout", "stderr")
        await call.ended()
        assert call.data("stdout") == b"out\n" and call.data("stderr") == b"err\n"
        assert call.fin("stdout") and call.fin("stderr")
        status = json.loads(call.data("error"))
        assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    finally:
        call.close()


async def test_stdin_fin_closes_the_commands_stdin(api, command):
    command("tr a-z A-Z")
    call = await spdy_call(api, URL, [*EXEC, ("stdin", "true")])
    try:
        await call.open("error", "stdin", "stdout", "stderr")
        await call.write("stdin", b"hello\n")
        await call.write("stdin", b"world\n", fin=True)  # kubectl: stdin's EOF is a FIN
        await call.ended()
        assert call.data("stdout") == b"HELLO\nWORLD\n"
        assert json.loads(call.data("error")) == {"metadata": {}, "status": "Success"}
    finally:
        call.close()


async def test_the_command_starts_once_every_stream_is_open(api, command):
    command("echo early")
    call = await spdy_call(api, URL, EXEC)
    try:
        await call.open("error", "stdout")
        await asyncio.sleep(0.3)  # no output yet: stderr was asked for and is not there
        assert call.data("stdout") == b""
        await call.open("stderr")
        await call.ended()
        assert call.data("stdout") == b"early\n"
    finally:
        call.close()


async def test_tty_resize_stream_sizes_the_pty(api, command):
    command("stty size; tty; exit 2", tty=True)
    call = await spdy_call(api, URL, [("command", "sh"), ("stdin", "true"),
                                      ("stdout", "true"), ("tty", "true")])
    try:
        await call.open("error", "stdin", "stdout", "resize")  # no stderr with a tty
        # Go's json.Encoder: one object per line, here split across two DATA frames
        await call.write("resize", b'{"Width":100,')
        await call.write("resize", b'"Height":30}\n')
        await call.ended()
        out = call.data("stdout")
        assert b"30 100" in out and b"/dev/pts/" in out
        assert json.loads(call.data("error"))["details"]["causes"][0]["message"] == "2"
    finally:
        call.close()


async def test_v2_client_gets_the_failure_as_text(api, command):
    command("exit 5")
    call = await spdy_call(api, URL, EXEC, versions=("v2.channel.k8s.io, channel.k8s.io",))
    try:
        assert call.headers["x-stream-protocol-version"] == "v2.channel.k8s.io"
        await call.open("error", "stdout", "stderr")
        await call.ended()
        assert call.data("error") == b"command terminated with non-zero exit code: " \
                                     b"exit status 5"
    finally:
        call.close()


async def test_v3_success_leaves_the_error_stream_empty(api, command):
    command("true")
    call = await spdy_call(api, URL, EXEC, versions=("v3.channel.k8s.io",))
    try:
        await call.open("error", "stdout", "stderr")
        await call.ended()
        assert call.data("error") == b""
    finally:
        call.close()


async def test_handshake_refusals_are_the_kubelets(api, command):
    command("true")
    call = await spdy_call(api, URL, EXEC, versions=("v9.channel.k8s.io",))
    assert call.status == 403
    assert json.loads(call.body)["message"] == (
        "unable to upgrade: unable to negotiate protocol: client supports "
        "[v9.channel.k8s.io], server accepts [v4.channel.k8s.io v3.channel.k8s.io "
        "v2.channel.k8s.io channel.k8s.io]")
    call = await spdy_call(api, URL, EXEC, versions=())
    assert call.status == 400
    assert json.loads(call.body)["message"] == (
        "unable to upgrade: X-Stream-Protocol-Version is required")


async def test_missing_streams_end_the_connection_without_running(api, monkeypatch, tmp_path):
    ran = tmp_path / "ran"
    monkeypatch.setattr(podexec, "argv_for", lambda *a: (["touch", str(ran)], {}))
    monkeypatch.setattr(channelspdy, "CREATE_TIMEOUT", 0.2)
    call = await spdy_call(api, URL, EXEC)
    try:
        await call.open("error")
        assert call.sp is not None
        await call.sp.until(lambda g: False, timeout=5)  # returns at the connection's end
        assert call.sp.eof and not ran.exists()
    finally:
        call.close()


async def test_the_client_leaving_kills_the_command(api, command, tmp_path):
    done = tmp_path / "done"
    command(f"sleep 1; touch {done}")
    call = await spdy_call(api, URL, EXEC)
    await call.open("error", "stdout", "stderr")
    call.close()
    await asyncio.sleep(1.5)
    assert not done.exists()
