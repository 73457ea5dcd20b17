"""The per-node L7 proxy: Cilium's Envoy redirect, as one asyncio process per node.

Run by the supervisor:  python -m emunet.l7.proxy --state F --node N [--run-dir D]

For each local pod with ingress HTTP rules it listens INSIDE the pod's network namespace on the
pod's proxy ports (15001 + i for the pod's i-th L7 port, see emunet.policy.cilium). The node agent
rewrites the destination port of a new connection that policy redirects to L7 (only the port:
the client's address is kept, and conntrack restores the original port on the replies), so the
proxy knows the client by its source IP and the service by the listener. It speaks HTTP/1.1
(keep-alive, Content-Length and chunked bodies relayed as they arrive) and decides every
request: allowed -> forwarded to the real server inside the pod (pod IP : original port, over
the pod's loopback, never through the datapath), the response relayed; denied -> Cilium's
`403 Forbidden` / `Access denied` at once. Every decision is a line in the L7 event log
(emunet.l7.httplog). SIGHUP reloads the state (policies apply to the next request, as Envoy's
do) and reports its generation in `loaded-l7proxy-<node>` (emunet.state.loaded); SIGTERM
exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emunet import nodeproc
from emunet.datapath.ipv6pkt import ip6_bytes
from emunet.host.netns import ip_family, socket_in_netns
from emunet.l7 import http1, httplog, listeners
from emunet.observe.flowlog import FlowLog
from emunet.packets import ip_bytes
from emunet.policy.cilium import L7Port, decide, l7_ports
from emunet.state import loaded
from emunet.state.cluster import ClusterState
from emunet.state.follow import Follower

log = logging.getLogger("emunet.l7.proxy")
IDLE_TIMEOUT = 300.0  # seconds a kept-alive connection may wait for its next request
Upstream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connect = Callable[[str, str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@dataclass
class ProxyPolicy:
    """What the proxy enforces, compiled from one state: listeners and per-port rules."""

    node: Any  # emunet.policy.verdict.NodePolicy
    l7: dict[tuple[str, int], L7Port] = field(default_factory=dict)  # (pod IP, port)
    by_proxy_port: dict[tuple[str, int], L7Port] = field(default_factory=dict)
    netns: dict[str, str] = field(default_factory=dict)  # pod IP -> netns
    names: dict[str, str] = field(default_factory=dict)  # any pod IP -> namespace/name

    @classmethod
    def from_state(cls, state: ClusterState, node: str) -> ProxyPolicy:
        from emunet.policy.compile import compile_node, pod_identities

        identity_of = pod_identities(state)
        out = cls(compile_node(state, node))
        for ps in state.pods.values():
            addrs = (ps.ip, ps.ip6) if ps.ip6 else (ps.ip,)  # dual-stack: both, one identity
            for a in addrs:
                out.names[a] = f"{ps.pod.namespace}/{ps.pod.name}"
            if ps.node != node:
                continue
            for port, lp in l7_ports(state, ps, identity_of).items():
                for a in addrs:  # a listener per family: the client's is the one it reaches
                    out.l7[(a, port)] = lp
                    out.by_proxy_port[(a, lp.proxy_port)] = lp
                    out.netns[a] = ps.netns
        return out


class Proxy:
    """Serves HTTP on the listeners of the current `ProxyPolicy`; `connect` opens the upstream
    (the real server) and is injected so tests can run on loopback."""

    def __init__(self, node: str, events: FlowLog | None, connect: Connect,
                 clock: Callable[[], float] = time.time) -> None:
        self.node_name = node
        self.events = events
        self.connect = connect
        self.clock = clock
        self.policy = ProxyPolicy(node=None)
        self.counters = {"requests": 0, "forwarded": 0, "denied": 0, "errors": 0}

    # ---- one client connection ---------------------------------------------------------------

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    pod_ip: str, port: int) -> None:
        """One redirected connection to pod_ip:port (the original destination)."""
        peer = writer.get_extra_info("peername") or ("0.0.0.0", 0)
        upstream: Upstream | None = None
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    writer.write(http1.error_response(431, "Request Header Fields Too Large",
                                                      self.clock()))
                    return
                try:
                    req = http1.parse_head(raw, request=True)
                    framing = http1.body_framing(req, request=True)
                except http1.HTTPError as e:
                    log.debug("bad request from %s: %s", peer[0], e)
                    writer.write(http1.error_response(400, "Bad Request", self.clock()))
                    return
                keep, upstream = await self._request(reader, writer, req, framing, peer,
                                                      pod_ip, port, upstream)
                if not keep or not req.keep_alive():
                    return
        except (ConnectionError, asyncio.IncompleteReadError, http1.HTTPError) as e:
            log.debug("connection from %s ended: %s", peer[0], e)
        finally:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await writer.drain()
            writer.close()
            if upstream is not None:
                upstream[1].close()

    async def _request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       req: http1.Head, framing: tuple[str, int], peer: tuple,
                       pod_ip: str, port: int,
                       upstream: Upstream | None) -> tuple[bool, Upstream | None]:
        """Decide and carry out one request: (keep the client connection, upstream to keep)."""
        t0 = time.monotonic()
        method, target, _ = req.start
        host = req.get("host") or ""
        pol = self.policy
        self.counters["requests"] += 1
        allowed, policy, rule = decide(pol.node, pol.l7.get((pod_ip, port)), addr_bytes(pod_ip),
                                       addr_bytes(peer[0]), port, method, target, host,
                                       req.header_map())
        event = {"method": method, "path": target, "host": host, "policy": policy or None,
                 "rule": rule, "src": {"ip": peer[0], "port": peer[1],
                                       "pod": pol.names.get(peer[0])},
                 "dst": {"ip": pod_ip, "port": port, "pod": pol.names.get(pod_ip)}}
        if not allowed:
            await _relay_body(reader, None, *framing)  # keep the connection in step
            writer.write(http1.denied_response(self.clock()))
            await writer.drain()
            self.counters["denied"] += 1
            self._event(event, "DENIED", 403, t0)
            return True, upstream
        if upstream is None:
            try:
                upstream = await self.connect(pol.netns.get(pod_ip, ""), pod_ip, port)
            except OSError as e:
                log.warning("upstream %s:%d: %s", pod_ip, port, e)
                writer.write(http1.error_response(503, "Service Unavailable", self.clock()))
                self.counters["errors"] += 1
                self._event(event, "ERROR", 503, t0)
                return False, None
        ur, uw = upstream
        uw.write(req.raw)
        await _relay_body(reader, uw, *framing)
        while True:  # 1xx interim responses are relayed until the final one
            resp_raw = await ur.readuntil(b"\r\n\r\n")
            resp = http1.parse_head(resp_raw, request=False)
            writer.write(resp_raw)
            if not resp.start[1].startswith("1") or resp.start[1] == "101":
                break
        kind, n = http1.body_framing(resp, request=False, request_method=method)
        await _relay_body(ur, writer, kind, n)
        await writer.drain()
        self.counters["forwarded"] += 1
        self._event(event, "FORWARDED", int(resp.start[1]), t0)
        if kind == http1.UNTIL_CLOSE or not resp.keep_alive() or resp.start[1] == "101":
            uw.close()
            return False, None
        return True, upstream

    def _event(self, event: dict, verdict: str, status: int, t0: float) -> None:
        if self.events is None:
            return
        event.update(time=self.clock(), node=self.node_name, type="l7-http", verdict=verdict,
                     status=status, latency_ms=round((time.monotonic() - t0) * 1000, 3))
        self.events.write([event])  # never raises: a full run dir is counted in .errors


async def _relay_body(r: asyncio.StreamReader, w: asyncio.StreamWriter | None, kind: str,
                      n: int) -> None:
    """Copy (w None: discard) one body of the given framing from r to w as it arrives."""
    if kind == http1.LENGTH:
        while n > 0:
            data = await r.readexactly(min(n, 65536))
            n -= len(data)
            if w is not None:
                w.write(data)
                await w.drain()
    elif kind == http1.CHUNKED:
        while True:
            line = await r.readuntil(b"\r\n")
            size = http1.chunk_size(line)
            if w is not None:
                w.write(line)
            if size == 0:
                while True:  # trailer fields, then the final empty line
                    t = await r.readuntil(b"\r\n")
                    if w is not None:
                        w.write(t)
                    if t == b"\r\n":
                        return
            data = await r.readexactly(size + 2)
            if w is not None:
                w.write(data)
                await w.drain()
    elif kind == http1.UNTIL_CLOSE:
        while data := await r.read(65536):
            if w is not None:
                w.write(data)
                await w.drain()


# ---- the process: listeners inside pod namespaces, reload, main ---------------------------------

def addr_bytes(ip: str) -> bytes:
    """An address of either family as the policy engine keys it (4 or 16 bytes)."""
    return ip6_bytes(ip) if ":" in ip else ip_bytes(ip)


async def connect_in_netns(netns: str, ip: str, port: int) -> Upstream:
    """A TCP connection made from inside `netns` (to the pod's own IP: over its loopback)."""

    sock = socket_in_netns(netns, ip_family(ip), socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (ip, port)), 5)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=http1.MAX_HEAD)


def _listen_in_netns(netns: str, ip: str, port: int) -> socket.socket:
    """The listener for redirected connections to `ip` (its family's wildcard): an IPv6 one
    is IPv6-only, beside the IPv4 one on the same port, so IPv4 clients keep their own."""
    sock = socket_in_netns(netns, ip_family(ip), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if ":" in ip:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::", port))
    else:
        sock.bind(("0.0.0.0", port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class ProxyProcess:
    """Keeps one listener per (pod, proxy port) of the current policy; reloads on SIGHUP."""

    def __init__(self, state_path: Path, node: str, run_dir: Path) -> None:
        self.state_path, self.node, self.run_dir = state_path, node, run_dir
        self.events = httplog.open_log(run_dir / f"l7-{node}.jsonl")
        self.proxy = Proxy(node, self.events, connect_in_netns)
        self.servers: dict[tuple[str, str, int], asyncio.AbstractServer] = {}
        self.missing = False  # a listener could not be opened yet: retried every 5 s
        self.follow = Follower(state_path)  # the state loaded last (emunet.state.follow)
        self.retry_at = 0.0

    async def reload(self) -> None:
        self.follow.load()
        state = self.follow.state
        assert state is not None
        policy = ProxyPolicy.from_state(state, self.node)
        self.proxy.policy = policy
        want = {(policy.netns[ip], ip, pport): lp.port
                for (ip, pport), lp in policy.by_proxy_port.items()}
        for key in list(self.servers):
            if key not in want:
                self.servers.pop(key).close()
        self.missing = False
        for key in want:
            if key in self.servers:
                continue
            netns, ip, pport = key
            try:
                sock = _listen_in_netns(netns, ip, pport)
            except OSError as e:  # the pod may be gone or not built yet: next reload retries
                log.warning("cannot listen on %s:%d in %s: %s", ip, pport, netns, e)
                self.missing = True
                continue
            self.servers[key] = await asyncio.start_server(
                lambda r, w, ip=ip, pport=pport: self._accept(r, w, ip, pport), sock=sock,
                limit=http1.MAX_HEAD)
        try:  # for `emunet up`, which waits until every listener the state needs is open
            listeners.publish(self.run_dir, self.node,
                              {(ip, pport) for _, ip, pport in self.servers}, self.missing)
        except OSError as e:
            log.warning("cannot publish the listeners: %s", e)
        try:  # for the supervisor: the policy of this state now decides the next request
            loaded.report(self.run_dir, f"l7proxy-{self.node}", state.generation)
        except OSError as e:
            log.warning("cannot report the loaded state: %s", e)
        log.info("emunet l7 proxy %s: %d listeners (%s)", self.node, len(self.servers),
                 ", ".join(f"{ip}:{lp.port}->{pp}" for (ip, pp), lp in
                           sorted(policy.by_proxy_port.items())) or "none")

    async def _accept(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, ip: str,
                      pport: int) -> None:
        lp = self.proxy.policy.by_proxy_port.get((ip, pport))
        if lp is None:  # the redirect was removed since the connection was set up
            w.close()
            return
        await self.proxy.serve(r, w, ip, lp.port)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        hup = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, hup.set)
        await self.reload()
        while not stop.is_set():
            waiters = [asyncio.ensure_future(e.wait()) for e in (stop, hup)]
            await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            for f in waiters:
                f.cancel()
            # a state file other than the one loaded, without a SIGHUP: the signal was lost
            # (sent while we still ignored SIGHUP, as the supervisor starts us), reload anyway
            now = self.follow.current()
            lost = now is not None and now != self.follow.seen
            if lost:
                self.follow.seen = now  # tried once per file, even if it fails to load
            retry = self.missing and time.monotonic() >= self.retry_at
            if not stop.is_set() and (hup.is_set() or lost or retry):
                self.retry_at = time.monotonic() + 5.0
                hup.clear()
                try:
                    await self.reload()
                except Exception as e:  # a bad state file must not stop enforcement
                    log.error("reload failed, keeping the old policy: %s", e)
        for srv in self.servers.values():
            srv.close()
        self.events.close()
        log.info("emunet l7 proxy %s: exiting (%s)", self.node, self.proxy.counters)
        return 0


def main(argv: list[str] | None = None) -> int:
    args = nodeproc.parse_args("emunet.l7.proxy", __doc__, argv)
    proc = ProxyProcess(args.state, args.node, args.run_dir)
    return asyncio.run(proc.run())


if __name__ == "__main__":
    sys.exit(main())
