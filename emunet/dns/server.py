"""The thin asyncio shell of the DNS responder: UDP and TCP sockets, signals, stats file.

Run inside the coredns pod's namespace by the supervisor:
    python -m emunet.dns.server --state /run/emunet/state.json
It binds port 53 over UDP and TCP (RFC 1035 4.2, RFC 7766), answers only clients inside the
cluster, reloads the state file on SIGHUP (reporting its generation in `loaded-dns`,
emunet.state.loaded), exits 0 on SIGTERM, and every second writes its counters to
<state dir>/dns.json for `emunet status`. All DNS logic is in `handler.Handler`;
answered queries are kept for `emunet observe` by `events.DnsEvents` (<state dir>/dns-events.jsonl).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import socket
import sys
import time
from pathlib import Path

from emunet import naming
from emunet.dns import upstream
from emunet.dns.handler import FORWARD, Chase, Handler
from emunet.dns.querylog import FILE_NAME as EVENTS_FILE
from emunet.dns.querylog import TICK, DnsEvents
from emunet.dns.upstream import TCP_LEN
from emunet.dns.zone import Zone
from emunet.state import loaded
from emunet.state.cluster import ClusterState
from emunet.state.follow import Follower

log = logging.getLogger("emunet.dns")
TCP_IDLE = 10.0  # seconds a TCP connection may sit idle (RFC 7766 6.2.3 suggests seconds)
UPSTREAM_TIMEOUT = 2.0
STATS_PERIOD = 1.0
CATCH_UP = 1.0  # seconds between checks that the loaded state file is still the published one
UDP_BATCH = 64  # datagrams read per readiness callback: one epoll wakeup serves a burst
UDP_RCVBUF = 4 << 20  # bursts from many pods queue here instead of being dropped
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux socket(7); not in Python 3.11


def load(follow: Follower) -> tuple[Zone, ClusterState]:
    """The newest published state (a delta when it follows ours) and its zone; the SOA
    serial is the publish's time in seconds (the file's mtime)."""
    follow.load()
    st, stamp = follow.state, follow.seen
    assert st is not None and stamp is not None
    return Zone.from_state(st, serial=(stamp[1] // 10**9) & 0xFFFFFFFF), st


class DnsServer:
    def __init__(self, state_path: Path, host: str = "0.0.0.0", port: int = 53,
                 stats_path: Path | None = None, events_path: Path | None = None,
                 loaded_dir: Path | None = None) -> None:
        self.state_path = state_path
        self.loaded_dir = loaded_dir  # where each reload reports its generation (the run dir)
        self.host, self.port = host, port
        self.stats_path = stats_path
        self.follow = Follower(state_path)
        zone, st = load(self.follow)
        self.handler = Handler(zone)
        self.events = DnsEvents(events_path)
        self.events.set_state(st, host, port)
        self._allowed: dict[str, bool] = {}
        self._udp: socket.socket | None = None
        self._tcp: asyncio.Server | None = None
        # dual-stack (issue 19): the same service over IPv6 (kube-dns's IPv6 ClusterIP is
        # DNAT'ed to the coredns pod's IPv6 address); an IPv6-only socket beside the IPv4 one
        self._udp6: socket.socket | None = None
        self._tcp6: asyncio.Server | None = None
        self.dual_stack = st.cluster.dual_stack
        self._tasks: set[asyncio.Task] = set()
        # Set by SIGHUP (a plain signal handler, run before the next bytecode), checked before
        # every query: a reload published before a query is asked is in its answer.
        self.dirty = False

    def request_reload(self, *_: object) -> None:
        self.dirty = True

    def reload_if_dirty(self) -> None:
        if self.dirty:
            self.dirty = False
            self.reload()

    def catch_up(self) -> None:
        """Reload when the published state file is not the one loaded: its SIGHUP was lost
        (sent while we still ignored SIGHUP, as the supervisor starts us). Once per file."""
        now = self.follow.current()
        if now is not None and now != self.follow.seen:
            self.follow.seen = now
            log.info("state file changed without a SIGHUP; reloading")
            self.reload()

    def reload(self) -> None:
        try:
            zone, st = load(self.follow)
            self.handler.load(zone)
            self.events.set_state(st, self.host, self.port)
            self._allowed = {}
            log.info("reloaded %s", self.state_path)
        except Exception as e:  # keep answering from the old zone; say why
            log.error("cannot reload %s: %s", self.state_path, e)
            return
        if self.loaded_dir is not None:  # the supervisor waits for it (emunet.state.loaded)
            try:
                loaded.report(self.loaded_dir, "dns", st.generation)
            except OSError as e:
                log.warning("cannot report the loaded state: %s", e)

    def allowed(self, ip: str) -> bool:
        ok = self._allowed.get(ip)
        if ok is None:
            ok = self._allowed[ip] = self.handler.zone.client_allowed(ip)
        return ok

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:  # root may exceed net.core.rmem_max; anyone else gets what the sysctl allows
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, UDP_RCVBUF)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        sock.setblocking(False)
        sock.bind((self.host, self.port))
        self._udp = sock
        # A reader callback that drains the socket, not a DatagramProtocol: asyncio reads one
        # datagram per loop iteration, we read up to UDP_BATCH per wakeup (recvmmsg-like).
        loop.add_reader(sock.fileno(), self._udp_ready)
        self._tcp = await asyncio.start_server(self._tcp_client, self.host, self.port)
        host6 = {"0.0.0.0": "::", "127.0.0.1": "::1"}.get(self.host)
        if self.dual_stack and host6 is not None:
            await self._start6(loop, host6)
        if self.stats_path is not None:
            self._spawn(self._stats_loop())
        if self.events.log is not None:
            self._spawn(self._events_loop())
        log.info("serving DNS on %s:%d (udp, tcp)", self.host, self.port)

    async def _start6(self, loop: asyncio.AbstractEventLoop, host6: str) -> None:
        """Listen on [::]:port too ([::1] beside 127.0.0.1; IPV6_V6ONLY, so the IPv4 socket
        keeps IPv4's queries); a namespace without IPv6 keeps serving IPv4 and says why."""
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        tcp: socket.socket | None = None
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setblocking(False)
            sock.bind((host6, self.port))
            tcp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host6, self.port))
        except OSError as e:
            sock.close()
            if tcp is not None:
                tcp.close()
            log.warning("no IPv6 DNS service: %s", e)
            return
        self._udp6 = sock
        loop.add_reader(sock.fileno(), self._udp_ready, sock)
        self._tcp6 = await asyncio.start_server(self._tcp_client, sock=tcp)
        log.info("serving DNS on [%s]:%d (udp, tcp)", host6, self.port)

    async def stop(self) -> None:
        if self._udp6 is not None:
            asyncio.get_running_loop().remove_reader(self._udp6.fileno())
            self._udp6.close()
            self._udp6 = None
        if self._tcp6 is not None:
            self._tcp6.close()
            await self._tcp6.wait_closed()
        if self._udp is not None:
            asyncio.get_running_loop().remove_reader(self._udp.fileno())
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
        for t in list(self._tasks):
            t.cancel()
        self.events.close()
        if self.stats_path is not None:
            self.write_stats()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def forward(self, data: bytes, tcp: bool = False) -> bytes:
        """Relay a query to the first upstream that answers, else SERVFAIL.

        Over the client's own transport, as CoreDNS's forward plugin does by default (its
        force_tcp / prefer_udp options change that): a query that came over TCP goes upstream
        over TCP; a UDP answer with TC set is relayed as is and the client retries over TCP.
        """
        reply = await self._ask(data, tcp)
        if reply is None:
            return self.handler.servfail(data)
        self.handler.count_reply(reply)
        return reply

    async def chase(self, ch: Chase, tcp: bool = False) -> bytes:
        """An ExternalName's out-of-cluster target, looked up upstream (handler.Chase)."""
        ident = random.getrandbits(16)  # RFC 5452: an unpredictable ID for our own query
        reply = await self._ask(upstream.build_query(ch.target, ch.query.qtype, ident), tcp)
        records, tc = None, False
        if reply is not None:
            try:
                records = upstream.answer_records(reply, ident)
                tc = upstream.truncated(reply)  # kept in our reply, as CoreDNS's plugin.A
            except ValueError as e:
                log.debug("chase of %s: %s", ch.target, e)
        return self.handler.chased(ch, records, udp=not tcp, truncated=tc)

    async def _ask(self, data: bytes, tcp: bool) -> bytes | None:
        """The first upstream's reply to `data`, None when none answered."""
        for up in self.handler.zone.upstreams:
            ask = upstream.ask_tcp if tcp else upstream.ask_udp
            try:
                host, port = upstream.host_port(up)
                return await asyncio.wait_for(ask(host, port, data), UPSTREAM_TIMEOUT)
            except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as e:
                log.debug("upstream %s (%s): %s", up, "TCP" if tcp else "UDP", e)
        return None

    async def _tcp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            if not peer or not self.allowed(peer[0]):
                return
            while True:  # RFC 7766 6.2.1: several queries per connection, in order
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                data = await asyncio.wait_for(reader.readexactly(TCP_LEN.unpack(head)[0]),
                                              TCP_IDLE)
                self.reload_if_dirty()
                out = self.handler.handle(data, udp=False)
                if out is None:
                    return
                if out is FORWARD:
                    out = await self.forward(data, tcp=True)
                elif type(out) is Chase:
                    out = await self.chase(out, tcp=True)
                self.events.add(time.time(), "TCP", peer[:2], data, out)  # type: ignore[arg-type]
                writer.write(TCP_LEN.pack(len(out)) + out)  # type: ignore[arg-type]
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _events_loop(self) -> None:
        while True:  # decoding and writing happen here, never in the answer path
            await asyncio.sleep(TICK)
            self.events.flush()

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_PERIOD)
            self.reload_if_dirty()  # also when no query comes (logs a bad state file early)
            self.write_stats()

    def _udp_ready(self, sock: socket.socket | None = None) -> None:
        """Answer every queued datagram (up to UDP_BATCH): the hot path of the responder."""
        sock = sock or self._udp
        if sock is None:
            return
        recv, send, handle = sock.recvfrom, sock.sendto, self.handler.handle
        allowed, counters = self._allowed, self.handler.counters
        # Events (events.py): keep (bytes, bytes) within the tick's budget, decode later.
        ev = self.events
        room, pending, now, unkept = ev.room, ev.pending, time.time(), 0
        for _ in range(UDP_BATCH):
            try:
                data, addr = recv(4096)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # e.g. ICMP errors queued on the socket
                continue
            if self.dirty:
                self.reload_if_dirty()
                allowed = self._allowed
            ok = allowed.get(addr[0])
            if ok is None:
                ok = self.allowed(addr[0])
            if not ok:
                counters["refused_clients"] += 1
                continue
            out = handle(data, True)
            if out is None:
                continue
            if out is FORWARD or type(out) is Chase:
                self._spawn(self._forward_udp(data, addr, out, sock))
                continue
            try:
                send(out, addr)  # type: ignore[arg-type]
            except (BlockingIOError, InterruptedError):
                counters["send_dropped"] += 1  # socket buffer full: UDP, the client retries
            except OSError as e:
                log.debug("sendto %s: %s", addr, e)
            if room:
                room -= 1
                pending.append((now, "UDP", addr, data, out))  # type: ignore[arg-type]
            else:
                unkept += 1
        ev.room = room
        if ev.per_tick:
            ev.suppressed += unkept

    async def _forward_udp(self, data: bytes, addr, out: object,
                           sock: socket.socket | None = None) -> None:
        if type(out) is Chase:
            reply = await self.chase(out)  # type: ignore[arg-type]
        else:
            reply = await self.forward(data)
        self.events.add(time.time(), "UDP", addr, data, reply)
        sock = sock if sock is not None and sock.fileno() >= 0 else self._udp
        if sock is not None:
            try:
                sock.sendto(reply, addr)
            except OSError as e:
                log.debug("sendto %s: %s", addr, e)

    def write_stats(self) -> None:
        """Counters as JSON, replaced atomically so `emunet status` never reads half."""
        assert self.stats_path is not None
        tmp = self.stats_path.with_name(self.stats_path.name + ".tmp")
        try:
            doc = {"pid": os.getpid(), **self.handler.counters}
            if self.events.suppressed:  # a flood was counted, not described (events.py)
                doc["dns_events_suppressed"] = self.events.suppressed
            tmp.write_text(json.dumps(doc, sort_keys=True))
            os.replace(tmp, self.stats_path)
        except OSError as e:
            log.warning("cannot write %s: %s", self.stats_path, e)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="emunet.dns.server", description=__doc__.split("\n")[0])
    p.add_argument("--state", type=Path, default=naming.run_dir() / "state.json")
    p.add_argument("--listen", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=53)
    p.add_argument("--stats", type=Path, default=None,
                   help="counters file (default: dns.json next to the state file)")
    p.add_argument("--events", type=Path, default=None,
                   help="query/answer events (default: dns-events.jsonl next to the state file)")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    server = DnsServer(args.state, args.listen, args.port,
                       args.stats or args.state.parent / "dns.json",
                       args.events or args.state.parent / EVENTS_FILE, args.state.parent)
    await server.start()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def on_hup(*_: object) -> None:
        server.request_reload()  # the next query reloads first, even ahead of the loop
        # and the loop reloads soon when no query comes, so the supervisor hears that the
        # new state is in effect (emunet.state.loaded) without waiting for a query
        loop.call_soon_threadsafe(server.reload_if_dirty)

    signal.signal(signal.SIGHUP, on_hup)
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_signal_handler(signal.SIGINT, done.set)
    # The supervisor starts us with SIGHUP ignored (so an early reload signal cannot kill us);
    # one reload now picks up any state published between our first read and the handler.
    server.reload()
    while not done.is_set():  # and every second, any publish whose signal was lost
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), CATCH_UP)
        server.catch_up()
    await server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s emunet-dns %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (OSError, ValueError, KeyError) as e:
        log.error("cannot start: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
