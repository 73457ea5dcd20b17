"""A spoofed-source SYN flood from the outside client at a NodePort, with `conntrack.max: 256`
(issue 15 §2): the backend answers every SYN, so each flow is half-open (SYN_RECV, 60 s,
unassured), early-dropped first, never persisted. Once the flood stops every real connection
succeeds, and after the agent is SIGKILLed too: before the Linux-like conntrack, the table
filled with 5-day entries that the restarted agent restored, and the NodePort failed on and
off until `down`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from emunet.host.netns import socket_in_netns
from tests.e2e.cluster import ROOT, Cluster
from tests.waiting import wait_for

CONFIG = str(ROOT / "tests" / "e2e" / "configs" / "npflood.yaml")
CT_MAX = 256
NODE_PORT = 30090
FLOOD = 8_000


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    return module_clusters(CONFIG, "enf")


def _mac(netns: str, ifname: str = "eth0") -> str:
    out = subprocess.run(["ip", "-n", netns, "-j", "link", "show", ifname], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)[0]["address"]


def _node_ip(c: Cluster, node: str) -> str:
    return next(n["status"]["addresses"][0]["address"] for n in c.get("nodes")
                if n["metadata"]["name"] == node)


def _legit(c: Cluster, ip: str, stop: threading.Event | None, n: int = 0) -> tuple[int, int]:
    """Real connects from the outside client, each a whole HTTP exchange: (ok, tried)."""
    ok = tried = 0
    while (stop is not None and not stop.is_set()) or (stop is None and tried < n):
        tried += 1
        s = socket_in_netns(f"{c.prefix}-outside", socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(3)
        try:
            with s:
                s.connect((ip, NODE_PORT))
                s.sendall(b"GET /legit HTTP/1.0\r\n\r\n")
                ok += s.recv(64).startswith(b"HTTP/1.")
        except OSError:
            pass
    return ok, tried


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("VmRSS:")))


def test_spoofed_nodeport_flood_then_agent_restart(cluster):
    node_ip = _node_ip(cluster, "node-1")
    outside = f"{cluster.prefix}-outside"
    agent = cluster.status()["children"]["agent-node-1"]["pid"]
    rss0 = _rss_kib(agent)
    assert _legit(cluster, node_ip, None, 5) == (5, 5)
    syn = bytearray(bytes(
        Ether(src=_mac(outside), dst=_mac(f"{cluster.prefix}-node-1")) /
        IP(src="198.18.0.1", dst=node_ip) / TCP(sport=40000, dport=NODE_PORT, flags="S",
                                                seq=1)))
    s = socket_in_netns(outside, socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("eth0", 0))
    stop, during = threading.Event(), []
    legit = threading.Thread(target=lambda: during.append(_legit(cluster, node_ip, stop)))
    legit.start()
    for i in range(FLOOD):
        # a new spoofed source each time (198.18.0.0/15, RFC 2544's benchmark range: it never
        # leaves these namespaces; the node answers to the outside client's MAC, whose kernel
        # drops a SYN-ACK for an address it does not have); the IP checksum is fixed below
        src = (0xC6120000 + 1 + i).to_bytes(4, "big")
        syn[26:30] = src
        syn[24:26] = b"\0\0"
        syn[24:26] = _csum(syn[14:34]).to_bytes(2, "big")
        s.send(syn)
        if i % 500 == 0:
            time.sleep(0.02)  # near the agent's rate, so it sees most of them
    s.close()
    stop.set()
    legit.join()
    c = cluster.counters_after(time.time(), "node-1")["node-1"]
    after = _legit(cluster, node_ip, None, 20)
    rss1 = _rss_kib(agent)
    print(f"\nspoofed NodePort SYN flood of {FLOOD}: ct_entries={c['ct_entries']} (max "
          f"{c['ct_max']}), nodeport_dnat {c.get('nodeport_dnat', 0)}; legitimate connects "
          f"during {during[0][0]}/{during[0][1]}, right after {after[0]}/{after[1]}; agent RSS "
          f"{rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB")
    assert c["ct_max"] == CT_MAX and c["ct_entries"] <= CT_MAX
    assert c.get("nodeport_dnat", 0) > 2 * CT_MAX  # the flood went far past the table
    assert after == (20, 20)
    # the agent dies: the restarted one restores no half-open entry (never persisted)
    os.kill(agent, signal.SIGKILL)

    def restarted() -> bool:
        st = cluster.status()
        a = st["children"]["agent-node-1"]
        return a["alive"] and a["pid"] != agent and "agent-node-1" not in st["behind"]
    wait_for(restarted, 15, "the killed agent's restart")
    assert _legit(cluster, node_ip, None, 20) == (20, 20)
    restored = cluster.counters_after(time.time(), "node-1")["node-1"].get("ct_restored", 0)
    assert restored <= 20 + 5  # at most the legitimate, assured flows; none of the flood's


def _csum(header: bytes | bytearray) -> int:
    total = sum(int.from_bytes(header[i:i + 2], "big") for i in range(0, len(header), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
