"""Pod churn in the datapath: a client that reuses a source port after its backend was deleted
(found by the e2e curl loop) must be load-balanced afresh, as Linux conntrack does."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from emunet.datapath import NodeTables, Send
from tests.unit.pipeline_pair import datapath, make_state, pod

GW_MAC = "0a:58:0a:2a:01:01"
WEB_VIP = "10.43.0.11"


def tcp(src, flags: str, sport: int = 40000, dport: int = 80, dst: str = WEB_VIP, seq: int = 1,
        ack: int = 0) -> bytes:
    return bytes(Ether(src=src.mac, dst=GW_MAC) / IP(src=src.ip, dst=dst)
                 / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack))


def backend_of(actions) -> str:
    [s] = [a for a in actions if isinstance(a, Send)]
    return Ether(s.frame)[IP].dst


def test_syn_reusing_a_closed_tuple_is_balanced_to_a_live_backend() -> None:
    st = make_state(web_nodes=("node-1", "node-1"))
    dp = datapath(st, "node-1")
    c = pod(st, "client")
    first = backend_of(dp.process(tcp(c, "S"), c.host_ifname, 1.0))
    gone = next(p for p in st.pods.values() if p.ip == first)
    other = next(p for p in st.pods.values() if p.pod.name.startswith("web-") and p is not gone)
    answer = bytes(Ether(src=gone.mac, dst=GW_MAC) / IP(src=gone.ip, dst=c.ip)
                   / TCP(sport=8080, dport=40000, flags="SA", seq=8, ack=2))
    dp.process(answer, gone.host_ifname, 1.01)
    dp.process(tcp(c, "A", seq=2, ack=9), c.host_ifname, 1.02)
    # the backend answers and closes first (HTTP "Connection: close"), the client FINs too
    rep = bytes(Ether(src=gone.mac, dst=GW_MAC) / IP(src=gone.ip, dst=c.ip)
                / TCP(sport=8080, dport=40000, flags="FA", seq=9, ack=2))
    dp.process(rep, gone.host_ifname, 1.1)
    dp.process(tcp(c, "FA", seq=2, ack=10), c.host_ifname, 1.2)
    last = bytes(Ether(src=gone.mac, dst=GW_MAC) / IP(src=gone.ip, dst=c.ip)
                 / TCP(sport=8080, dport=40000, flags="A", seq=10, ack=3))
    dp.process(last, gone.host_ifname, 1.3)  # the last ACK: TIME_WAIT
    # the backend pod is deleted; the client reuses its port for the next connection
    st.remove_pod(gone.key)
    dp.update(NodeTables.from_state(st, "node-1"))
    again = dp.process(tcp(c, "S", seq=1000), c.host_ifname, 2.0)
    assert backend_of(again) == other.ip
    assert not dp.counters.get("drop:FIB_LOOKUP_FAILED")


def test_syn_on_an_open_connection_keeps_its_backend() -> None:
    st = make_state(web_nodes=("node-1", "node-1"))
    dp = datapath(st, "node-1")
    c = pod(st, "client")
    first = backend_of(dp.process(tcp(c, "S"), c.host_ifname, 1.0))
    for t in (1.5, 2.0, 3.0):  # SYN retransmissions stay on the first choice
        assert backend_of(dp.process(tcp(c, "S"), c.host_ifname, t)) == first
