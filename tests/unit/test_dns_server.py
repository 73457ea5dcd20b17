"""The real server on loopback: UDP, TCP (several queries per connection), reload, dig, qps."""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess
import sys
import time

import pytest
from scapy.layers.dns import DNS

from emunet.dns.server import DnsServer
from emunet.state import codec, store
from tests.unit.dns_cluster import NS, cluster, query, rrs
from tests.unit.dns_loopback import free_port, serving, tcp_ask, tcp_upstream, udp_ask

SVC = f"monospaced.{NS}.svc.cluster.local"


@pytest.fixture
async def server(tmp_path):
    async with serving(tmp_path) as srv:
        yield srv


async def test_udp_and_tcp(server):
    r = DNS(await udp_ask(server.port, query(SVC)))
    assert r.rcode == 0 and rrs(r.an)[0].rdata == "10.43.0.11"
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for i, name in enumerate((SVC, "nope." + SVC, f"_http._tcp.{SVC}")):
            data = query(name, "SRV" if name.startswith("_") else "A", ident=100 + i)
            writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        answers = []
        for _ in range(3):
            (n,) = struct.unpack("!H", await reader.readexactly(2))
            answers.append(DNS(await reader.readexactly(n)))
    finally:
        writer.close()
    assert [(a.id, a.rcode) for a in answers] == [(100, 0), (101, 3), (102, 0)]


async def test_reload_shows_in_next_answer_and_stats(server):
    st = cluster()
    st.remove_service((NS, "monospaced"))
    server.state_path.write_text(codec.to_json(st))
    server.reload()
    assert DNS(await udp_ask(server.port, query(SVC))).rcode == 3
    server.write_stats()
    import json
    stats = json.loads(server.stats_path.read_text())
    assert stats["queries"] == 1 and stats["NXDOMAIN"] == 1


async def test_forward_failure_is_servfail(tmp_path):
    state = tmp_path / "state.json"
    dead = free_port()  # nothing listens there: the upstream query times out or is refused
    state.write_text(codec.to_json(cluster(upstreams=(f"127.0.0.1:{dead}",))))
    srv = DnsServer(state, "127.0.0.1", free_port())
    await srv.start()
    try:
        r = DNS(await udp_ask(srv.port, query("example.com")))
        assert r.rcode == 2 and r.qr == 1
    finally:
        await srv.stop()


async def test_forward_relays_upstream_answer(tmp_path):
    up_port = free_port()
    loop = asyncio.get_running_loop()

    class Upstream(asyncio.DatagramProtocol):
        def connection_made(self, tr):
            self.tr = tr

        def datagram_received(self, d, addr):
            q = DNS(d)
            self.tr.sendto(bytes(DNS(id=q.id, qr=1, qd=q.qd, an=None, rcode=0, ra=1)), addr)

    up, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", up_port))
    state = tmp_path / "state.json"
    state.write_text(codec.to_json(cluster(upstreams=(f"127.0.0.1:{up_port}",))))
    srv = DnsServer(state, "127.0.0.1", free_port())
    await srv.start()
    try:
        r = DNS(await udp_ask(srv.port, query("example.com", ident=321)))
        assert r.id == 321 and r.rcode == 0 and r.ra == 1
    finally:
        await srv.stop()
        up.close()


async def test_forward_keeps_the_clients_transport(tmp_path):
    """As CoreDNS's forward plugin by default: a TCP query goes upstream over TCP, a UDP one
    over UDP (this upstream listens on TCP only, so the UDP query fails over to SERVFAIL)."""
    seen: list[int] = []

    def answer(q):
        seen.append(q.id)
        return DNS(id=q.id, qr=1, qd=q.qd, rcode=0, ra=1)

    up_port, up = await tcp_upstream(answer)
    try:
        async with serving(tmp_path, up_port) as srv:
            r = DNS(await tcp_ask(srv.port, query("example.com", ident=654)))
            assert r.id == 654 and r.rcode == 0 and r.ra == 1 and seen == [654]
            r = DNS(await udp_ask(srv.port, query("example.com", ident=655)))
            assert r.rcode == 2 and seen == [654]  # SERVFAIL: nothing answers UDP upstream
    finally:
        up.close()


def test_dig_and_sigterm(tmp_path):
    """The CLI as the supervisor runs it: dig over UDP and TCP, then SIGTERM -> exit 0."""
    dig = shutil.which("dig")
    state = tmp_path / "state.json"
    state.write_text(codec.to_json(cluster()))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "emunet.dns.server", "--state", str(state),
         "--listen", "127.0.0.1", "--port", str(port)],
        stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + 10
        while time.time() < deadline and not (tmp_path / "dns.json").exists():
            time.sleep(0.1)
        assert (tmp_path / "dns.json").exists(), "stats file never written"
        if dig:
            for extra in ([], ["+tcp"]):
                out = subprocess.run([dig, "@127.0.0.1", "-p", str(port), SVC, "+short",
                                      *extra], capture_output=True, text=True, timeout=10)
                assert out.stdout.strip() == "10.43.0.11"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


async def test_udp_qps(server, capsys):
    """Measure, not assert much: a loopback client with 64 queries in flight."""
    loop = asyncio.get_running_loop()
    n, window = 20000, 64
    done = asyncio.Event()
    got = 0
    data = query(SVC)

    class C(asyncio.DatagramProtocol):
        def connection_made(self, tr):
            self.tr = tr
            for _ in range(window):
                tr.sendto(data)

        def datagram_received(self, d, addr):
            nonlocal got
            got += 1
            if got >= n:
                done.set()
            elif got + window <= n:
                self.tr.sendto(data)

    t0 = time.perf_counter()
    tr, _ = await loop.create_datagram_endpoint(C, remote_addr=("127.0.0.1", server.port))
    try:
        await asyncio.wait_for(done.wait(), 60)
    finally:
        tr.close()
    qps = n / (time.perf_counter() - t0)
    with capsys.disabled():
        print(f"\nDNS UDP loopback: {qps:,.0f} queries/s (client and server in one process)")
    assert qps > 1000


async def test_catch_up_loads_a_publish_whose_sighup_was_lost(server):
    st = cluster()
    st.remove_service((NS, "monospaced"))
    server.catch_up()  # nothing new: no reload
    assert DNS(await udp_ask(server.port, query(SVC))).rcode == 0
    store.write(st, server.state_path)  # published, its SIGHUP lost
    server.catch_up()
    assert DNS(await udp_ask(server.port, query(SVC))).rcode == 3
