"""NodePort and session affinity in the pure datapath, byte-checked against Scapy: DNAT + SNAT of
a client's frame from eth0, reverse NAT of the replies (local and remote backend), rejects, the
eth0 socket's BPF filter, and the affinity table (kube-proxy recent-list semantics)."""

from __future__ import annotations

import random

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, UDPerror
from scapy.layers.l2 import Ether

from emunet.datapath import Drop, DropReason, Encap, Send
from emunet.datapath.affinity import Affinity
from emunet.datapath.tables import ServiceTarget
from emunet.host.underlay import bpf_matches, bpf_program, outside_ip, port_blocks
from emunet.model import (
    ClusterSpec,
    Config,
    Container,
    ContainerPort,
    NodeSpec,
    Pod,
    Service,
    ServicePort,
)
from emunet.state.cluster import ClusterState
from emunet.state.plan import plan
from tests.unit.pipeline_pair import datapath

OUT_IP, OUT_MAC, ETH0_MAC = "192.168.1.254", "02:00:00:00:00:fe", "02:00:00:00:00:11"
NODE1, NODE2 = "192.168.1.11", "192.168.1.12"


def _state(web_nodes=("node-1",), affinity: str = "None") -> ClusterState:
    pods = [Pod(namespace="blog", name=f"web-{i}", labels={"app": "web"}, node_name=n,
                containers=(Container("web", ports=(ContainerPort(8080, "TCP", "http"),
                                                     ContainerPort(5353, "UDP", "dns"))),))
            for i, n in enumerate(web_nodes)]
    svc = Service(namespace="blog", name="web", selector={"app": "web"}, type="NodePort",
                  ports=(ServicePort(80, "http", "TCP", "http", node_port=30080),
                         ServicePort(53, "dns", "UDP", "dns", node_port=30053)),
                  session_affinity=affinity)
    empty = Service(namespace="blog", name="empty", selector={"app": "none"}, type="NodePort",
                    ports=(ServicePort(80, 8080, "TCP", node_port=30090),))
    st = plan(Config(cluster=ClusterSpec(nodes=(NodeSpec("node-1"),
                                                             NodeSpec("node-2"))),
                                  pods=tuple(pods), services=(svc, empty)))
    for p in st.pods.values():
        p.ready = True
    return st


def _syn(dport: int = 30080, sport: int = 40000, src: str = OUT_IP, dst: str = NODE1,
         flags: str = "S", seq: int = 1000, ack: int = 0, data: bytes = b"") -> Ether:
    return Ether(src=OUT_MAC, dst=ETH0_MAC) / IP(src=src, dst=dst, ttl=64, id=7) / \
        TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=512) / data


def _fixed(pkt: Ether) -> bytes:
    """Scapy's bytes with every checksum recomputed: what a correct NAT must produce."""
    pkt = Ether(bytes(pkt))
    del pkt[IP].chksum
    if TCP in pkt:
        del pkt[TCP].chksum
    if UDP in pkt:
        del pkt[UDP].chksum
    return bytes(pkt)


def test_local_backend_dnat_snat_and_reverse_nat_byte_exact():
    st = _state()
    dp = datapath(st, "node-1")
    web, gw = st.pods[("blog", "web-0")], st.node("node-1")
    [s] = dp.process_nodeport(bytes(_syn()), 10.0)
    assert isinstance(s, Send) and s.port == web.host_ifname
    want = Ether(src=gw.gateway_mac, dst=web.mac) / \
        IP(src=gw.gateway_ip, dst=web.ip, ttl=63, id=7) / \
        TCP(sport=40000, dport=8080, flags="S", seq=1000, window=512)
    assert s.frame == _fixed(want)
    reply = Ether(src=web.mac, dst=gw.gateway_mac) / IP(src=web.ip, dst=gw.gateway_ip, ttl=64,
                                                         id=9) / \
        TCP(sport=8080, dport=40000, flags="SA", seq=5000, ack=1001, window=512)
    [r] = dp.process(bytes(reply), web.host_ifname, 10.1)
    assert isinstance(r, Send) and r.port == "eth0"
    want = Ether(src=ETH0_MAC, dst=OUT_MAC) / IP(src=NODE1, dst=OUT_IP, ttl=63, id=9) / \
        TCP(sport=30080, dport=40000, flags="SA", seq=5000, ack=1001, window=512)
    assert r.frame == _fixed(want)
    # the rest of the connection takes the conntrack entry both ways
    [d] = dp.process_nodeport(bytes(_syn(flags="A", seq=1001, ack=5001, data=b"GET /")), 10.2)
    got = Ether(d.frame)
    assert (got[IP].dst, got[TCP].dport, bytes(got[TCP].payload)) == (web.ip, 8080, b"GET /")
    assert d.frame == _fixed(got)


def test_remote_backend_over_vxlan_and_back():
    st = _state(web_nodes=("node-2",))
    dp1, dp2 = datapath(st, "node-1"), datapath(st, "node-2")
    web, gw1 = st.pods[("blog", "web-0")], st.node("node-1")
    [e] = dp1.process_nodeport(bytes(_syn()), 10.0)
    assert isinstance(e, Encap) and e.dst_ip == NODE2
    [s] = dp2.process_underlay(e.payload, NODE1, 10.0)
    got = Ether(s.frame)
    assert s.port == web.host_ifname
    assert (got[IP].src, got[IP].dst, got[TCP].sport, got[TCP].dport) == (
        gw1.gateway_ip, web.ip, 40000, 8080)  # the backend sees node-1 (masquerade)
    assert s.frame == _fixed(got)
    reply = Ether(src=web.mac, dst=st.node("node-2").gateway_mac) / \
        IP(src=web.ip, dst=gw1.gateway_ip, ttl=64, id=3) / \
        TCP(sport=8080, dport=40000, flags="SA", seq=1, ack=1001, window=512)
    [e2] = dp2.process(bytes(reply), web.host_ifname, 10.1)
    assert isinstance(e2, Encap) and e2.dst_ip == NODE1
    [r] = dp1.process_underlay(e2.payload, NODE2, 10.1)
    want = Ether(src=ETH0_MAC, dst=OUT_MAC) / IP(src=NODE1, dst=OUT_IP, ttl=62, id=3) / \
        TCP(sport=30080, dport=40000, flags="SA", seq=1, ack=1001, window=512)
    assert isinstance(r, Send) and r.port == "eth0" and r.frame == _fixed(want)


def test_udp_node_port():
    st = _state()
    dp = datapath(st, "node-1")
    web = st.pods[("blog", "web-0")]
    q = Ether(src=OUT_MAC, dst=ETH0_MAC) / IP(src=OUT_IP, dst=NODE1) / \
        UDP(sport=5000, dport=30053) / b"q"
    [s] = dp.process_nodeport(bytes(q), 1.0)
    got = Ether(s.frame)
    assert (got[IP].dst, got[UDP].dport) == (web.ip, 5353) and s.frame == _fixed(got)


def test_no_endpoints_and_unknown_port_are_rejected_at_once():
    st = _state()
    dp = datapath(st, "node-1")
    for port in (30090, 30999):  # a Service without ready pods; a port nobody owns
        send, drop = dp.process_nodeport(bytes(_syn(dport=port, seq=77)), 1.0)
        assert isinstance(drop, Drop) and drop.reason is DropReason.NO_ENDPOINTS
        rst = Ether(send.frame)
        assert send.port == "eth0" and (rst.src, rst.dst) == (ETH0_MAC, OUT_MAC)
        assert (rst[IP].src, rst[IP].dst, rst[TCP].sport, rst[TCP].dport) == (
            NODE1, OUT_IP, port, 40000)
        assert rst[TCP].flags == "RA" and rst[TCP].ack == 78  # RFC 9293: ack the SYN
        assert send.frame == _fixed(rst)
    [drop] = dp.process_nodeport(bytes(_syn(dport=30999, flags="R")), 1.0)
    assert isinstance(drop, Drop)  # never a reset for a reset
    q = Ether(src=OUT_MAC, dst=ETH0_MAC) / IP(src=OUT_IP, dst=NODE1) / \
        UDP(sport=5000, dport=30999) / b"q"
    send, _ = dp.process_nodeport(bytes(q), 1.0)
    icmp = Ether(send.frame)
    assert (icmp[ICMP].type, icmp[ICMP].code) == (3, 3)
    assert icmp[UDPerror].dport == 30999


@pytest.mark.parametrize("frame, reason", [
    (_syn(src="10.42.2.9"), DropReason.INVALID_SOURCE),  # a pod address cannot come from eth0
    (_syn(dst=NODE2), DropReason.NO_ROUTE),  # not this node's address
    (Ether(src=OUT_MAC, dst=ETH0_MAC) / IP(src=OUT_IP, dst=NODE1, ttl=1) /
     TCP(dport=30080), DropReason.TTL_EXCEEDED),
])
def test_frames_that_are_not_ours_are_dropped(frame, reason):
    [d] = datapath(_state(), "node-1").process_nodeport(bytes(frame), 1.0)
    assert isinstance(d, Drop) and d.reason is reason


def test_pods_reach_a_node_port_on_any_node_address():
    st = _state()
    dp = datapath(st, "node-1")
    web = client = st.pods[("blog", "web-0")]  # the backend itself, through node-2's address
    f = Ether(src=client.mac, dst=st.node("node-1").gateway_mac) / \
        IP(src=client.ip, dst=NODE2) / TCP(sport=41000, dport=30080, flags="S")
    [s] = dp.process(bytes(f), client.host_ifname, 1.0)
    assert Ether(s.frame)[IP].dst == web.ip and Ether(s.frame)[TCP].dport == 8080


# ---- the eth0 socket's filter -----------------------------------------------------------------

@pytest.mark.parametrize("pkt, want", [
    (_syn(dport=30000), True),
    (_syn(dport=32767), True),
    (_syn(dport=29999), False),
    (_syn(dport=32768), False),
    (_syn(dst=NODE2), False),
    (Ether() / IP(dst=NODE1) / UDP(dport=31000), True),
    (Ether() / IP(dst=NODE1) / UDP(dport=8472), False),  # VXLAN stays the kernel's
    (Ether() / IP(dst=NODE1) / ICMP(), False),
    (Ether() / IP(dst=NODE1, frag=10) / UDP(dport=31000), True),  # fragments: the agent's,
    (Ether() / IP(dst=NODE1, frag=10, proto=17) / (b"\0\1\0\2" * 4), True),  # any port
    (Ether() / IP(dst=NODE1, flags="MF") / UDP(dport=8472), True),  # (host.underlay's doc)
    (Ether() / IP(dst=NODE1, flags="MF") / ICMP(), False),  # a fragmented ping: the kernel's
    (Ether() / IP(dst=NODE2, flags="MF") / UDP(dport=31000), False),
    (Ether() / IP(dst=NODE1, flags="DF") / UDP(dport=8472), False),  # DF is no fragment
    (Ether() / IP(dst=NODE1, ihl=6, options=b"\x01\x01\x01\x00") / TCP(dport=30080), True),
    (Ether(type=0x86DD) / (b"\x00" * 60), False),
])
def test_bpf_filter_takes_only_node_ports_for_this_node(pkt, want):
    assert bpf_matches(bpf_program(NODE1), bytes(pkt)) is want


def test_port_blocks_cover_the_range_exactly():
    blocks = port_blocks(30000, 32767)
    covered = {p for p in range(1 << 16) for v, m in blocks if p & m == v}
    assert covered == set(range(30000, 32768))
    assert outside_ip("192.168.1.0/24") == "192.168.1.254"


# ---- session affinity -------------------------------------------------------------------------

B1, B2, B3 = (b"\x0a\x2a\x01\x02", 8080), (b"\x0a\x2a\x02\x02", 8080), (b"\x0a\x2a\x02\x03", 8080)
C1, C2 = b"\xc0\xa8\x01\xfe", b"\x0a\x2a\x01\x09"


def test_affinity_keeps_a_client_within_the_timeout_and_refreshes():
    aff, rng = Affinity(), random.Random(1)
    t = ServiceTarget("blog/web:80/TCP", (B1, B2, B3), affinity=60)
    first = aff.pick(t, C1, 0.0, rng)
    assert all(aff.pick(t, C1, float(s), rng) == first for s in range(0, 300, 30))  # refreshed
    assert aff.pick(t, C1, 320.0, rng) == first  # 50 s after the last pick (270): still there
    assert aff.expire(379.0) == 0 and aff.expire(381.0) == 1 and len(aff) == 0


def test_affinity_expires_and_forgets_a_backend_that_left():
    aff = Affinity()
    t = ServiceTarget("s", (B1, B2), affinity=10)

    class Seq(random.Random):
        def __init__(self, picks):
            super().__init__(0)
            self.picks = iter(picks)

        def randrange(self, n, *a):  # noqa: D401 - the injected choice
            return next(self.picks)

    rng = Seq([0, 1, 0])
    assert aff.pick(t, C1, 0.0, rng) == B1
    assert aff.pick(t, C1, 10.5, rng) == B2  # past the timeout: balanced afresh
    gone = ServiceTarget("s", (B1,), affinity=10)
    assert aff.pick(gone, C1, 11.0, rng) == B1  # B2 is no endpoint now: forgotten


def test_affinity_spreads_different_clients_and_none_spreads_one():
    aff, rng = Affinity(), random.Random(3)
    sticky = ServiceTarget("s", (B1, B2, B3), affinity=10800)
    clients = [bytes([10, 42, 1, i]) for i in range(60)]
    chosen = {c: aff.pick(sticky, c, 0.0, rng) for c in clients}
    assert set(chosen.values()) == {B1, B2, B3}
    assert all(aff.pick(sticky, c, 5.0, rng) == b for c, b in chosen.items())
    plain = ServiceTarget("p", (B1, B2, B3))
    assert {aff.pick(plain, C2, 0.0, rng) for _ in range(60)} == {B1, B2, B3}
    assert len(aff) == 60  # no affinity: nothing remembered


def test_affinity_in_the_pipeline_for_node_ports():
    st = _state(web_nodes=("node-1", "node-1", "node-2"), affinity="ClientIP")
    dp = datapath(st, "node-1", seed=5)

    def backends(client: str) -> set[str]:
        got = set()
        for sport in range(40000, 40020):
            [a] = dp.process_nodeport(bytes(_syn(sport=sport, src=client)), 1.0)
            got.add(Ether(a.payload[8:])[IP].dst if isinstance(a, Encap)
                    else Ether(a.frame)[IP].dst)
        return got

    assert len(backends(OUT_IP)) == 1
    firsts = set()
    for i in range(1, 40):  # other clients: each sticks, together they spread
        one = backends(f"192.168.1.{i}")
        assert len(one) == 1
        firsts |= one
    assert len(firsts) == 3
