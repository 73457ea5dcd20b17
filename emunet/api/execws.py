"""pods/exec over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`): run a command in a pod.

The command runs in the container's namespaces, as `emunet exec` runs it (emunet.host.sandbox:
network, UTS, IPC, mount with the pod's resolv.conf, PID), as the container's user. Framing
(k8s.io/apimachinery pkg/util/remotecommand, KEP-4006): every binary message starts with its
channel; client to server 0 stdin, 4 resize (`{"Width":..,"Height":..}`), v5's 255 + channel
(close that stream: 255 0 closes stdin); server to client 1 stdout, 2 stderr, 3 the exit Status
(metav1.Status, `NonZeroExitCode` with an `ExitCode` cause, which kubectl turns into its own
exit code), then a close. `tty=true` gives the command a pty (resize: TIOCSWINSZ) and makes it
a session leader with the pty as controlling terminal (setsid -c), as a container's tty is.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import pty
import signal
import struct
import termios
from typing import Any

from aiohttp import WSMsgType, web

from emunet import naming
from emunet.api import status
from emunet.api.target import Target, container_of
from emunet.api.view import View
from emunet.host import sandbox
from emunet.host.manifest import Manifest

log = logging.getLogger("emunet.api.exec")
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
FIRST_SIZE_WAIT = 0.5  # seconds a tty command waits for the client's terminal size


def exit_status(rc: int) -> dict[str, Any]:
    """The channel-3 Status for an exit code (a signal: 128 + its number, as a shell says)."""
    if rc < 0:
        rc = 128 - rc
    if rc == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: exit status {rc}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(rc)}]}}


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name) in ("true", "1")


def argv_for(view: View, t: Target, container: str, command: list[str], tty: bool
             ) -> tuple[list[str], dict[str, str]]:
    """In the container's namespaces (emunet.host.sandbox), as the container's user."""
    ps = view.state.pods[t.key]
    c = next(c for c in ps.pod.containers if c.name == container)
    processes = Manifest.open(naming.run_dir() / "manifest.json").processes()
    return sandbox.exec_command(ps.pod, ps.netns, c, processes, command, as_user=True,
                                tty=tty)


async def serve(request: web.Request, view: View, t: Target,
                pod: dict[str, Any]) -> web.StreamResponse:
    container = container_of(pod, request.query.get("container"))
    command = request.query.getall("command", [])
    if not command:
        raise status.bad_request("you must specify at least one command for the container")
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise status.bad_request("Upgrade request required")  # legacy SPDY exec: kubectl < 1.30
    tty = _flag(request, "tty")
    argv, env = argv_for(view, t, container, command, tty)
    ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=16 * 1024 * 1024)
    await ws.prepare(request)
    v5 = ws.ws_protocol == PROTOCOLS[0]
    session = _Session(ws, v5)
    try:
        await session.run(argv, env, tty, _flag(request, "stdin"), _flag(request, "stderr"))
    finally:
        await ws.close()
    return ws


class _Session:
    def __init__(self, ws: web.WebSocketResponse, v5: bool) -> None:
        self.ws, self.v5 = ws, v5
        self.proc: asyncio.subprocess.Process | None = None
        self.master: int | None = None
        self.sized = asyncio.Event()  # the client's first terminal size arrived

    async def send(self, channel: int, data: bytes) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_bytes(bytes([channel]) + data)

    async def run(self, argv: list[str], env: dict[str, str], tty: bool, stdin: bool,
                  stderr: bool) -> None:
        pumps: list[asyncio.Task] = []
        reader: asyncio.Task | None = None
        try:
            if tty:
                self.master, slave = pty.openpty()
                # kubectl sends the terminal size right after connecting: give the command
                # the right size from its start (`stty size` as its first act), briefly
                reader = asyncio.create_task(self._read_client())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.sized.wait(), FIRST_SIZE_WAIT)
                self.proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=slave, stdout=slave, stderr=slave, env=env)
                os.close(slave)
                pumps.append(asyncio.create_task(self._pump_pty(self.master)))
            else:
                self.proc = await asyncio.create_subprocess_exec(
                    *argv, env=env, start_new_session=True,
                    stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE if stderr else asyncio.subprocess.DEVNULL)
                assert self.proc.stdout is not None
                pumps.append(asyncio.create_task(self._pump(self.proc.stdout, STDOUT)))
                if self.proc.stderr is not None:
                    pumps.append(asyncio.create_task(self._pump(self.proc.stderr, STDERR)))
        except OSError as e:
            if reader is not None:
                reader.cancel()
            await self.send(ERROR, json.dumps({"metadata": {}, "status": "Failure",
                                               "message": f"cannot run the command: {e}",
                                               "reason": "InternalError"}).encode())
            return
        reader = reader or asyncio.create_task(self._read_client())
        waiter = asyncio.create_task(self.proc.wait())
        done, _ = await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:  # the client went away first: end the command
            self._kill()
            await waiter
        # a background child may keep stdout open after the command exits: do not wait forever
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*pumps, return_exceptions=True), 5)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        if self.master is not None:
            os.close(self.master)
        rc = waiter.result()
        await self.send(ERROR, json.dumps(exit_status(rc)).encode())

    def _kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def _pump(self, stream: asyncio.StreamReader, channel: int) -> None:
        while chunk := await stream.read(65536):
            await self.send(channel, chunk)

    async def _pump_pty(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[bytes] = asyncio.Queue()
        os.set_blocking(fd, False)

        def readable() -> None:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:  # EIO: every holder of the slave closed it (the command ended)
                data = b""
            if not data:
                loop.remove_reader(fd)
            q.put_nowait(data)

        loop.add_reader(fd, readable)
        try:
            while chunk := await q.get():
                await self.send(STDOUT, chunk)
        finally:
            loop.remove_reader(fd)

    async def _read_client(self) -> None:
        async for msg in self.ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, data = msg.data[0], msg.data[1:]
            if channel == STDIN:
                await self._stdin(data)
            elif channel == RESIZE and self.master is not None:
                self._resize(data)
            elif channel == CLOSE and self.v5 and data[:1] == bytes([STDIN]):
                await self._stdin(None)
        # the client closed its side: the loop ends, run() ends the command if still running

    async def _stdin(self, data: bytes | None) -> None:
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.write(self.master, data if data is not None else b"\x04")
            return
        if self.proc is None or self.proc.stdin is None:
            return
        with contextlib.suppress(ConnectionError, BrokenPipeError):
            if data is None:
                self.proc.stdin.close()
            else:
                self.proc.stdin.write(data)
                await self.proc.stdin.drain()

    def _resize(self, data: bytes) -> None:
        try:
            size = json.loads(data)
            cols, rows = int(size.get("Width", 0)), int(size.get("Height", 0))
        except (ValueError, AttributeError):
            return
        if cols and rows and self.master is not None:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            self.sized.set()
