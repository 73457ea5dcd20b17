"""NodePort over IPv6 in the pure datapath (issue 19), byte-checked against Scapy: DNAT + SNAT to
the node's IPv6 pod gateway of a client's frame from eth0, reverse NAT of the replies (local
and remote backend, by flannel-v6's tunnel), rejects (no endpoints, no such port, an IPv4-only
Service's port on the IPv6 address), the Service's families respected, and the eth0 socket's
BPF filter and the tc ingress filter for IPv6."""

from __future__ import annotations

import random

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6
from scapy.layers.l2 import Ether

from emunet.config import load_config_text
from emunet.datapath import Datapath, Drop, DropReason, Encap, NodeTables, Send
from emunet.host.underlay import (
    bpf_matches,
    bpf_program,
    ingress_drop_commands,
    outside_ip6,
)
from emunet.state.cluster import ClusterState
from emunet.state.plan import plan
from tests.unit.pipeline_pair import datapath
from tests.unit.test_datapath_nodeport import _state as v4_state

OUT6, OUT_MAC, ETH0_MAC = "fd00:e3e7::fe", "02:00:00:00:00:fe", "02:00:00:00:00:11"
NODE1_6, NODE2_6 = "fd00:e3e7::b", "fd00:e3e7::c"
NODE1, OUT4 = "192.168.1.11", "192.168.1.254"
GW1_6 = "2001:cafe:42:1::1"

CONFIG = """apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {name: ds}
spec:
  nodes: [{name: node-1}, {name: node-2}]
  clusterCIDR: 10.42.0.0/16,2001:cafe:42::/56
  serviceCIDR: 10.43.0.0/16,2001:cafe:43::/112
  mtu: 1450
---
apiVersion: v1
kind: Namespace
metadata: {name: web}
---
apiVersion: v1
kind: Pod
metadata: {name: w1, namespace: web, labels: {app: w1}}
spec:
  nodeName: node-1
  containers: [{name: c, image: img, ports: [{containerPort: 8080}, {containerPort: 5353,
               protocol: UDP}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: w2, namespace: web, labels: {app: w2}}
spec:
  nodeName: node-2
  containers: [{name: c, image: img, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: web}
spec:
  type: NodePort
  selector: {app: w1}
  ipFamilyPolicy: PreferDualStack
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080},
          {name: dns, port: 53, targetPort: 5353, protocol: UDP, nodePort: 30053}]
---
apiVersion: v1
kind: Service
metadata: {name: remote, namespace: web}
spec:
  type: NodePort
  selector: {app: w2}
  ipFamilyPolicy: RequireDualStack
  ports: [{port: 80, targetPort: 8080, nodePort: 30081}]
---
apiVersion: v1
kind: Service
metadata: {name: v4only, namespace: web}
spec:
  type: NodePort
  selector: {app: w1}
  ports: [{port: 80, targetPort: 8080, nodePort: 30082}]
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: web}
spec:
  type: NodePort
  selector: {app: none}
  ipFamilyPolicy: PreferDualStack
  ports: [{port: 80, targetPort: 8080, nodePort: 30090}]
"""


def dual_np_state() -> ClusterState:
    st = plan(load_config_text(CONFIG, "ds.yaml"))
    for p in st.pods.values():
        p.ready = True
    return st


def dp_of(st: ClusterState, node: str) -> Datapath:
    return Datapath(NodeTables.from_state(st, node), random.Random(1))


def syn6(dport: int = 30080, sport: int = 40000, src: str = OUT6, dst: str = NODE1_6,
         flags: str = "S", seq: int = 1000, ack: int = 0, data: bytes = b"",
         hlim: int = 64) -> Ether:
    return Ether(src=OUT_MAC, dst=ETH0_MAC) / IPv6(src=src, dst=dst, hlim=hlim) / \
        TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=512) / data


def fixed6(pkt: Ether) -> bytes:
    """Scapy's bytes with the upper-layer checksum recomputed over the IPv6 pseudo-header:
    what a correct NAT must produce."""
    pkt = Ether(bytes(pkt))
    for layer in (TCP, UDP):
        if layer in pkt:
            del pkt[layer].chksum
    return bytes(pkt)


def test_local_backend_dnat_snat_and_reverse_nat_byte_exact():
    st = dual_np_state()
    dp = dp_of(st, "node-1")
    w1, gw = st.pods[("web", "w1")], st.node("node-1")
    assert gw.underlay_ip6 == NODE1_6 and gw.gateway_ip6 == GW1_6
    [s] = dp.process_nodeport(bytes(syn6()), 10.0)
    assert isinstance(s, Send) and s.port == w1.host_ifname
    want = Ether(src=gw.gateway_mac, dst=w1.mac) / IPv6(src=GW1_6, dst=w1.ip6, hlim=63) / \
        TCP(sport=40000, dport=8080, flags="S", seq=1000, window=512)
    assert s.frame == fixed6(want)
    reply = Ether(src=w1.mac, dst=gw.gateway_mac) / IPv6(src=w1.ip6, dst=GW1_6) / \
        TCP(sport=8080, dport=40000, flags="SA", seq=5000, ack=1001, window=512)
    [r] = dp.process(bytes(reply), w1.host_ifname, 10.1)
    assert isinstance(r, Send) and r.port == "eth0"
    want = Ether(src=ETH0_MAC, dst=OUT_MAC) / IPv6(src=NODE1_6, dst=OUT6, hlim=63) / \
        TCP(sport=30080, dport=40000, flags="SA", seq=5000, ack=1001, window=512)
    assert r.frame == fixed6(want)
    # the rest of the connection takes the conntrack entry both ways
    [d] = dp.process_nodeport(bytes(syn6(flags="A", seq=1001, ack=5001, data=b"GET /")), 10.2)
    got = Ether(d.frame)
    assert (got[IPv6].dst, got[TCP].dport, bytes(got[TCP].payload)) == (w1.ip6, 8080, b"GET /")
    assert d.frame == fixed6(got)
    assert dp.counters["nodeport_dnat"] == 1 and dp.counters["nodeport_out"] == 1


def test_remote_backend_over_flannel_v6_and_back():
    st = dual_np_state()
    dp1, dp2 = dp_of(st, "node-1"), dp_of(st, "node-2")
    w2, n2 = st.pods[("web", "w2")], st.node("node-2")
    [e] = dp1.process_nodeport(bytes(syn6(dport=30081)), 10.0)
    assert isinstance(e, Encap) and e.dst_ip == NODE2_6  # IPv6 outer: flannel-v6.1
    [s] = dp2.process_underlay(e.payload, NODE1_6, 10.0)
    got = Ether(s.frame)
    assert s.port == w2.host_ifname
    assert (got[IPv6].src, got[IPv6].dst, got[TCP].sport, got[TCP].dport) == (
        GW1_6, w2.ip6, 40000, 8080)  # the backend sees node-1's IPv6 gateway (masquerade)
    assert s.frame == fixed6(got)
    reply = Ether(src=w2.mac, dst=n2.gateway_mac) / IPv6(src=w2.ip6, dst=GW1_6) / \
        TCP(sport=8080, dport=40000, flags="SA", seq=1, ack=1001, window=512)
    [e2] = dp2.process(bytes(reply), w2.host_ifname, 10.1)
    assert isinstance(e2, Encap) and e2.dst_ip == NODE1_6
    [r] = dp1.process_underlay(e2.payload, NODE2_6, 10.1)
    want = Ether(src=ETH0_MAC, dst=OUT_MAC) / IPv6(src=NODE1_6, dst=OUT6, hlim=62) / \
        TCP(sport=30081, dport=40000, flags="SA", seq=1, ack=1001, window=512)
    assert isinstance(r, Send) and r.port == "eth0" and r.frame == fixed6(want)


def test_udp_node_port_and_its_reply():
    st = dual_np_state()
    dp = dp_of(st, "node-1")
    w1, gw = st.pods[("web", "w1")], st.node("node-1")
    q = Ether(src=OUT_MAC, dst=ETH0_MAC) / IPv6(src=OUT6, dst=NODE1_6) / \
        UDP(sport=5000, dport=30053) / b"q"
    [s] = dp.process_nodeport(bytes(q), 1.0)
    got = Ether(s.frame)
    assert (got[IPv6].src, got[IPv6].dst, got[UDP].dport) == (GW1_6, w1.ip6, 5353)
    assert s.frame == fixed6(got)
    a = Ether(src=w1.mac, dst=gw.gateway_mac) / IPv6(src=w1.ip6, dst=GW1_6) / \
        UDP(sport=5353, dport=5000) / b"a"
    [r] = dp.process(bytes(a), w1.host_ifname, 1.1)
    want = Ether(src=ETH0_MAC, dst=OUT_MAC) / IPv6(src=NODE1_6, dst=OUT6, hlim=63) / \
        UDP(sport=30053, dport=5000) / b"a"
    assert r.port == "eth0" and r.frame == fixed6(want)


@pytest.mark.parametrize("port", [30090, 30999, 30082])  # no endpoints; nobody's; IPv4-only
def test_rejected_at_once_with_a_reset(port):
    dp = dp_of(dual_np_state(), "node-1")
    send, drop = dp.process_nodeport(bytes(syn6(dport=port, seq=77)), 1.0)
    assert isinstance(drop, Drop) and drop.reason is DropReason.NO_ENDPOINTS
    want = Ether(src=ETH0_MAC, dst=OUT_MAC) / IPv6(src=NODE1_6, dst=OUT6) / \
        TCP(sport=port, dport=40000, flags="RA", seq=0, ack=78, window=0)
    assert send.port == "eth0" and send.frame == fixed6(want)  # RFC 9293: ack the SYN


def test_udp_rejected_with_icmpv6_port_unreachable_and_no_reset_for_a_reset():
    dp = dp_of(dual_np_state(), "node-1")
    q = Ether(src=OUT_MAC, dst=ETH0_MAC) / IPv6(src=OUT6, dst=NODE1_6) / \
        UDP(sport=5000, dport=30999) / b"q"
    send, drop = dp.process_nodeport(bytes(q), 1.0)
    want = Ether(src=ETH0_MAC, dst=OUT_MAC) / IPv6(src=NODE1_6, dst=OUT6) / \
        ICMPv6DestUnreach(code=4) / bytes(q)[14:]
    assert isinstance(drop, Drop) and send.port == "eth0" and send.frame == bytes(want)
    [d] = dp.process_nodeport(bytes(syn6(dport=30999, flags="R")), 1.0)
    assert isinstance(d, Drop)


def test_the_service_families_decide_which_node_ports_exist():
    st = dual_np_state()
    t = NodeTables.from_state(st, "node-1")
    assert sorted(port for _, port in t.nodeports6) == [30053, 30080, 30081, 30090]
    assert sorted(port for _, port in t.nodeports) == [30053, 30080, 30081, 30082, 30090]
    # the IPv4-only Service's node port still answers over IPv4
    dp = dp_of(st, "node-1")
    syn4 = Ether(src=OUT_MAC, dst=ETH0_MAC) / IP(src=OUT4, dst=NODE1) / \
        TCP(sport=40000, dport=30082, flags="S")
    [s] = dp.process_nodeport(bytes(syn4), 1.0)
    assert isinstance(s, Send) and Ether(s.frame)[IP].dst == st.pods[("web", "w1")].ip


def test_a_pod_reaches_a_node_port_on_a_node_ipv6_address():
    st = dual_np_state()
    dp = dp_of(st, "node-1")
    w1, gw = st.pods[("web", "w1")], st.node("node-1")
    f = Ether(src=w1.mac, dst=gw.gateway_mac) / IPv6(src=w1.ip6, dst=NODE2_6) / \
        TCP(sport=41000, dport=30081, flags="S")
    [e] = dp.process(bytes(f), w1.host_ifname, 1.0)
    inner = Ether(e.payload[8:])
    assert (inner[IPv6].dst, inner[TCP].dport) == (st.pods[("web", "w2")].ip6, 8080)


@pytest.mark.parametrize("frame, reason", [
    (syn6(src="2001:cafe:42:2::9"), DropReason.INVALID_SOURCE),  # a pod address on eth0
    (syn6(src="2001:cafe:42:1::9"), DropReason.INVALID_SOURCE),
    (syn6(dst=NODE2_6), DropReason.NO_ROUTE),  # not this node's address
    (syn6(hlim=1), DropReason.TTL_EXCEEDED),
    (Ether(src=OUT_MAC, dst=ETH0_MAC) / IPv6(src=OUT6, dst=NODE1_6, plen=200) / TCP(),
     DropReason.INVALID_PACKET),
])
def test_ipv6_frames_that_are_not_ours_are_dropped(frame, reason):
    [d] = dp_of(dual_np_state(), "node-1").process_nodeport(bytes(frame), 1.0)
    assert isinstance(d, Drop) and d.reason is reason


def test_an_ipv4_only_node_drops_ipv6_on_eth0():
    [d] = datapath(v4_state(), "node-1").process_nodeport(bytes(syn6(dst=NODE1_6)), 1.0)
    assert isinstance(d, Drop) and d.reason is DropReason.UNSUPPORTED_L3


# ---- the eth0 socket's filter and the node kernel's ingress drop --------------------------------

@pytest.mark.parametrize("pkt, want", [
    (syn6(dport=30000), True),
    (syn6(dport=32767), True),
    (syn6(dport=29999), False),
    (syn6(dport=32768), False),
    (syn6(dst=NODE2_6), False),
    (syn6(dst="fd00:e3e7::1:b"), False),  # one word differs
    (Ether() / IPv6(dst=NODE1_6) / UDP(dport=31000), True),
    (Ether() / IPv6(dst=NODE1_6) / UDP(dport=8472), False),  # flannel-v6's VXLAN: the kernel's
    (Ether() / IPv6(dst=NODE1_6, nh=58) / (b"\x87\0" + b"\0" * 30), False),  # NDP: the kernel's
    (Ether() / IPv6(dst=NODE1_6, nh=44) / (b"\x06\0\0\0\0\0\0\1" + bytes(TCP(dport=30080))),
     False),  # a fragment header: not walked, the kernel's
    (Ether() / IP(dst=NODE1) / TCP(dport=30080), True),  # IPv4 as before
    (Ether() / IP(dst=NODE1) / TCP(dport=8472), False),
])
def test_bpf_filter_takes_ipv6_node_ports_for_this_node(pkt, want):
    assert bpf_matches(bpf_program(NODE1, NODE1_6), bytes(pkt)) is want


def test_ipv4_only_filter_ignores_ipv6():
    assert not bpf_matches(bpf_program(NODE1), bytes(syn6()))
    assert bpf_matches(bpf_program(NODE1), bytes(Ether() / IP(dst=NODE1) / TCP(dport=30080)))


def test_tc_filters_cover_ipv6_under_their_own_preference():
    v4 = ingress_drop_commands("ns", NODE1)
    both = ingress_drop_commands("ns", NODE1, node_ip6=NODE1_6)
    six = [c for c in both if "ipv6" in c]
    assert len(six) == len(v4) - 2  # the same blocks per protocol, minus the ifb and qdisc
    assert all(c[c.index("pref") + 1] == "2" and f"{NODE1_6}/128" in c for c in six)
    assert both[:len(v4)] == v4
    assert {c[c.index("protocol", c.index("ip6")) + 1] for c in six} == {"6", "17"}


def test_outside_client_ipv6_address():
    assert outside_ip6("fd00:e3e7::/64") == "fd00:e3e7::fe"
    assert outside_ip6("fd00:e3e7::/120") == "fd00:e3e7::fe"
    assert outside_ip6("fd00:e3e7::/124") == "fd00:e3e7::e"


@pytest.mark.parametrize("v6", [False, True])
def test_a_pods_own_node_port_connection_gets_its_reply_after_an_outside_client(v6):
    """The reply of a pod's connection to <node address>:<nodePort> comes back from the node's
    address too (reverse NAT): it goes to the pod, not to eth0, also once the neighbour table
    holds an outside client (which used to make it a NodePort reply with no neighbour)."""
    st = dual_np_state()
    dp = dp_of(st, "node-1")
    w1, w2, gw = st.pods[("web", "w1")], st.pods[("web", "w2")], st.node("node-1")
    outside = syn6(dport=30081) if v6 else Ether(src=OUT_MAC, dst=ETH0_MAC) / \
        IP(src=OUT4, dst=NODE1) / TCP(sport=40000, dport=30081, flags="S")
    dp.process_nodeport(bytes(outside), 1.0)
    assert len(dp.neigh) == 1
    L3, src, node, back = (IPv6, w1.ip6, NODE1_6, w2.ip6) if v6 else (IP, w1.ip, NODE1, w2.ip)
    syn = Ether(src=w1.mac, dst=gw.gateway_mac) / L3(src=src, dst=node) / \
        TCP(sport=41000, dport=30081, flags="S")
    [e] = dp.process(bytes(syn), w1.host_ifname, 2.0)
    assert isinstance(e, Encap) and Ether(e.payload[8:])[L3].dst == back
    dp2 = dp_of(st, "node-2")
    dp2.process_underlay(e.payload, NODE1_6 if v6 else NODE1, 2.0)
    w2_node = st.node("node-2")
    reply = Ether(src=w2.mac, dst=w2_node.gateway_mac) / L3(src=back, dst=src) / \
        TCP(sport=8080, dport=41000, flags="SA", ack=1)
    [e2] = dp2.process(bytes(reply), w2.host_ifname, 2.1)
    [r] = dp.process_underlay(e2.payload, NODE2_6 if v6 else "192.168.1.12", 2.1)
    got = Ether(r.frame)
    assert isinstance(r, Send) and r.port == w1.host_ifname
    assert (got[L3].src, got[TCP].sport, got[L3].dst) == (node, 30081, src)
