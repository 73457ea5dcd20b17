"""Offloads on (spec.offloads, the default) end to end: 64 KB TCP super-frames from pods are cut
into standard VXLAN datagrams and merged again on the other node, bytes intact both ways,
through a ClusterIP and a NodePort (an outside client's upload reaches the agent GRO-merged);
the underlay only ever carries MTU-sized datagrams. One cluster, the real CLI."""

from __future__ import annotations

import hashlib
import json
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emunet.host.netns import socket_in_netns
from tests.e2e.cluster import Cluster
from tests.waiting import Output

NS = "gso"
MIB = 1 << 20
# "up N": send N MiB of seeded bytes; "down": read to EOF and answer the sha256 and length
SINK = ("import hashlib,random,socket\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('', 9000)); s.listen(8)\n"
        "while True:\n"
        "    c, _ = s.accept()\n"
        "    try:\n"
        "        cmd = c.recv(16).split()\n"
        "        if cmd and cmd[0] == b'up':\n"
        "            r = random.Random(7)\n"
        "            for _ in range(int(cmd[1])): c.sendall(r.randbytes(1 << 20))\n"
        "        elif cmd:\n"
        "            h, n = hashlib.sha256(), 0\n"
        "            while d := c.recv(1 << 20):\n"
        "                h.update(d); n += len(d)\n"
        "            c.sendall(f'{h.hexdigest()} {n}'.encode())\n"
        "    except (OSError, ValueError): pass\n"
        "    c.close()\n")
CLIENT = ("import hashlib,random,socket,sys\n"
          "ip, port, mode, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])\n"
          "c = socket.create_connection((ip, port), timeout=20)\n"
          "r = random.Random(7)\n"
          "if mode == 'up':\n"
          "    c.sendall(f'up {n}'.ljust(16).encode()); h, k = hashlib.sha256(), 0\n"
          "    while d := c.recv(1 << 20):\n"
          "        h.update(d); k += len(d)\n"
          "    print(h.hexdigest(), k)\n"
          "else:\n"
          "    c.sendall(b'down'.ljust(16))\n"
          "    for _ in range(n): c.sendall(r.randbytes(1 << 20))\n"
          "    c.shutdown(socket.SHUT_WR); print(c.recv(200).decode())\n")


def _config() -> str:
    docs = ["apiVersion: emunet/v1alpha1\nkind: Cluster\nmetadata: {name: gso}\nspec:\n"
            "  nodes: [{name: node-1}, {name: node-2}]\n",
            f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n"]
    port = "    ports: [{containerPort: 9000}]\n"
    for name, node, cmd, ports in (("client", "node-1", ["sleep", "infinity"], ""),
                                   ("sink", "node-2", [sys.executable, "-c", SINK], port)):
        docs.append(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {NS}, "
                    f"labels: {{app: {name}}}}}\nspec:\n  nodeName: {node}\n"
                    "  securityContext: {runAsUser: 0}\n  containers:\n"
                    f"  - name: main\n    image: python:3.11\n    command: {json.dumps(cmd)}\n"
                    + ports)
    docs.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: sink, namespace: {NS}}}\n"
                "spec:\n  type: NodePort\n  selector: {app: sink}\n"
                "  ports: [{port: 9000, nodePort: 30095}]\n")
    return "---\n".join(docs)


def _want(n: int) -> str:
    r, h = random.Random(7), hashlib.sha256()
    for _ in range(n):
        h.update(r.randbytes(MIB))
    return f"{h.hexdigest()} {n * MIB}"


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    c = module_clusters(None, "eof", text=_config())
    c.wait_ready(30)
    c.ips = {n["metadata"]["name"]: n["status"]["addresses"][0]["address"]
             for n in c.get("nodes")}
    c.cip = next(s["spec"]["clusterIP"] for s in c.get("services")
                 if s["metadata"]["name"] == "sink")
    return c


def _counters(c: Cluster, node: str) -> dict:
    return json.loads((Path(c.run_dir) / f"agent-{node}.json").read_text())["counters"]


def _capture(c: Cluster, seconds: float) -> subprocess.Popen:
    """tcpdump on the underlay bridge (the wire between the nodes), frame lengths. A node's
    eth0 would show GRO trains on receive, as a NIC with GRO does, not what the wire carried."""
    return subprocess.Popen(["ip", "netns", "exec", f"{c.prefix}-underlay", "timeout",
                             str(seconds), "tcpdump", "-nli", "br0", "-e", "udp port 8472"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cross_node_both_ways_intact_and_the_wire_is_standard(cluster):
    before = {n: _counters(cluster, n) for n in ("node-1", "node-2")}
    cap = _capture(cluster, 12)
    # "listening on" (stderr) comes once tcpdump's filter is on the socket: it sees it all
    Output(cap.stderr).wait("listening on", 10, "tcpdump to listen on the underlay bridge")
    for mode in ("down", "up"):  # client -> sink (segmented on node-1), and back
        out = cluster.exec(NS, "client", sys.executable, "-c", CLIENT, cluster.cip, "9000",
                           mode, "8", timeout=60).stdout.split()
        assert " ".join(out) == _want(8), mode
    cap.terminate()
    lines = cap.communicate()[0].splitlines()
    lens = [int(x.split("length ")[1].split(":")[0]) for x in lines if "length " in x]
    assert len(lens) > 100 and max(lens) <= 1514, max(lens)  # Ethernet frame, MTU 1500
    # The agents rewrite their counters file once a second: the first writes after the
    # transfers (both done) count all of them.
    now = cluster.counters_after(time.time(), "node-1", "node-2")
    a1, a2 = now["node-1"], now["node-2"]
    cut = a1.get("gso_segments", 0) > before["node-1"].get("gso_segments", 0)
    merged = a2.get("gro_merged", 0) > before["node-2"].get("gro_merged", 0)
    assert cut, a1  # node-1 cut TSO frames
    assert merged, a2  # node-2 merged them again
    assert a2.get("tx_errors", 0) == 0 and a1.get("tx_errors", 0) == 0


def test_nodeport_upload_from_outside_is_merged_and_intact(cluster):
    """The outside client's segments arrive GRO-merged on node-1's eth0; the agent forwards
    them (NAT, VXLAN to node-2) and node-2's backend sees every byte."""
    before = _counters(cluster, "node-1").get("eth0_gro_rx", 0)
    sock = socket_in_netns(f"{cluster.prefix}-outside", socket.AF_INET,
                                socket.SOCK_STREAM)
    sock.settimeout(20)
    r = random.Random(7)
    with sock:
        sock.connect((cluster.ips["node-1"], 30095))
        sock.sendall(b"down".ljust(16))
        for _ in range(8):
            sock.sendall(r.randbytes(MIB))
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(200).decode()
    assert answer == _want(8)
    # counters are written every second: the first write after the upload counts it
    after = cluster.counters_after(time.time(), "node-1")["node-1"]
    assert after["eth0_gro_rx"] > before  # it did arrive merged
