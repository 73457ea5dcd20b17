"""The event hook and records: which packets are kept, and what their records say."""

from __future__ import annotations

import random

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from emunet.datapath import Encap, NodeTables
from emunet.datapath.conntrack import TCP_SYN_SENT
from emunet.observe import hook
from emunet.observe.hook import TRACE_TOS, ObservedDatapath
from emunet.observe.record import describe
from emunet.state.cluster import ClusterState
from tests.unit.observed_pair import EMPTY_VIP, GW2_MAC, GW_MAC, WEB_VIP, ObservedPair, syn
from tests.unit.pipeline_pair import make_state, pod


def test_first_packet_of_a_flow_is_kept_established_ones_are_not():
    st = make_state()
    pp = ObservedPair(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    [delivered] = pp.send("node-1", syn(c, WEB_VIP, 80), c.host_ifname)
    r1 = pp.records("node-1")
    assert len(r1) == 1
    r = r1[0]
    assert r["ct"] == "new" and r["verdict"] == "FORWARDED" and r["to"] == "overlay"
    assert r["service"] == "blog/web:80/TCP" and r["backend"] == f"{w.ip}:8080"
    assert r["pkt"]["dst"] == WEB_VIP and r["pkt_out"]["dst"] == w.ip
    assert r["pkt_out"]["dport"] == 8080 and r["pkt"]["flags"] == ["SYN"]
    assert r["out_outer"] == {"src": "192.168.1.11", "dst": "192.168.1.12", "dport": 8472,
                              "vni": 1}
    assert r["in_pod"] == "blog/client" and r["time"] == 1100.0
    [r2] = pp.records("node-2")
    assert r2["from"] == "overlay" and r2["outer"]["src"] == "192.168.1.11"
    assert r2["ct"] == "new" and r2["to"] == "endpoint" and r2["out_pod"] == "blog/web-0"
    assert r2["pkt_out"]["ttl"] == 62
    # the reply and later packets of the flow ride conntrack: nothing kept
    reply = bytes(Ether(src=w.mac, dst=GW2_MAC) / IP(src=w.ip, dst=c.ip) /
                  TCP(sport=8080, dport=40000, flags="SA"))
    [back] = pp.send("node-2", reply, w.host_ifname)
    assert IP(back.frame[14:]).src == WEB_VIP  # reverse NAT on the client's node
    pp.send("node-1", syn(c, WEB_VIP, 80, flags="A"), c.host_ifname)
    assert pp.records("node-1") == [] and pp.records("node-2") == []
    assert pp.dps["node-1"].rx_bytes > 0 and pp.dps["node-1"].tx_bytes > 0


def test_drops_are_always_kept_with_reason_and_the_answer_to_the_sender():
    st = make_state()
    pp = ObservedPair(st)
    c = pod(st, "client")
    pp.send("node-1", syn(c, EMPTY_VIP, 80), c.host_ifname)
    [r] = pp.records("node-1")
    assert r["verdict"] == "DROPPED" and r["drop"]["reason"] == "NO_ENDPOINTS"
    assert "blog/empty" in r["drop"]["detail"]
    assert r["reply_to_sender"]["pkt"]["flags"] == ["RST", "ACK"]
    spoof = bytes(Ether(src=c.mac, dst=GW_MAC) / IP(src="10.42.1.99", dst="10.42.1.4") /
                  ICMP())
    for _ in range(3):
        pp.send("node-1", spoof, c.host_ifname)
    recs = pp.records("node-1")
    assert [x["drop"]["reason"] for x in recs] == ["INVALID_SOURCE"] * 3


def test_a_marked_flow_is_traced_both_ways_on_both_nodes():
    st = make_state()
    pp = ObservedPair(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    pp.send("node-1", syn(c, WEB_VIP, 80, tos=TRACE_TOS), c.host_ifname)
    assert pp.records("node-1")[0]["traced"]
    assert pp.records("node-2")[0]["traced"]
    reply = bytes(Ether(src=w.mac, dst=GW2_MAC) / IP(src=w.ip, dst=c.ip) /
                  TCP(sport=8080, dport=40000, flags="SA"))
    pp.send("node-2", reply, w.host_ifname)
    [r2] = pp.records("node-2")
    [r1] = pp.records("node-1")
    assert r2["ct"] == "reply" and r2["traced"] and r2["to"] == "overlay"
    assert r1["ct"] == "reply" and r1["traced"] and r1["from"] == "overlay"
    assert r1["pkt"]["src"] == w.ip and r1["pkt_out"]["src"] == WEB_VIP  # reverse NAT
    assert r1["pkt_out"]["sport"] == 80
    # an unmarked flow stays untraced
    pp.send("node-1", syn(c, WEB_VIP, 80, sport=40001), c.host_ifname)
    assert not pp.records("node-1")[0]["traced"]
    # the traced keys go with their connection
    pp.dps["node-1"].expire(1e9)
    assert pp.dps["node-1"].traced == {}


def test_event_buffer_is_bounded():
    st = make_state()
    c = pod(st, "client")
    dp = ObservedDatapath(NodeTables.from_state(st, "node-1"), random.Random(1), max_events=4)
    bad = bytes(Ether(src=c.mac, dst=GW_MAC) / IP(src="10.9.9.9", dst=c.ip) / UDP())
    for _ in range(10):
        dp.process(bad, c.host_ifname, 0)
    assert len(dp.drain()) == 4 and dp.lost_events == 6


def test_untraced_events_have_a_per_second_budget_traced_ones_do_not(monkeypatch):
    monkeypatch.setattr(hook, "EVENTS_PER_S", 5)
    st = make_state()
    c = pod(st, "client")
    dp = ObservedDatapath(NodeTables.from_state(st, "node-1"), random.Random(1))
    bad = bytes(Ether(src=c.mac, dst=GW_MAC) / IP(src="10.9.9.9", dst=c.ip) / UDP())
    for _ in range(8):
        dp.process(bad, c.host_ifname, 10.0)
    for i in range(3):
        dp.process(syn(c, WEB_VIP, 80, sport=41000 + i, tos=TRACE_TOS), c.host_ifname, 10.5)
    assert len(dp.drain()) == 5 + 3 and dp.suppressed_events == 3
    dp.process(bad, c.host_ifname, 11.0)  # a new second, a new budget
    assert len(dp.drain()) == 1
    assert dp.counters["flow_events_suppressed"] == 3


# ---- a new connection is kept even when the same packet removed an entry --------------------
# The hook once took "the table grew" for "a flow opened"; each case below removes one
# connection and adds one in a single packet, so the table keeps its size.

def _node1() -> tuple[ObservedDatapath, ClusterState]:
    st = make_state()
    return ObservedDatapath(NodeTables.from_state(st, "node-1"), random.Random(1)), st


def _records(dp: ObservedDatapath, st: ClusterState) -> list[dict]:
    names = {p.port: p.name for p in dp.tables.pods_by_port.values()}
    return [describe(ev, "node-1", st.node("node-1").underlay_ip, dp.ct.table, dp.traced, 0.0,
                     names) for ev in dp.drain()]


def _assert_one_new_flow(dp: ObservedDatapath, st: ClusterState, sport: int) -> None:
    [r] = _records(dp, st)
    assert r["ct"] == "new" and r["verdict"] == "FORWARDED" and r["to"] == "overlay"
    assert r["pkt"]["flags"] == ["SYN"] and r["pkt"]["sport"] == sport
    assert r["service"] == "blog/web:80/TCP"


def test_a_syn_reusing_a_closing_connections_tuple_is_a_new_flow():
    st = make_state()
    pp = ObservedPair(st)
    dp = pp.dps["node-1"]
    c, w = pod(st, "client"), pod(st, "web-0")
    pp.send("node-1", syn(c, WEB_VIP, 80), c.host_ifname)
    pp.send("node-2", bytes(Ether(src=w.mac, dst=GW2_MAC) / IP(src=w.ip, dst=c.ip) /
                            TCP(sport=8080, dport=40000, flags="SA")), w.host_ifname)
    pp.send("node-1", syn(c, WEB_VIP, 80, flags="A"), c.host_ifname)
    # the client resets the established connection: CLOSE, the entry lingers 10 s
    pp.send("node-1", syn(c, WEB_VIP, 80, flags="R"), c.host_ifname)
    dp.drain()
    n = len(dp.ct)
    [enc] = dp.process(syn(c, WEB_VIP, 80), c.host_ifname, 3.0)  # the client reuses its port
    assert isinstance(enc, Encap) and len(dp.ct) == n  # old entry replaced, not added to
    _assert_one_new_flow(dp, st, 40000)


def test_a_new_connection_on_an_expired_entrys_tuple_is_a_new_flow():
    dp, st = _node1()
    c = pod(st, "client")
    dp.process(syn(c, WEB_VIP, 80), c.host_ifname, 1.0)
    dp.drain()
    later = 1.0 + TCP_SYN_SENT + 1  # expired, but no expire() sweep has run yet
    [enc] = dp.process(syn(c, WEB_VIP, 80), c.host_ifname, later)
    assert isinstance(enc, Encap) and len(dp.ct) == 1
    _assert_one_new_flow(dp, st, 40000)


def test_a_new_connection_that_evicts_another_from_a_full_table_is_a_new_flow():
    dp, st = _node1()
    dp.ct.max_entries = 2
    c = pod(st, "client")
    for sport in (40000, 40001):  # two unreplied connections: early_drop victims
        dp.process(syn(c, WEB_VIP, 80, sport=sport), c.host_ifname, 1.0)
    dp.drain()
    [enc] = dp.process(syn(c, WEB_VIP, 80, sport=40002), c.host_ifname, 2.0)
    assert isinstance(enc, Encap) and len(dp.ct) == 2 and dp.ct.evicted == 1
    _assert_one_new_flow(dp, st, 40002)
