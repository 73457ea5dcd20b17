"""One SPDY/3.1 session, the server side: streams the client opens, their data and flow control,
over any byte transport (WebSocket messages, or the raw TCP connection after a 101 upgrade).

The transport gives `Session.run` an async iterator of received bytes and a `send` coroutine;
each stream the client opens is handed to `on_stream` in a task of its own, which answers it
(`Stream.reply`), reads (`read`, b"" at the client's FIN or a reset), writes (`write`) and
half-closes (`close`, a FIN). PINGs the client starts are echoed (draft 3 2.6.5).

Flow control (SPDY/3.1 2.6.8): the windows start at 64 KiB per stream and per session. What
this side consumes is given back with WINDOW_UPDATE once half a window has been read, so a peer
that keeps windows never stalls. When sending, the peer's windows are kept, with one allowance:
moby/spdystream, the SPDY of kubectl and the kubelet, keeps no windows and never sends
WINDOW_UPDATE (measured: a kubectl port-forward session sends none), so a sender that waited for
one would stop every stream at 64 KiB. A peer that has never sent a WINDOW_UPDATE or an initial
window SETTING by the time a window runs out, and sends none within PEER_GRACE, is taken for
such a peer and its windows are no longer waited for in that session.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from emunet.api import spdy

log = logging.getLogger("emunet.api.spdy")
MAX_DATA = 32 * 1024  # bytes per DATA frame this side sends
QUEUE_HIGH = 1024 * 1024  # received bytes a stream may hold unread before reading pauses
PEER_GRACE = 0.5  # seconds a sender waits for a first WINDOW_UPDATE (see the module doc)
TASK_GRACE = 2.0  # seconds stream tasks get to finish once the session has ended


class Closed(Exception):
    """The stream was reset or the session ended: nothing more can be sent on it."""


class Stream:
    """A stream the client opened: its SYN_STREAM headers, what arrived, what may be sent."""

    def __init__(self, session: Session, stream_id: int, headers: dict[str, str],
                 fin: bool) -> None:
        self.session, self.id, self.headers = session, stream_id, headers
        self._in: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._wake = asyncio.Event()  # data, FIN or reset arrived
        self._drained = asyncio.Event()  # cleared while more than QUEUE_HIGH bytes wait
        self._drained.set()
        self.remote_closed = fin  # the client's FIN arrived
        self.local_closed = False  # our FIN went out
        self.replied = False
        self.send_window = session.peer_initial_window
        self.unacked = 0  # bytes consumed and not yet given back with WINDOW_UPDATE
        self.ended = asyncio.Event()  # reset by either side, or the session is over

    @property
    def done(self) -> bool:
        return self.ended.is_set() or (self.remote_closed and self.local_closed)

    async def reply(self, headers: dict[str, str] | None = None) -> None:
        if not self.replied:
            self.replied = True
            await self.session.send(spdy.SynReply(self.id, headers or {}))

    async def read(self) -> bytes:
        """The next bytes the client sent; b"" once it sent FIN or the stream ended."""
        while not self._in:
            if self.remote_closed or self.ended.is_set():
                return b""
            self._wake.clear()
            await self._wake.wait()
        data = self._in.popleft()
        self._queued -= len(data)
        if self._queued < QUEUE_HIGH:
            self._drained.set()
        await self.session.consumed(self, len(data))
        return data

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = await self.session.take_window(self, min(len(view), MAX_DATA))
            await self.session.send(spdy.Data(self.id, bytes(view[:n])))
            view = view[n:]

    async def close(self) -> None:
        """Half-close: FIN (once), unless the stream already ended."""
        if self.local_closed or self.ended.is_set():
            return
        self.local_closed = True
        with contextlib.suppress(Closed):
            await self.session.send(spdy.Data(self.id, b"", fin=True))
        self.session.forget_if_done(self)

    async def reset(self, status: int = spdy.CANCEL) -> None:
        if not self.ended.is_set():
            self.end()
            with contextlib.suppress(Closed):
                await self.session.send(spdy.RstStream(self.id, status))

    def end(self) -> None:
        self.ended.set()
        self._wake.set()
        self._drained.set()
        self.session.forget(self)

    def _arrived(self, data: bytes, fin: bool) -> None:
        if data:
            self._in.append(data)
            self._queued += len(data)
            if self._queued >= QUEUE_HIGH:
                self._drained.clear()
        if fin:
            self.remote_closed = True
        self._wake.set()


class Session:
    """The server side of one SPDY connection (client streams have odd ids, draft 3 2.3.2)."""

    def __init__(self, send: Callable[[bytes], Awaitable[object]],
                 on_stream: Callable[[Stream], Awaitable[None]], name: str = "spdy") -> None:
        self._send, self._on_stream, self.name = send, on_stream, name
        self.codec = spdy.Codec()
        self.streams: dict[int, Stream] = {}
        self._lock = asyncio.Lock()  # frames go out whole and in encoding order (zlib state)
        self._tasks: set[asyncio.Task] = set()
        self.last_peer_id = 0
        self.peer_initial_window = spdy.INITIAL_WINDOW
        self.send_window = spdy.INITIAL_WINDOW  # the peer's session window
        self.unacked = 0
        self.peer_keeps_windows: bool | None = None  # unknown until a WINDOW_UPDATE/SETTINGS
        self._window_changed = asyncio.Event()
        self.going_away = False
        self.over = False

    async def send(self, frame: spdy.Frame) -> None:
        if self.over:
            raise Closed
        async with self._lock:
            try:
                await self._send(self.codec.encode(frame))
            except (ConnectionError, RuntimeError) as e:  # the transport went away
                self.over = True
                raise Closed from e

    async def run(self, source: AsyncIterator[bytes]) -> None:
        """Read the client's frames until the transport ends, then end every stream."""
        try:
            async for chunk in source:
                for frame in self.codec.feed(chunk):
                    await self._handle(frame)
        except spdy.ProtocolError as e:
            log.warning("%s: SPDY protocol error from the client: %s", self.name, e)
            with contextlib.suppress(Closed):
                await self.send(spdy.GoAway(self.last_peer_id, spdy.GOAWAY_PROTOCOL_ERROR))
        except (ConnectionError, Closed):
            pass
        finally:
            await self._finish()

    async def goaway(self) -> None:
        """No new streams (the server is stopping); the transport is closed by the caller."""
        if not self.going_away:
            self.going_away = True
            with contextlib.suppress(Closed):
                await self.send(spdy.GoAway(self.last_peer_id, spdy.GOAWAY_OK))

    async def _finish(self) -> None:
        self.over = True
        for s in list(self.streams.values()):
            s.end()
        self._window_changed.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=TASK_GRACE)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def forget(self, s: Stream) -> None:
        self.streams.pop(s.id, None)

    def forget_if_done(self, s: Stream) -> None:
        if s.done:
            self.forget(s)

    async def _handle(self, f: spdy.Frame) -> None:
        if isinstance(f, spdy.Data):
            self.unacked += len(f.data)
            s = self.streams.get(f.stream_id)
            if s is None:  # a stream already reset or finished: the bytes are dropped
                await self._ack_session()
                return
            s._arrived(f.data, f.fin)
            self.forget_if_done(s)
            await s._drained.wait()  # a peer that overruns its window waits here
        elif isinstance(f, spdy.SynStream):
            await self._syn_stream(f)
        elif isinstance(f, spdy.RstStream):
            if (s := self.streams.get(f.stream_id)) is not None:
                s.end()
        elif isinstance(f, spdy.WindowUpdate):
            self.peer_keeps_windows = True
            if f.stream_id == 0:
                self.send_window += f.delta
            elif (s := self.streams.get(f.stream_id)) is not None:
                s.send_window += f.delta
            self._windows_moved()
        elif isinstance(f, spdy.Settings):
            if spdy.SETTINGS_INITIAL_WINDOW_SIZE in f.values:
                new = f.values[spdy.SETTINGS_INITIAL_WINDOW_SIZE]
                for s in self.streams.values():  # draft 3.1 2.6.4: applies to open streams
                    s.send_window += new - self.peer_initial_window
                self.peer_initial_window = new
                self.peer_keeps_windows = True
                self._windows_moved()
        elif isinstance(f, spdy.Ping):
            if f.id % 2 == 1:  # the client's own ping (ours would be even): echo it
                await self.send(f)
        elif isinstance(f, spdy.GoAway):
            self.going_away = True  # the client opens no more streams; open ones go on
        elif isinstance(f, spdy.Headers):
            if f.fin and (s := self.streams.get(f.stream_id)) is not None:
                s._arrived(b"", True)
        # SynReply (this side opens no streams) and unknown control frames are ignored

    async def _syn_stream(self, f: spdy.SynStream) -> None:
        if f.stream_id % 2 == 0 or f.stream_id <= self.last_peer_id:
            raise spdy.ProtocolError(f"SYN_STREAM with stream id {f.stream_id} (client ids are "
                                     f"odd and increase; the last was {self.last_peer_id})")
        self.last_peer_id = f.stream_id
        if self.going_away:
            await self.send(spdy.RstStream(f.stream_id, spdy.REFUSED_STREAM))
            return
        s = Stream(self, f.stream_id, f.headers, f.fin)
        self.streams[f.stream_id] = s
        task = asyncio.create_task(self._serve(s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, s: Stream) -> None:
        try:
            await self._on_stream(s)
        except Closed:
            pass
        except Exception as e:  # one line, no traceback: the stream is reset
            log.error("%s: stream %d failed: %s: %s", self.name, s.id, type(e).__name__, e)
            await s.reset(spdy.INTERNAL_ERROR)

    async def consumed(self, s: Stream, n: int) -> None:
        """`n` bytes of `s` were read: give the windows back once half of one is used."""
        s.unacked += n
        if s.unacked >= self.peer_initial_window // 2 and not s.ended.is_set():
            delta, s.unacked = s.unacked, 0
            with contextlib.suppress(Closed):
                await self.send(spdy.WindowUpdate(s.id, delta))
        await self._ack_session()

    async def _ack_session(self) -> None:
        if self.unacked >= spdy.INITIAL_WINDOW // 2:
            delta, self.unacked = self.unacked, 0
            with contextlib.suppress(Closed):
                await self.send(spdy.WindowUpdate(0, delta))

    def _windows_moved(self) -> None:
        ev, self._window_changed = self._window_changed, asyncio.Event()
        ev.set()

    async def take_window(self, s: Stream, want: int) -> int:
        """How many of `want` bytes may go out on `s` now (waits for the peer's windows)."""
        while True:
            if s.ended.is_set() or self.over:
                raise Closed
            if self.peer_keeps_windows is False:
                return want
            n = min(want, s.send_window, self.send_window)
            if n > 0:
                s.send_window -= n
                self.send_window -= n
                return n
            ev = self._window_changed
            waiters = {asyncio.create_task(ev.wait()), asyncio.create_task(s.ended.wait())}
            timeout = PEER_GRACE if self.peer_keeps_windows is None else None
            done, pending = await asyncio.wait(waiters, timeout=timeout,
                                               return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
            if not done and self.peer_keeps_windows is None:
                log.info("%s: the client sends no WINDOW_UPDATE: its windows are not kept",
                         self.name)
                self.peer_keeps_windows = False
