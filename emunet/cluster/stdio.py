"""A container's stdio held by the supervisor, as conmon holds it for CRI-O: the log and the
attach socket of containers with `stdin` or `tty`.

A container with `stdin: true` or `tty: true` does not write into its log file directly: the
supervisor keeps the other ends of its pipes (stdin, stdout, stderr), or the master of its pty
with `tty` (one stream, stdout), copies every byte of output into the container log and to the
clients attached at that moment, and feeds their stdin to the container. `stdinOnce`: stdin
closes when the first client that attached to it leaves (core/v1 Container), so a shell ends;
without it stdin stays open across attach sessions. Output printed while nobody is attached
is only in the log, as on a real node (kubectl run falls back to the logs).

The attach socket (`attach_socket`, root-only like the run directory) serves the API server's
pods/attach (emunet.api.podattach). Protocol: the client sends one JSON line `{"stdin": bool}`,
the server answers one JSON line (`{"ok": true, "tty": bool}`, or `{"ok": false, "error": ..}`
when the container is not running), then both send frames `[channel][length, 4 bytes big
endian][data]` with the channels of the Kubernetes stream protocol: client to server 0 stdin,
4 resize (`{"Width":..,"Height":..}`), 255 close stdin; server to client 1 stdout, 2 stderr, and
3 (empty) when the container's output ended, after which the server closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import pty
import struct
import termios
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from emunet.model import Container

log = logging.getLogger("emunet.cluster.stdio")
STDIN, STDOUT, STDERR, END, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
_HEAD = struct.Struct(">BI")
MAX_FRAME = 1 << 20
CLIENT_BACKLOG = 4 << 20  # bytes a slow attached client may lag before it is dropped
EOT = b"\x04"  # a tty's end of input (VEOF): how stdin "closes" on a terminal


def attach_socket(run_dir: Path, namespace: str, pod: str, container: str) -> Path:
    """The container's attach socket (a digest: unix socket paths are at most 107 bytes)."""
    digest = hashlib.sha256(f"{namespace}/{pod}/{container}".encode()).hexdigest()[:20]
    return run_dir / "attach" / f"{digest}.sock"


def frame(channel: int, data: bytes = b"") -> bytes:
    return _HEAD.pack(channel, len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
    """The next frame, None at the end of the stream (or a frame too large to be ours)."""
    try:
        channel, size = _HEAD.unpack(await reader.readexactly(_HEAD.size))
        if size > MAX_FRAME:
            return None
        return channel, await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def wants_stdio(c: Container) -> bool:
    return c.stdin or c.tty


def set_size(fd: int, data: bytes) -> None:
    """A resize message (`{"Width":..,"Height":..}`) applied to a pty (TIOCSWINSZ: SIGWINCH)."""
    try:
        size = json.loads(data)
        cols, rows = int(size.get("Width", 0)), int(size.get("Height", 0))
    except (ValueError, AttributeError, TypeError):
        return
    if cols > 0 and rows > 0:
        with contextlib.suppress(OSError):
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Stdio:
    """One run of one container: the fds it gets, the ends the supervisor keeps."""

    def __init__(self, c: Container, logf: BinaryIO) -> None:
        self.tty, self.once, self.log = c.tty, c.stdin_once, logf
        self.clients: set[asyncio.StreamWriter] = set()
        self.stdin_taken = False  # stdinOnce: a client attached to stdin already
        self._pending = bytearray()  # stdin not yet taken by the container
        self._open: list[int] = []  # output fds still read
        self.child: tuple[int, int, int]
        if c.tty:
            self.master, slave = pty.openpty()
            self.stdin_fd: int | None = self.master if c.stdin else None
            self.child = (slave if c.stdin else os.open(os.devnull, os.O_RDONLY), slave, slave)
            self._outs = {self.master: STDOUT}
            self._mine = [self.master]
        else:
            self.master = -1
            in_r, in_w = os.pipe()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            self.stdin_fd = in_w
            self.child = (in_r, out_w, err_w)
            self._outs = {out_r: STDOUT, err_r: STDERR}
            self._mine = [in_w, out_r, err_r]
        self.ended = asyncio.Event()
        self.on_end: Callable[[], None] | None = None  # the output ended by itself (EOF)

    def started(self) -> None:
        """The container runs: drop the child's ends, read its output."""
        for fd in set(self.child):
            os.close(fd)
        loop = asyncio.get_running_loop()
        for fd in self._mine:
            os.set_blocking(fd, False)
        for fd in self._outs:
            self._open.append(fd)
            loop.add_reader(fd, self._readable, fd)

    def _readable(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: a pty whose every slave holder closed it (the process ended)
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(fd)
            self._open.remove(fd)
            if not self._open:
                self.close()
                if self.on_end is not None:
                    self.on_end()
            return
        with contextlib.suppress(OSError, ValueError):
            self.log.write(data)
            self.log.flush()
        msg = frame(self._outs[fd], data)
        for w in list(self.clients):
            if w.transport.get_write_buffer_size() > CLIENT_BACKLOG:
                self._drop(w)
            else:
                w.write(msg)

    def write_stdin(self, data: bytes) -> None:
        if self.stdin_fd is None:
            return
        self._pending += data
        self._flush()

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        fd = self.stdin_fd
        if fd is None:
            return
        try:
            while self._pending:
                n = os.write(fd, self._pending)
                del self._pending[:n]
        except BlockingIOError:
            loop.add_writer(fd, self._writable)
            return
        except OSError:  # the container closed its stdin (or exited)
            self._pending.clear()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_writer(fd)

    def _writable(self) -> None:
        self._flush()

    def close_stdin(self) -> None:
        """End of input: a pipe closes; a tty reads end-of-file (its line discipline's VEOF)."""
        if self.stdin_fd is None:
            return
        if self.tty:
            self.write_stdin(EOT)
            return
        fd, self.stdin_fd = self.stdin_fd, None
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_writer(fd)
        self._mine.remove(fd)
        os.close(fd)

    def resize(self, data: bytes) -> None:
        if self.tty:
            set_size(self.master, data)

    def _drop(self, w: asyncio.StreamWriter) -> None:
        self.clients.discard(w)
        w.close()

    def close(self) -> None:
        """The output ended (or the workload stops): tell the clients, let go of every fd."""
        if self.ended.is_set():
            return
        self.ended.set()
        loop = asyncio.get_running_loop()
        for fd in self._open:
            loop.remove_reader(fd)
        self._open.clear()
        for w in list(self.clients):
            w.write(frame(END))
            self._drop(w)
        for fd in self._mine:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_writer(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        self._mine.clear()
        self.stdin_fd = None


class AttachServer:
    """A container's attach socket; `current` gives the running Stdio, None when it is not."""

    def __init__(self, path: Path, name: str, current: Callable[[], Stdio | None]) -> None:
        self.path, self.name, self.current = path, name, current
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o077)  # root-only, as the control socket
        try:
            self.server = await asyncio.start_unix_server(self._client, path=str(self.path))
        finally:
            os.umask(old)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hello = json.loads(await reader.readline() or b"{}")
        except (ValueError, ConnectionError):
            writer.close()
            return
        io = self.current()
        if io is None or io.ended.is_set():
            writer.write(json.dumps({"ok": False, "error": f"container {self.name} is not "
                                     "running"}).encode() + b"\n")
            writer.close()
            return
        stdin = bool(hello.get("stdin")) and io.stdin_fd is not None
        owner = stdin and io.once and not io.stdin_taken  # stdinOnce: this client's stdin
        io.stdin_taken = io.stdin_taken or stdin
        writer.write(json.dumps({"ok": True, "tty": io.tty}).encode() + b"\n")
        io.clients.add(writer)
        try:
            while (msg := await read_frame(reader)) is not None:
                channel, data = msg
                if channel == STDIN and stdin:
                    io.write_stdin(data)
                elif channel == RESIZE:
                    io.resize(data)
                elif channel == CLOSE and data[:1] == bytes([STDIN]) and owner:
                    io.close_stdin()
        finally:
            if owner and not io.ended.is_set():
                io.close_stdin()  # the first attached client left: stdinOnce closes stdin
            io.clients.discard(writer)
            writer.close()
