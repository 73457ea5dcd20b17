"""pods/exec: run a command in a pod, for a client on WebSocket or SPDY (emunet.api.channels).

The command runs in the container's namespaces, as `emunet exec` runs it (emunet.host.sandbox:
network, UTS, IPC, mount with the pod's resolv.conf, PID), as the container's user. Its stdout
and stderr go to the client's channels, the client's stdin to it (its end closes the command's
stdin), and its exit code is the final Status (NonZeroExitCode with an ExitCode cause, which
kubectl turns into its own exit code). `tty=true` gives the command a pty (resize: TIOCSWINSZ)
and makes it a session leader with the pty as controlling terminal (setsid -c), as a container's
tty is. `open_client` picks the carrier by the request's Upgrade header (attach uses it too).
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

from aiohttp import web

from emunet import naming
from emunet.api import channelspdy, channelws, spdyupgrade, status
from emunet.api.channels import (
    CLOSE,
    RESIZE,
    STDERR,
    STDIN,
    STDOUT,
    Client,
    Options,
    exit_status,
    failure,
)
from emunet.api.target import Target, container_of
from emunet.api.view import View
from emunet.host import sandbox
from emunet.host.manifest import Manifest

log = logging.getLogger("emunet.api.exec")
FIRST_SIZE_WAIT = 0.5  # seconds a tty command waits for the client's terminal size


def check_upgrade(request: web.Request) -> None:
    """Before any work: exec and attach need a WebSocket or SPDY/3.1 upgrade."""
    if (request.headers.get("Upgrade", "").lower() != "websocket"
            and not spdyupgrade.is_spdy(request)):
        raise status.bad_request("Upgrade request required")


async def open_client(request: web.Request, opts: Options, name: str) -> Client:
    """The upgraded connection and its channels (SPDY: once the client opened its streams)."""
    if spdyupgrade.is_spdy(request):
        return await channelspdy.accept(request, opts, name)
    return await channelws.accept(request, opts)


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
    check_upgrade(request)
    opts = Options.of(request)
    argv, env = argv_for(view, t, container, command, opts.tty)
    client = await open_client(request, opts, f"exec {t.key[0]}/{t.key[1]}")
    try:
        if client.connected:
            await client.finish(await Command(client).run(argv, env, opts))
    finally:
        await client.close()
    return client.response


class Command:
    """One command's process, its pty or pipes, and the pumps between it and the client."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.proc: asyncio.subprocess.Process | None = None
        self.master: int | None = None
        self.sized = asyncio.Event()  # the client's first terminal size arrived

    async def run(self, argv: list[str], env: dict[str, str], opts: Options) -> dict[str, Any]:
        """Until the command exits (or the client leaves: it is killed); the final Status."""
        pumps: list[asyncio.Task] = []
        reader: asyncio.Task | None = None
        try:
            if opts.tty:
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
                    stdin=asyncio.subprocess.PIPE if opts.stdin else asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE if opts.stderr else asyncio.subprocess.DEVNULL)
                assert self.proc.stdout is not None
                pumps.append(asyncio.create_task(self._pump(self.proc.stdout, STDOUT)))
                if self.proc.stderr is not None:
                    pumps.append(asyncio.create_task(self._pump(self.proc.stderr, STDERR)))
        except OSError as e:
            if reader is not None:
                reader.cancel()
            if self.master is not None:
                os.close(self.master)
            return failure(f"cannot run the command: {e}")
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
        return exit_status(waiter.result())

    def _kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def _pump(self, stream: asyncio.StreamReader, channel: int) -> None:
        while chunk := await stream.read(65536):
            await self.client.send(channel, chunk)

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
                await self.client.send(STDOUT, chunk)
        finally:
            loop.remove_reader(fd)

    async def _read_client(self) -> None:
        async for channel, data in self.client.inputs():
            if channel == STDIN:
                await self._stdin(data)
            elif channel == RESIZE and self.master is not None:
                self._resize(data)
            elif channel == CLOSE:
                await self._stdin(None)
        # the client went away: the loop ends, run() ends the command if still running

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
        except (ValueError, AttributeError, TypeError):
            return
        if cols > 0 and rows > 0 and self.master is not None:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            self.sized.set()
