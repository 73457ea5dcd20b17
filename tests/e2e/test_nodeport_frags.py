"""A client's own fragments, end to end: from the outside namespace, a UDP datagram larger than
the pod MTU to a UDP node port is answered by the pod (its built-in server names the bytes it
got) after the client's kernel fragments it: over IPv6 after the first try got Packet Too Big
(RFC 8200 §5: the source fragments to the path MTU it learnt), over IPv4 after fragmentation
needed (the retry leaves without DF, in fragments) and, without PMTU discovery in the way, a
datagram the client fragments at its link MTU (the node cuts those fragments again). And a
pod's 3000-byte datagram to an IPv6 ClusterIP on the other node, fragmented by its kernel,
arrives whole. Its own cluster: the outside client's path MTU cache starts empty."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.e2e.cluster import Cluster
from tests.e2e.test_nodeport6 import CONFIG, MTU, NODE4, NODE6, NS, UDP_PORT

# A real client (default socket options: path MTU discovery "want", the kernel fragments a
# datagram above the path MTU it knows) with the extended error queue on: send, wait for the
# pod's answer; none: read the error the kernel queued (the ICMP that dropped it) and send the
# same datagram again, as an application retrying would.
CLIENT = r"""
import json, select, socket, struct, sys
fam, host, port, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
v6 = fam == "6"
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
level = socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP
s.setsockopt(level, 25 if v6 else 11, 1)   # IPV6_RECVERR / IP_RECVERR
out = {"tries": []}
for _ in range(2):
    s.sendto(bytes(range(256)) * (size // 256) + b"z" * (size % 256), (host, port))
    p = select.poll()
    p.register(s, select.POLLIN | select.POLLERR)
    got = {"reply": None, "error": None}
    for fd, ev in p.poll(3000):
        if ev & select.POLLERR:
            _, anc, _, _ = s.recvmsg(2048, 1024, socket.MSG_ERRQUEUE)
            for lvl, kind, data in anc:
                if lvl == level and kind == (25 if v6 else 11):
                    errno_, origin, typ, code, _, info, _ = struct.unpack("=IBBBBII", data[:16])
                    got["error"] = {"type": typ, "code": code, "info": info}
        if ev & select.POLLIN:
            data, addr = s.recvfrom(4096)
            got["reply"] = [addr[0], addr[1], data.decode().strip()]
    out["tries"].append(got)
    if got["reply"]:
        break
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    return module_clusters(None, "emnpfr", text=CONFIG)


def outside(c: Cluster, *cmd: str, check: bool = True):
    return c.emunet("exec", "--outside", "--", *cmd, check=check, timeout=30)


def client(c: Cluster, fam: str, host: str, size: int) -> list[dict]:
    out = outside(c, sys.executable, "-c", CLIENT, fam, host, str(UDP_PORT), str(size)).stdout
    return json.loads(out)["tries"]


def _counter(c: Cluster, name: str) -> int:
    now = c.counters_after(time.time(), "node-1", "node-2")
    return sum(d.get(name, 0) for d in now.values())


@pytest.mark.parametrize("node", ["node-1", "node-2"])  # web-1 local, then over the tunnel
def test_ipv6_retry_after_packet_too_big_arrives_in_fragments(cluster, node):
    first, second = client(cluster, "6", NODE6[node], 3000)
    # the client's link MTU (1520) fragments are above the pod MTU: Packet Too Big, lost
    assert first == {"reply": None, "error": {"type": 2, "code": 0, "info": MTU}}, first
    # the retry leaves in fragments of the path MTU the client now holds, and arrives whole
    addr, port, text = second["reply"]
    assert (addr, port) == (NODE6[node], UDP_PORT) and "pod=web-1 " in text, second
    assert "bytes=3000" in text, text
    route = outside(cluster, "ip", "-6", "route", "get", NODE6[node]).stdout
    assert f"mtu {MTU}" in route, route


@pytest.mark.parametrize("node", ["node-1", "node-2"])
def test_ipv4_datagram_the_client_fragments_at_its_link_mtu(cluster, node):
    # no path MTU learnt yet: above the link MTU, the client's kernel fragments at it (no DF),
    # and the node cuts those fragments again to the pod MTU, as ip_forward would
    before = _counter(cluster, "ip_fragments_out")
    [only] = client(cluster, "4", NODE4[node], 3000)
    addr, port, text = only["reply"]
    assert (addr, port) == (NODE4[node], UDP_PORT) and "bytes=3000" in text, only
    assert _counter(cluster, "ip_fragments_out") > before


@pytest.mark.parametrize("node", ["node-1", "node-2"])
def test_ipv4_retry_after_fragmentation_needed_arrives_in_fragments(cluster, node):
    # 1472 bytes fit the client's link (DF set, "want"): fragmentation needed, lost; the
    # retry is above the path MTU it learnt, so it leaves in fragments without DF
    first, second = client(cluster, "4", NODE4[node], 1472)
    assert first == {"reply": None, "error": {"type": 3, "code": 4, "info": MTU}}, first
    addr, port, text = second["reply"]
    assert (addr, port) == (NODE4[node], UDP_PORT) and "bytes=1472" in text, second


def test_pod_to_an_ipv6_clusterip_on_the_other_node_in_fragments(cluster):
    svc = next(s for s in cluster.get("svc") if s["metadata"]["name"] == "web-1")
    vip6 = next(ip for ip in svc["spec"]["clusterIPs"] if ":" in ip)
    script = ("import socket,sys; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
              "s.settimeout(3); s.sendto(b'f' * 3000, (sys.argv[1], 53)); "
              "d, a = s.recvfrom(4096); print(a[0], a[1], d.decode().strip())")
    out = cluster.exec(NS, "web-2", sys.executable, "-c", script, vip6).stdout  # node-2
    assert out.startswith(f"{vip6} 53 pod=web-1 ") and "bytes=3000" in out, out


def _reassembly_requests(c: Cluster, node: str) -> dict[str, int]:
    """The node kernel's own reassembly counters (RFC 4293 ipSystemStatsReasmReqds), read in
    the node's namespace: /proc/net/snmp's Ip line and /proc/net/snmp6."""
    def cat(path: str) -> str:
        return subprocess.run(["ip", "netns", "exec", f"{c.prefix}-{node}", "cat", path],
                              capture_output=True, text=True, check=True, timeout=30).stdout
    head, values = [ln.split() for ln in cat("/proc/net/snmp").splitlines()
                    if ln.startswith("Ip:")][:2]
    v6 = dict(ln.split() for ln in cat("/proc/net/snmp6").splitlines() if ln.strip())
    return {"ipv4": int(values[head.index("ReasmReqds")]), "ipv6": int(v6["Ip6ReasmReqds"])}


@pytest.mark.parametrize("node", ["node-1", "node-2"])
def test_the_node_kernels_got_none_of_the_fragments(cluster, node):
    # last in this module: every fragment above was the agent's (its eth0 filter, and tc's
    # drop before the node's IP stack); the kernel reassembled nothing (before, it did, and
    # answered port unreachable: no listener)
    assert _reassembly_requests(cluster, node) == {"ipv4": 0, "ipv6": 0}
