"""Load: 1,000 concurrent TCP connections through one ClusterIP, every byte checked; a SYN flood
from a pod (AF_PACKET in its namespace) stays within the conntrack bound and agent memory."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from emunet.host.netns import socket_in_netns
from tests.e2e.cluster import ROOT, Cluster

CONFIG = str(ROOT / "tests" / "e2e" / "configs" / "robust.yaml")
CONNS = 1000
CT_MAX = 4096  # robust.yaml spec.conntrack.max
FLOOD = 50_000


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    c = module_clusters(CONFIG, "eml")
    c.vip = next(s["spec"]["clusterIP"] for s in c.get("services")
                 if s["metadata"]["name"] == "echo")
    return c


async def _echo(netns: str, vip: str, i: int, start: asyncio.Event, opened: list[int]) -> bool:
    payload = f"conn {i:04d} ".encode() * 100  # 1 KB, unique per connection
    sock = socket_in_netns(netns, socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (vip, 7000))
    reader, writer = await asyncio.open_connection(sock=sock)
    opened.append(i)
    await start.wait()  # every connection is open before any byte flows
    writer.write(payload)
    await writer.drain()
    got = await asyncio.wait_for(reader.readexactly(len(payload)), 60)
    writer.close()
    return got == payload


async def _all(netns: str, vip: str) -> list:
    start = asyncio.Event()
    opened: list[int] = []
    sem = asyncio.Semaphore(200)  # connect in waves; the SYN backlog is 1024

    async def one(i: int) -> bool:
        async with sem:
            task = asyncio.ensure_future(_echo(netns, vip, i, start, opened))
            await asyncio.sleep(0)
        return await task

    tasks = [asyncio.ensure_future(one(i)) for i in range(CONNS)]
    # Bytes flow once every connection is open (or has failed): counted, not guessed (after
    # a minute they flow anyway, and what never connected fails the test below).
    deadline = time.monotonic() + 60
    while len(opened) + sum(t.done() for t in tasks) < CONNS and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    start.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


def _agent(c: Cluster, node: str) -> dict:
    return json.loads((c.run_dir / f"agent-{node}.json").read_text())


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("VmRSS:")))


def test_thousand_concurrent_connections_through_one_cluster_ip(cluster):
    t0 = time.monotonic()
    results = asyncio.run(_all(f"{cluster.prefix}-rb-client", cluster.vip))
    elapsed = time.monotonic() - t0
    failed = [r for r in results if r is not True]
    print(f"\n{CONNS} concurrent echo connections via {cluster.vip}: {elapsed:.1f}s, "
          f"{len(failed)} failed")
    assert not failed, failed[:5]


def _legit(netns: str, vip: str, stop: threading.Event | None, n: int = 0) -> tuple[int, int]:
    """Real echo connections from the pod (its kernel's TCP): (succeeded, tried), until `stop`
    is set, or `n` of them."""
    ok = tried = 0
    while (stop is not None and not stop.is_set()) or (stop is None and tried < n):
        tried += 1
        try:
            with socket_in_netns(netns, socket.AF_INET, socket.SOCK_STREAM) as c:
                c.settimeout(3)
                c.connect((vip, 7000))
                c.sendall(b"legit")
                ok += c.recv(16) == b"legit"
        except OSError:
            pass
    return ok, tried


def test_syn_flood_is_bounded(cluster):
    """FLOOD SYNs with distinct source ports, from the client pod's own eth0 (AF_PACKET in
    its namespace): the agent tracks at most CT_MAX connections and its memory stays flat, and
    every real connection from the same pod succeeds once the flood is over (half-open
    entries are early-dropped first, so the table never refuses a new one)."""
    netns = f"{cluster.prefix}-rb-client"
    client = next(p for p in cluster.get("pods") if p["metadata"]["name"] == "client")
    pid = cluster.status()["children"]["agent-node-1"]["pid"]
    rss0 = _rss_kib(pid)
    before = _agent(cluster, "node-1")["counters"]
    mac = client["emunet"]["mac"]
    syn = bytearray(bytes(Ether(src=mac, dst="0a:58:0a:2a:01:01") /
                          IP(src=client["status"]["podIP"], dst=cluster.vip) /
                          TCP(sport=1, dport=7000, flags="S", seq=1)))
    s = socket_in_netns(netns, socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("eth0", 0))
    stop, during = threading.Event(), []
    legit = threading.Thread(target=lambda: during.append(_legit(netns, cluster.vip, stop)))
    legit.start()
    for i in range(FLOOD):
        syn[34:36] = (1024 + i % 60000).to_bytes(2, "big")  # TCP checksum left stale:
        s.send(syn)  # the backend's kernel drops them unanswered, as a flood's would be
        if i % 500 == 0:
            time.sleep(0.02)  # stay near the agent's rate, so it sees most of them
    s.close()
    stop.set()
    legit.join()
    # counters are written once a second: the first write after the flood, not a guessed
    # 1.5 s (what may still sit in the socket, a few hundred SYNs, the bounds do not need)
    c = cluster.counters_after(time.time(), "node-1")["node-1"]
    after = _legit(netns, cluster.vip, None, 20)  # the agent has worked through the flood
    rss1 = _rss_kib(pid)
    seen = c.get("dnat", 0) - before.get("dnat", 0)  # new flows the agent load-balanced
    evicted = c["ct_evicted"] - before["ct_evicted"]
    print(f"\nSYN flood of {FLOOD} sent, {seen} new flows seen by the agent: ct_entries="
          f"{c['ct_entries']} (max {c['ct_max']}), evicted {evicted}, insert failed "
          f"{c['ct_insert_failed']}, agent RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB; "
          f"legitimate connects during the flood {during[0][0]}/{during[0][1]}, right after "
          f"{after[0]}/{after[1]}")
    # Every legitimate connect once the agent has worked through the flood. During it, the
    # share is printed, not asserted: the flood saturates the agent's CPU, so SYNs are lost in
    # its socket buffer before conntrack sees them (2/6 to 6/6 here, by the machine's load).
    assert after == (20, 20)
    assert c["ct_max"] == CT_MAX and c["ct_entries"] <= CT_MAX
    assert seen > 2 * CT_MAX  # the flood really went past the bound
    # half-open entries recycled each other; the legitimate connections during the flood are
    # new flows too, and those that closed and expired left without being evicted
    assert evicted >= seen - CT_MAX - during[0][1]
    assert rss1 - rss0 < 20 * 1024  # 4096 entries are a few MiB, never the flood's size
    assert os.path.exists(f"/proc/{pid}")  # the same agent: it did not crash
