"""asyncio-dgram against asyncio's own DatagramProtocol, for emunet's two datagram endpoints off
the packet path, in the same run: why emunet keeps the protocol (docs/performance.md).

    sudo scripts/bench dgram          (no root needed: loopback only)

1. The DNS responder's upstream client (`emunet.dns.upstream.ask_udp`, emunet's code) against
   the same one-shot query written with asyncio-dgram's `connect`/`send`/`recv`:
   a. queries per CPU-second against a live upstream (an echo thread on loopback);
   b. how long a query to a dead upstream takes to fail (the port is closed: the kernel
      answers ICMP port unreachable). CoreDNS's forward fails over at once; asyncio-dgram
      (3.0) checks its error queue only before it waits, so a refusal that arrives while
      `recv` waits is seen only at the timeout (upstream issue jsbronder/asyncio-dgram#9).
2. The built-in UDP server: `emunet.cluster.builtin.UDPIdentity` (emunet's) against an
   asyncio-dgram `from_socket` recv/send loop giving the same answers, datagrams per CPU-second
   of this process (server and client thread), a blocking client sending one at a time.
Each figure is the median of 5 alternating rounds (a shared machine preempts us).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncio_dgram  # noqa: E402

from emunet.cluster.builtin import UDPIdentity, identity  # noqa: E402
from emunet.dns import upstream  # noqa: E402
from tests.unit.pipeline_pair import make_state, pod  # noqa: E402

ROUNDS = 5
QUERY = b"ab" + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x01x\x00\x00\x01\x00\x01"
DEAD_TIMEOUT = 2.0  # the responder's UPSTREAM_TIMEOUT order of magnitude


async def dgram_ask_udp(host: str, port: int, data: bytes) -> bytes:
    """ask_udp's contract written with asyncio-dgram (the candidate)."""
    stream = await asyncio_dgram.connect((host, port))
    try:
        await stream.send(data)
        while True:
            reply, _ = await stream.recv()
            if reply[:2] == data[:2]:
                return reply
    finally:
        stream.close()


async def dgram_identity(ps, stream) -> None:
    """The built-in server's UDP answers written with asyncio-dgram (the candidate)."""
    try:
        while True:
            data, addr = await stream.recv()
            await stream.send(f"{identity(ps)} bytes={len(data)}\n".encode(), addr)
    except asyncio_dgram.TransportClosed:
        pass


def _echo(sock: socket.socket) -> None:
    while True:
        data, addr = sock.recvfrom(512)
        if data == b"stop":
            return
        sock.sendto(data, addr)


async def _queries_per_cpu_s(ask, port: int, n: int) -> float:
    t = time.process_time()
    for _ in range(n):
        await ask("127.0.0.1", port, QUERY)
    return n / (time.process_time() - t)


async def _fail_ms(ask, port: int) -> float:
    t = time.perf_counter()
    try:
        await asyncio.wait_for(ask("127.0.0.1", port, QUERY), DEAD_TIMEOUT)
    except (OSError, TimeoutError):
        pass
    return (time.perf_counter() - t) * 1000


def _client(port: int, n: int) -> None:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.connect(("127.0.0.1", port))
    for _ in range(n):
        c.send(b"x" * 20)
        c.recv(200)
    c.close()


async def _server_per_cpu_s(kind: str, ps, n: int) -> float:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    loop = asyncio.get_running_loop()
    if kind == "protocol":
        tr, _ = await loop.create_datagram_endpoint(lambda: UDPIdentity(ps), sock=s)
        close, task = tr.close, None
    else:
        stream = await asyncio_dgram.from_socket(s)
        close, task = stream.close, asyncio.create_task(dgram_identity(ps, stream))
    t = time.process_time()
    await asyncio.to_thread(_client, port, n)
    rate = n / (time.process_time() - t)
    close()
    if task is not None:
        await task
    return rate


async def run(n: int) -> dict:
    live = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    live.bind(("127.0.0.1", 0))
    live_port = live.getsockname()[1]
    threading.Thread(target=_echo, args=(live,), daemon=True).start()
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there now: ICMP port unreachable
    ps = pod(make_state(), "web-0")
    got: dict[str, list[float]] = {}
    for _ in range(ROUNDS):
        for name, ask in (("protocol", upstream.ask_udp), ("asyncio_dgram", dgram_ask_udp)):
            got.setdefault(f"upstream_qps_cpu_{name}", []).append(
                await _queries_per_cpu_s(ask, live_port, n // 4))
            got.setdefault(f"upstream_dead_fail_ms_{name}", []).append(
                await _fail_ms(ask, dead_port))
        for name in ("protocol", "asyncio_dgram"):
            got.setdefault(f"builtin_udp_per_cpu_s_{name}", []).append(
                await _server_per_cpu_s(name, ps, n))
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"stop", ("127.0.0.1", live_port))
    return {k: statistics.median(v) for k, v in got.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--datagrams", type=int, default=10000, help="per round (default 10000)")
    a, _rest = ap.parse_known_args()  # scripts/bench passes its options to every section
    res = asyncio.run(run(a.datagrams))
    print(f"  {'median of 5':<42} {'protocol':>10} {'asyncio-dgram':>14} {'ratio':>7}")
    for key, label, higher in (
            ("upstream_qps_cpu", "upstream client, queries per CPU-s", True),
            ("upstream_dead_fail_ms", "upstream client, dead upstream fails in ms", False),
            ("builtin_udp_per_cpu_s", "built-in UDP server, datagrams per CPU-s", True)):
        p, d = res[f"{key}_protocol"], res[f"{key}_asyncio_dgram"]
        res[f"{key}_ratio"] = d / p if higher else p / d  # asyncio-dgram's, >1: it is better
        print(f"  {label:<42} {p:10.1f} {d:14.1f} {res[f'{key}_ratio']:6.2f}x")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
