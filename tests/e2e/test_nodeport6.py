"""NodePort over IPv6 and Packet Too Big end to end (issue 19): from the outside client on the
underlay, real clients reach a dual-stack Service at [node IPv6]:nodePort on both nodes, with
the backend local and remote (curl -6, and a UDP exchange); a node port without endpoints and
an IPv4-only Service's node port on the IPv6 address refuse at once; a datagram larger than the
pod MTU gets ICMPv6 Packet Too Big (IPv4 with DF: fragmentation needed), as the client's own
kernel reports it (IPV6_RECVERR / IP_RECVERR on a socket with path MTU discovery on), and one
without DF reaches the pod in fragments, which it reassembles."""

from __future__ import annotations

import hashlib
import json
import random
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from emunet.host.netns import socket_in_netns
from tests.e2e.cluster import Cluster

NS = "np6"
NODE6 = {"node-1": "fd00:e3e7::b", "node-2": "fd00:e3e7::c"}
NODE4 = {"node-1": "192.168.1.11", "node-2": "192.168.1.12"}
PORTS = {"web-1": 30281, "web-2": 30282}
UDP_PORT, EMPTY_PORT, V4_PORT = 30253, 30290, 30283
MTU = 1450

CONFIG = f"""apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {{name: np6}}
spec:
  nodes: [{{name: node-1}}, {{name: node-2}}]
  clusterCIDR: 10.42.0.0/16,2001:cafe:42::/56
  serviceCIDR: 10.43.0.0/16,2001:cafe:43::/112
  mtu: {MTU}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web-1, namespace: {NS}, labels: {{app: web-1}}}}
spec:
  nodeName: node-1
  containers: [{{name: web, image: emunet/builtin, ports: [{{containerPort: 8080}},
               {{containerPort: 8053, protocol: UDP}}]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: web-2, namespace: {NS}, labels: {{app: web-2}}}}
spec:
  nodeName: node-2
  containers: [{{name: web, image: emunet/builtin, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-1, namespace: {NS}}}
spec:
  type: NodePort
  selector: {{app: web-1}}
  ipFamilyPolicy: PreferDualStack
  ports: [{{name: http, port: 80, targetPort: 8080, nodePort: {PORTS['web-1']}}},
          {{name: udp, port: 53, targetPort: 8053, protocol: UDP, nodePort: {UDP_PORT}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-2, namespace: {NS}}}
spec:
  type: NodePort
  selector: {{app: web-2}}
  ipFamilyPolicy: RequireDualStack
  ports: [{{port: 80, targetPort: 8080, nodePort: {PORTS['web-2']}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: v4only, namespace: {NS}}}
spec:
  type: NodePort
  selector: {{app: web-1}}
  ports: [{{port: 80, targetPort: 8080, nodePort: {V4_PORT}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: empty, namespace: {NS}}}
spec:
  type: NodePort
  selector: {{app: nobody}}
  ipFamilyPolicy: PreferDualStack
  ports: [{{port: 80, targetPort: 8080, nodePort: {EMPTY_PORT}}}]
"""

# A real client of the outside namespace: a UDP socket with path MTU discovery on (DF / no
# local fragmentation) and the extended error queue, which the kernel fills from an ICMP(v6)
# error that matches the socket (its quote must name our own 5-tuple): sock_extended_err's
# origin, type, code and info (the reported MTU), the offender's address, and the path MTU the
# kernel now holds for the destination (IP_MTU / IPV6_MTU).
PROBE = r"""
import json, select, socket, struct, sys
fam, host, port, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
v6 = fam == "6"
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
level = socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP
s.setsockopt(level, 23 if v6 else 10, 2)   # IPV6_MTU_DISCOVER / IP_MTU_DISCOVER: PMTUDISC_DO
s.setsockopt(level, 25 if v6 else 11, 1)   # IPV6_RECVERR / IP_RECVERR
s.connect((host, port))
s.send(b"x" * size)
out = {"error": None}
p = select.poll()
p.register(s, select.POLLERR)
if p.poll(3000):
    _, anc, _, _ = s.recvmsg(2048, 1024, socket.MSG_ERRQUEUE)
    for lvl, kind, data in anc:
        if lvl == level and kind == (25 if v6 else 11):
            errno_, origin, typ, code, _, info, _ = struct.unpack("=IBBBBII", data[:16])
            off = data[16:]
            who = socket.inet_ntop(socket.AF_INET6, off[8:24]) if v6 else \
                socket.inet_ntop(socket.AF_INET, off[4:8])
            out = {"error": {"errno": errno_, "origin": origin, "type": typ, "code": code,
                             "info": info, "from": who}}
out["pmtu"] = s.getsockopt(level, 24 if v6 else 14)  # IPV6_MTU / IP_MTU
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    return module_clusters(None, "emnp6", text=CONFIG)


def outside(c: Cluster, *cmd: str, check: bool = True):
    return c.emunet("exec", "--outside", "--", *cmd, check=check, timeout=30)


def probe(c: Cluster, fam: str, host: str, port: int, size: int) -> dict:
    return json.loads(outside(c, sys.executable, "-c", PROBE, fam, host, str(port),
                              str(size)).stdout)


def test_the_outside_client_has_an_ipv6_underlay_address(cluster):
    addr = outside(cluster, "ip", "-6", "addr", "show", "eth0").stdout
    assert "inet6 fd00:e3e7::fe/64 scope global nodad" in addr
    out = outside(cluster, "ping", "-6", "-c", "1", "-W", "2", NODE6["node-1"]).stdout
    assert " 0% packet loss" in out  # the node kernel still answers ICMPv6 and NDP


@pytest.mark.parametrize("node", ["node-1", "node-2"])
@pytest.mark.parametrize("server", ["web-1", "web-2"])  # on node-1 / node-2: local and remote
def test_curl6_reaches_the_service_on_either_node(cluster, node, server):
    url = f"http://[{NODE6[node]}]:{PORTS[server]}/np6"
    out = outside(cluster, "curl", "-s", "-6", "-g", "-m", "5", url).stdout
    assert f"pod={server} " in out and "path=/np6" in out, out


def test_udp_over_ipv6_node_port_and_back(cluster):
    script = ("import socket,sys; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
              "s.settimeout(3); s.sendto(b'hello', (sys.argv[1], int(sys.argv[2]))); "
              "d, a = s.recvfrom(2048); print(a[0], a[1], d.decode().strip())")
    for node in NODE6:
        out = outside(cluster, sys.executable, "-c", script, NODE6[node], str(UDP_PORT)).stdout
        # the reply comes from the node port it was sent to (reverse NAT), from web-1
        assert out.startswith(f"{NODE6[node]} {UDP_PORT} pod=web-1 ") and "bytes=5" in out


@pytest.mark.parametrize("port", [EMPTY_PORT, V4_PORT, 30299])  # no endpoints, IPv4 only, none
def test_refused_at_once_over_ipv6(cluster, port):
    p = outside(cluster, "curl", "-s", "-6", "-g", "-m", "5", "-o", "/dev/null", "-w",
                "%{time_total}", f"http://[{NODE6['node-1']}]:{port}/", check=False)
    assert p.returncode == 7 and float(p.stdout) < 2, (p.returncode, p.stdout)


def test_the_ipv4_only_service_answers_over_ipv4(cluster):
    out = outside(cluster, "curl", "-s", "-4", "-m", "5",
                  f"http://{NODE4['node-2']}:{V4_PORT}/v4").stdout
    assert "pod=web-1 " in out and "path=/v4" in out


@pytest.mark.parametrize("node", ["node-1", "node-2"])
def test_a_big_udp_datagram_gets_packet_too_big(cluster, node):
    small = probe(cluster, "6", NODE6[node], UDP_PORT, 100)
    assert small["error"] is None  # it fits: forwarded, no error
    got = probe(cluster, "6", NODE6[node], UDP_PORT, 1500 - 48)  # a 1500-byte IPv6 packet
    # SO_EE_ORIGIN_ICMP6, ICMPv6 type 2 code 0, EMSGSIZE, the pod MTU, from the node
    assert got["error"] == {"errno": 90, "origin": 3, "type": 2, "code": 0, "info": MTU,
                            "from": NODE6[node]}, got
    assert got["pmtu"] == MTU  # the client's kernel took the pod MTU as the path MTU


# before the DF test: that one leaves node-1's path MTU (1450) in the client's route cache,
# and a datagram above it would then leave the client already fragmented
@pytest.mark.parametrize("node", ["node-1", "node-2"])  # web-1 local, then over the tunnel
def test_a_big_ipv4_datagram_without_df_arrives_in_fragments(cluster, node):
    script = ("import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
              "s.setsockopt(socket.IPPROTO_IP, 10, 0); s.settimeout(3); "  # IP_PMTUDISC_DONT
              "s.sendto(b'x' * 1472, (sys.argv[1], int(sys.argv[2]))); "
              "print(s.recvfrom(2048)[0].decode().strip())")
    out = outside(cluster, sys.executable, "-c", script, NODE4[node], str(UDP_PORT)).stdout
    assert "pod=web-1 " in out and "bytes=1472" in out, out  # the pod reassembled it whole


def test_a_big_ipv4_datagram_with_df_gets_fragmentation_needed(cluster):
    got = probe(cluster, "4", NODE4["node-1"], UDP_PORT, 1500 - 28)
    # SO_EE_ORIGIN_ICMP, type 3 code 4 (RFC 1191's next-hop MTU in info), from the node
    assert got["error"] == {"errno": 90, "origin": 2, "type": 3, "code": 4, "info": MTU,
                            "from": NODE4["node-1"]}, got
    assert got["pmtu"] == MTU


def test_get_svc_shows_the_node_ports(cluster):
    out = cluster.emunet("get", "svc", "-n", NS).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("web-1 "))
    assert f"80:{PORTS['web-1']}/TCP" in line and f"53:{UDP_PORT}/UDP" in line


def _counters(c: Cluster, node: str) -> dict:
    return json.loads((Path(c.run_dir) / f"agent-{node}.json").read_text())["counters"]


@pytest.mark.parametrize("server", ["web-1", "web-2"])  # local, remote from node-1
def test_tcp6_stream_through_the_node_port_is_intact_and_gro_merged(cluster, server):
    """2 MiB echoed through [node-1 IPv6]:nodePort: the client's segments arrive GRO-merged on
    eth0 (TCPv6 super-frames the agent takes whole), the backend's TSO replies are cut to MSS
    on the way out; every byte comes back."""
    before = _counters(cluster, "node-1")
    data = random.Random(6).randbytes(2 << 20)
    sock = socket_in_netns(f"{cluster.prefix}-outside", socket.AF_INET6, socket.SOCK_STREAM)
    sock.settimeout(20)
    got = bytearray()
    with sock:
        sock.connect((NODE6["node-1"], PORTS[server]))
        sender = threading.Thread(target=lambda: (sock.sendall(b"echo:" + data),
                                                  sock.shutdown(socket.SHUT_WR)))
        sender.start()
        while len(got) < len(data) + 5:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            got += chunk
        sender.join(20)
    assert hashlib.sha256(got).digest() == hashlib.sha256(b"echo:" + data).digest()
    after = cluster.counters_after(time.time(), "node-1")["node-1"]
    assert after["eth0_gro_rx"] > before.get("eth0_gro_rx", 0)  # it did arrive merged
    assert after.get("gso_dropped", 0) == before.get("gso_dropped", 0)


@pytest.mark.parametrize("family", ["-6", "-4"])
def test_a_pod_reaches_a_node_port_after_outside_clients_did(cluster, family):
    """A pod's own connection to <node address>:<nodePort> while the node's neighbour table
    holds outside clients: its reply goes back to the pod (it was once taken for a NodePort
    reply with no neighbour and dropped)."""
    node = NODE6["node-1"] if family == "-6" else NODE4["node-1"]
    host = f"[{node}]" if family == "-6" else node
    outside(cluster, "curl", "-s", family, "-g", "-m", "5", f"http://{host}:{PORTS['web-2']}/")
    out = cluster.exec(NS, "web-1", "curl", "-s", family, "-g", "-m", "5",
                       f"http://{host}:{PORTS['web-2']}/from-pod").stdout
    assert "pod=web-2 " in out and "path=/from-pod" in out, out
