"""pods/attach without root: a real process whose stdio a `Stdio` holds (pipes, or a pty with
tty), its attach socket (`AttachServer`), and the API's WebSocket relay in front of it
(aiohttp test client): channels 1/2 out, 0 in, v5's 255 0 closing stdin (stdinOnce), resize
on a tty, the Success Status on channel 3 when the output ends, and the kubelet's "not found"
answer for a container that is not running; the same over SPDY/3.1 streams (kubectl <= 1.29)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from emunet.api.server import make_app
from emunet.api.view import View
from emunet.cluster import stdio
from emunet.config import load_config_text
from emunet.model import Container
from emunet.state.plan import plan
from tests.unit.test_api_spdyexec import spdy_call

CONFIG = """\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {name: t}
spec:
  nodes: [{name: node-1}]
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: default}
spec:
  restartPolicy: Never
  containers:
    - {name: c, image: busybox, command: [cat], stdin: true, stdinOnce: true}
    - {name: t, image: busybox, command: [sh], stdin: true, tty: true}
    - {name: gone, image: busybox, command: [cat], stdin: true}
"""
URL = "/api/v1/namespaces/default/pods/p/attach"


def test_frames_round_trip():
    async def go():
        r = asyncio.StreamReader()
        r.feed_data(stdio.frame(stdio.STDOUT, b"hi") + stdio.frame(stdio.END))
        r.feed_eof()
        return [await stdio.read_frame(r), await stdio.read_frame(r),
                await stdio.read_frame(r)]
    assert asyncio.run(go()) == [(1, b"hi"), (3, b""), None]


def test_attach_socket_paths_fit_a_unix_socket(tmp_path):
    p = stdio.attach_socket(tmp_path, "n" * 63, "p" * 253, "c" * 63)
    assert len(str(p)) - len(str(tmp_path)) == len("/attach/.sock") + 20  # whatever the names
    assert p != stdio.attach_socket(tmp_path, "n", "p", "d")


class Held:
    """A process started the way the workloads start a held-stdio container (no sandbox)."""

    def __init__(self, tmp_path, c: Container, argv: list[str], run_dir) -> None:
        self.log = open(tmp_path / f"{c.name}.log", "ab")  # noqa: SIM115
        self.io = stdio.Stdio(c, self.log)
        cmd = ["setsid", "-w", "-c", *argv] if c.tty else argv
        self.popen = subprocess.Popen(cmd, stdin=self.io.child[0], stdout=self.io.child[1],
                                      stderr=self.io.child[2], start_new_session=True)
        self.io.started()
        self.server = stdio.AttachServer(stdio.attach_socket(run_dir, "default", "p", c.name),
                                         c.name, lambda: self.io)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        self.io.close()
        self.server.close()
        self.log.close()


@pytest.fixture
async def api(tmp_path, monkeypatch):
    monkeypatch.setenv("EMUNET_RUN_DIR", str(tmp_path))
    st = plan(load_config_text(CONFIG, "t.yaml"))
    ps = st.pods[("default", "p")]
    ps.running = True
    ps.containers = {"c": {"state": "running", "startedAt": time.time()},
                     "t": {"state": "running", "startedAt": time.time()},
                     "gone": {"state": "terminated", "exitCode": 0, "reason": "Completed"}}
    st.stamp(time.time())
    async with TestClient(TestServer(make_app(View(None, state=st)))) as client:
        yield client


async def collect(ws) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    async for msg in ws:
        out[msg.data[0]] = out.get(msg.data[0], b"") + msg.data[1:]
    return out


async def test_attach_feeds_stdin_and_streams_stdout_until_stdin_once_closes(api, tmp_path):
    held = Held(tmp_path, Container("c", command=("cat",), stdin=True, stdin_once=True),
                ["cat"], tmp_path)
    await held.server.start()
    try:
        ws = await api.ws_connect(URL, params={"container": "c", "stdin": "true",
                                               "stdout": "true", "stderr": "true"},
                                  protocols=("v5.channel.k8s.io",))
        await ws.send_bytes(b"\x00hello\n")
        await ws.send_bytes(b"\xff\x00")  # v5: close stdin: cat sees EOF and ends
        out = await asyncio.wait_for(collect(ws), 10)
        assert out[1] == b"hello\n"
        assert json.loads(out[3]) == {"metadata": {}, "status": "Success"}
        assert held.popen.wait(5) == 0
        assert (tmp_path / "c.log").read_bytes() == b"hello\n"  # the log has it too
    finally:
        held.stop()


async def test_attach_tty_resizes_and_runs_the_shell(api, tmp_path):
    c = Container("t", command=("sh",), stdin=True, tty=True)
    held = Held(tmp_path, c, ["sh"], tmp_path)
    await held.server.start()
    try:
        ws = await api.ws_connect(URL, params={"container": "t", "stdin": "true",
                                               "stdout": "true", "tty": "true"},
                                  protocols=("v5.channel.k8s.io",))
        await ws.send_bytes(b"\x04" + json.dumps({"Width": 91, "Height": 27}).encode())
        await ws.send_bytes(b"\x00stty size; tty; exit 4\n")
        out = await asyncio.wait_for(collect(ws), 10)
        assert b"27 91" in out[1] and b"/dev/pts/" in out[1]
        assert 2 not in out  # a tty has one stream
        assert json.loads(out[3])["status"] == "Success"  # attach reports no exit code
        assert held.popen.wait(5) == 4
    finally:
        held.stop()


async def test_attach_over_spdy_feeds_stdin_and_ends_with_success(api, tmp_path):
    held = Held(tmp_path, Container("c", command=("cat",), stdin=True, stdin_once=True),
                ["cat"], tmp_path)
    await held.server.start()
    call = await spdy_call(api, URL, [("container", "c"), ("stdin", "true"),
                                      ("stdout", "true"), ("stderr", "true")])
    try:
        assert call.headers["x-stream-protocol-version"] == "v4.channel.k8s.io"
        await call.open("error", "stdin", "stdout", "stderr")
        await call.write("stdin", b"hello\n", fin=True)  # stdin's FIN: stdinOnce closes it
        await call.ended()
        assert call.data("stdout") == b"hello\n"
        assert json.loads(call.data("error")) == {"metadata": {}, "status": "Success"}
        assert held.popen.wait(5) == 0
    finally:
        call.close()
        held.stop()


async def test_attach_tty_over_spdy_resizes(api, tmp_path):
    held = Held(tmp_path, Container("t", command=("sh",), stdin=True, tty=True), ["sh"],
                tmp_path)
    await held.server.start()
    call = await spdy_call(api, URL, [("container", "t"), ("stdin", "true"),
                                      ("stdout", "true"), ("tty", "true")])
    try:
        await call.open("error", "stdin", "stdout", "resize")
        await call.write("resize", b'{"Width":91,"Height":27}\n')
        await call.write("stdin", b"stty size; exit 4\n")
        await call.ended()
        assert b"27 91" in call.data("stdout")
        assert held.popen.wait(5) == 4
    finally:
        call.close()
        held.stop()


async def test_attach_to_a_container_that_is_not_running_is_the_kubelets_not_found(api):
    r = await api.get(URL, params={"container": "gone", "stdout": "true"},
                      headers={"Connection": "Upgrade", "Upgrade": "websocket",
                               "Sec-WebSocket-Version": "13",
                               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert r.status == 400
    assert (await r.json())["message"] == "container gone not found in pod p_default"


async def test_attach_socket_refuses_when_the_run_ended(tmp_path):
    server = stdio.AttachServer(tmp_path / "a.sock", "c", lambda: None)
    await server.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "a.sock"))
        writer.write(b'{"stdin": true}\n')
        assert json.loads(await reader.readline()) == {
            "ok": False, "error": "container c is not running"}
        writer.close()
    finally:
        server.close()
