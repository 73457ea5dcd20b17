"""Bad input on the wire: 100k+ malformed frames from inside a pod (AF_PACKET on its eth0) and
100k+ malformed VXLAN datagrams on the underlay while two other pods transfer data; garbage DNS
at the responder. Nothing crashes, the transfer is intact, drops are counted by reason."""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import struct
import threading
import time

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from emunet.cluster import lifecycle
from emunet.host.netns import socket_in_netns
from tests.e2e.cluster import ROOT, Cluster
from tests.waiting import wait_for

CONFIG = str(ROOT / "tests" / "e2e" / "configs" / "robust.yaml")
FRAMES = 100_000
NOISY = """\
apiVersion: v1
kind: Pod
metadata: {name: noisy, namespace: rb}
spec:
  nodeName: node-1
  containers: [{name: c, image: busybox, command: [sleep, "100000"]}]
"""


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    c = module_clusters(CONFIG, "emw")
    (c.tmp / "noisy.yaml").write_text(NOISY)
    c.emunet("apply", "-f", str(c.tmp / "noisy.yaml"))
    return c


def _mutants(base: bytes, rng: random.Random):
    """Endless mutations of `base`: flipped bytes, truncation, bad lengths, junk tails."""
    while True:
        f = bytearray(base)
        for _ in range(rng.randrange(1, 4)):
            f[rng.randrange(len(f))] = rng.randrange(256)
        r = rng.random()
        if r < 0.3:
            f = f[:rng.randrange(len(f))]
        elif r < 0.4:
            f += rng.randbytes(rng.randrange(64))
        yield bytes(f)


def _transfer(c: Cluster, vip: str, size: int, out: dict) -> None:
    s = socket_in_netns(f"{c.prefix}-rb-client", socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect((vip, 7000))
    data = random.Random(3).randbytes(size)
    threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)),
                     daemon=True).start()
    h, n = hashlib.sha256(), 0
    while chunk := s.recv(1 << 20):
        h.update(chunk)
        n += len(chunk)
    s.close()
    out.update(ok=(n == size and h.digest() == hashlib.sha256(data).digest()), n=n)


def _counters(c: Cluster) -> dict[str, dict]:
    return {n: json.loads((c.run_dir / f"agent-{n}.json").read_text())["counters"]
            for n in ("node-1", "node-2")}


def test_malformed_frames_from_a_pod_and_the_underlay(cluster):
    pods = {p["metadata"]["name"]: p for p in cluster.get("pods")}
    vip = next(s["spec"]["clusterIP"] for s in cluster.get("services")
               if s["metadata"]["name"] == "echo")
    noisy, server = pods["noisy"], pods["server"]
    before = _counters(cluster)
    agents = {n: ch["pid"] for n, ch in cluster.status()["children"].items()}
    result: dict = {}
    xfer = threading.Thread(target=_transfer, args=(cluster, vip, 20 << 20, result))
    xfer.start()
    rng = random.Random(11)
    base = bytes(Ether(src=noisy["emunet"]["mac"], dst="0a:58:0a:2a:01:01") /
                 IP(src=noisy["status"]["podIP"], dst=server["status"]["podIP"]) /
                 TCP(sport=5, dport=7000, flags="S") / (b"x" * 20))
    pkt = socket_in_netns(f"{cluster.prefix}-rb-noisy", socket.AF_PACKET, socket.SOCK_RAW)
    pkt.bind(("eth0", 0))
    inner = bytes(Ether(src="0a:59:0a:2a:01:00", dst="0a:59:0a:2a:02:00") /
                  IP(src=noisy["status"]["podIP"], dst=server["status"]["podIP"], ttl=63) /
                  UDP(sport=5, dport=9) / (b"y" * 20))
    udp = socket_in_netns(f"{cluster.prefix}-node-1", socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("192.168.1.11", 0))  # the node's own underlay address: past the peer check
    vx = bytes(VXLAN(vni=1, flags=0x08)) + inner
    t0 = time.monotonic()
    for i, (f, d) in enumerate(zip(_mutants(base, rng), _mutants(vx, rng), strict=False)):
        if i >= FRAMES:
            break
        try:
            pkt.send(f if len(f) >= 14 else f + bytes(14 - len(f)))
            udp.sendto(d, ("192.168.1.12", 8472))
        except OSError:
            pass  # a full queue: the kernel drops, the next one goes
        if i % 200 == 0:
            time.sleep(0.002)  # pace the flood near what the agents drain, not a wait
    pkt.close()
    udp.close()
    sent = time.monotonic() - t0
    xfer.join(120)
    # counters are written once a second: the first write after the transfer (the flood
    # ended before it) counts the whole flood
    after = cluster.counters_after(time.time(), "node-1", "node-2")
    drops = {n: {k: after[n].get(k, 0) - before[n].get(k, 0) for k in after[n]
                 if k.startswith("drop:") and after[n].get(k, 0) > before[n].get(k, 0)}
             for n in after}
    print(f"\n{FRAMES} malformed frames + {FRAMES} datagrams in {sent:.1f}s; drops {drops}")
    assert result.get("ok"), result
    status = cluster.status()["children"]
    assert {n: ch["pid"] for n, ch in status.items()} == agents  # nothing restarted
    assert all(ch["restarts"] == 0 for ch in status.values())
    assert len(drops["node-1"]) >= 3 and len(drops["node-2"]) >= 2
    assert sum(drops["node-1"].values()) > FRAMES // 4
    assert "drop:INVALID_VNI" in drops["node-2"]


def test_malformed_dns_is_formerr_or_dropped_and_valid_queries_answered(cluster):
    ns = f"{cluster.prefix}-rb-noisy"
    rng = random.Random(5)
    q = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x04echo\x02rb\x03svc\x07cluster" \
        b"\x05local\x00" + struct.pack("!HH", 1, 1)
    s = socket_in_netns(ns, socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    rcodes: dict[int, int] = {}
    for bad in [b"", b"\x00", q[:11], q[:-3], q + b"\xff" * 9] + [
            next(_mutants(q, rng)) for _ in range(5000)]:
        try:
            s.sendto(bad, ("10.43.0.10", 53))
        except OSError:
            pass
        try:
            while True:
                resp = s.recv(4096)
                rcodes[resp[3] & 0xF] = rcodes.get(resp[3] & 0xF, 0) + 1
        except (BlockingIOError, IndexError):
            pass
    s.close()
    # answered in order: a valid query answered means the garbage before it was handled
    wait_for(lambda: lifecycle.dns_query(ns, "10.43.0.10", "echo.rb.svc.cluster.local", 1.0),
             10, "the responder to answer a valid query after the garbage")
    print(f"\nDNS answers to 5005 malformed queries, by rcode: {rcodes}")
    assert cluster.status()["children"]["dns"]["restarts"] == 0
    echo = next(x["spec"]["clusterIP"] for x in cluster.get("services")
                if x["metadata"]["name"] == "echo")
    assert lifecycle.dns_query(ns, "10.43.0.10", "echo.rb.svc.cluster.local", 2.0) == echo
    assert os.path.exists(f"/proc/{cluster.status()['children']['dns']['pid']}")
