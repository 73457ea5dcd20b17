"""What the receiving node's own stack answers over VXLAN, as Linux behind flannel.1 does: ICMP
time exceeded from its gateway when a packet's TTL runs out there (traceroute's second hop),
and echo replies from its gateway (cni0's address) to another node's pods. Two datapaths back
to back (tests/unit/pipeline_pair.py), so the answer's way home is tested too."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP, UDPerror
from scapy.layers.l2 import Ether

from emunet.datapath import Encap
from emunet.datapath.reasons import DropReason
from tests.unit.pipeline_pair import GW_MAC, VIP, PipelinePair, make_state, pod

GW1, GW2 = "10.42.1.1", "10.42.2.1"


def _pair():
    st = make_state()
    return PipelinePair(st), pod(st, "client"), pod(st, "web-0")


def _from_client(c, dst: str, ttl: int, l4) -> bytes:
    return bytes(Ether(src=c.mac, dst=GW_MAC) / IP(src=c.ip, dst=dst, ttl=ttl, id=7) / l4)


def test_ttl_running_out_at_the_receiving_node_is_time_exceeded_from_its_gateway():
    pair, c, w = _pair()
    # traceroute's probes: TTL 1 ends at node-1 (the source side), TTL 2 at node-2
    hops = []
    for ttl in (1, 2, 3):
        got = pair.send("node-1", _from_client(c, w.ip, ttl, UDP(sport=40001, dport=33434 + ttl)),
                        c.host_ifname)
        [s] = got
        hops.append((s.port, IP(s.frame[14:])))
    (p1, h1), (p2, h2), (p3, h3) = hops
    assert p1 == p2 == c.host_ifname and p3 == w.host_ifname
    assert (h1.src, h1.dst, h1[ICMP].type, h1[ICMP].code) == (GW1, c.ip, 11, 0)
    assert (h2.src, h2.dst, h2[ICMP].type, h2[ICMP].code) == (GW2, c.ip, 11, 0)
    assert h2[ICMP].chksum == ICMP(bytes(h2[ICMP])).chksum  # a valid message, quoting
    quoted = h2[ICMP].payload  # the probe as node-2 received it (RFC 792: header + 8 bytes)
    assert (quoted.src, quoted.dst, quoted[UDPerror].dport) == (c.ip, w.ip, 33436)
    assert h3.dst == w.ip and h3.ttl == 1  # TTL 3: delivered with what is left
    assert [d.reason for d in pair.drops] == [DropReason.TTL_EXCEEDED] * 2


def test_time_exceeded_about_a_service_probe_quotes_the_cluster_ip_back_home():
    """The probe was DNATed on node-1; node-2's error quotes the backend, and node-1's
    ICMP error NAT gives the client the ClusterIP it sent to, in the quote and, as Linux's
    nf_nat_icmp_reply_translation does, as the outer source (hops past a DNAT show its
    original destination)."""
    pair, c, _w = _pair()
    [s] = pair.send("node-1", _from_client(c, VIP, 2, UDP(sport=40002, dport=53)),
                    c.host_ifname)
    h = IP(s.frame[14:])
    assert (h.src, h[ICMP].type) == (VIP, 11)
    assert [d.reason for d in pair.drops] == [DropReason.TTL_EXCEEDED]
    assert "time exceeded sent" in pair.drops[0].detail
    assert (h[ICMP].payload.dst, h[ICMP].payload[UDPerror].dport) == (VIP, 53)


def test_no_time_exceeded_about_an_icmp_error():
    pair, c, w = _pair()
    err = ICMP(type=3, code=3) / IP(src=w.ip, dst=c.ip) / UDP(sport=1, dport=2)
    assert pair.send("node-1", _from_client(c, w.ip, 2, err), c.host_ifname) == []
    assert pair.drops[-1].reason == DropReason.TTL_EXCEEDED
    assert "no ICMP" in pair.drops[-1].detail


def test_a_pod_pings_the_other_nodes_gateway():
    pair, c, _w = _pair()
    for ttl in (64, 2):  # TTL 2 arrives with 1: a local delivery there, no TTL check
        [s] = pair.send("node-1", _from_client(c, GW2, ttl, ICMP(id=9, seq=ttl) / b"ping"),
                        c.host_ifname)
        r = IP(s.frame[14:])
        assert s.port == c.host_ifname
        assert (r.src, r.dst, r[ICMP].type, r[ICMP].id, r[ICMP].seq) == (GW2, c.ip, 0, 9, ttl)
        assert bytes(r[ICMP].payload) == b"ping"
    assert pair.dps["node-2"].counters["echo_replies"] == 2


def test_the_remote_gateway_has_no_listeners_rst_and_port_unreachable():
    """Another node's gateway is that node's own address: a port nobody listens on answers as
    Linux's stack does, TCP with a RST (RFC 9293 §3.10.7.1), UDP with port unreachable
    (RFC 1122 §4.1.3.1), back through the tunnel; a RST gets nothing."""
    pair, c, _w = _pair()
    [s] = pair.send("node-1", _from_client(c, GW2, 64, UDP(sport=5, dport=53) / b"q"),
                    c.host_ifname)
    r = IP(s.frame[14:])
    assert s.port == c.host_ifname
    assert (r.src, r.dst, r[ICMP].type, r[ICMP].code) == (GW2, c.ip, 3, 3)
    assert r[ICMP].payload[UDPerror].dport == 53
    [s] = pair.send("node-1", _from_client(c, GW2, 64, TCP(sport=4000, dport=10250, flags="S",
                                                           seq=77)), c.host_ifname)
    r = IP(s.frame[14:])
    assert (r.src, r.dst, r[TCP].sport, r[TCP].dport) == (GW2, c.ip, 10250, 4000)
    assert (r[TCP].flags, r[TCP].ack) == ("RA", 78)
    assert pair.send("node-1", _from_client(c, GW2, 64, TCP(sport=4000, dport=10250,
                                                            flags="R")), c.host_ifname) == []
    assert pair.drops[-1].reason == DropReason.NO_ROUTE


def test_the_local_gateway_has_no_listeners_rst_and_port_unreachable():
    pair, c, _w = _pair()
    [s] = pair.send("node-1", _from_client(c, GW1, 64, TCP(sport=4001, dport=22, flags="S",
                                                           seq=9)), c.host_ifname)
    r = IP(s.frame[14:])
    assert (r.src, r.dst, r[TCP].flags, r[TCP].ack) == (GW1, c.ip, "RA", 10)
    [s] = pair.send("node-1", _from_client(c, GW1, 64, UDP(sport=6, dport=123) / b"t"),
                    c.host_ifname)
    r = IP(s.frame[14:])
    assert (r.src, r[ICMP].type, r[ICMP].code) == (GW1, 3, 3)
    assert pair.drops[-1].reason == DropReason.NO_ROUTE
    assert "no listener on the gateway" in pair.drops[-1].detail


def test_the_local_gateway_answers_a_ping_with_ttl_1():
    """A local delivery on Linux (no TTL check for the host's own address)."""
    pair, c, _w = _pair()
    [s] = pair.send("node-1", _from_client(c, GW1, 1, ICMP(id=3, seq=1)), c.host_ifname)
    r = IP(s.frame[14:])
    assert (r.src, r.dst, r[ICMP].type) == (GW1, c.ip, 0)


def test_the_answer_goes_back_by_the_tunnel_it_came_in():
    pair, c, _w = _pair()
    dp1 = pair.dps["node-1"]
    [enc] = dp1.process(_from_client(c, GW2, 64, ICMP(id=4, seq=1)), c.host_ifname, 100.0)
    n1 = pair.st.node("node-1").underlay_ip
    out = pair.dps["node-2"].process_underlay(enc.payload, n1, 100.0)
    assert [type(a) for a in out] == [Encap] and out[0].dst_ip == n1
