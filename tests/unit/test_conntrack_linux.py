"""Conntrack follows Linux's nf_conntrack (issue 15 §2): TCP states and their timeouts,
"assured" only after the handshake, early drop of unassured entries, no unassured entry in the
snapshot, entries confirmed only when their packet leaves, NAT port remapping on a tuple clash.
Scapy frames in, actions out."""

from __future__ import annotations

import json

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from emunet.agent.ctstore import CtStore
from emunet.datapath import Drop, DropReason, Encap, Send
from emunet.datapath import cttcp as S
from emunet.datapath.conntrack import Conntrack
from tests.unit.pipeline_pair import PipelinePair, datapath, make_state, pod

GW_MAC = "0a:58:0a:2a:01:01"
GW2_MAC = "0a:58:0a:2a:02:01"
VIP = "10.43.0.11"


def seg(src, dst_ip: str, sport: int, dport: int, flags: str, gw: str = GW_MAC) -> bytes:
    return bytes(Ether(src=src.mac, dst=gw) / IP(src=src.ip, dst=dst_ip)
                 / TCP(sport=sport, dport=dport, flags=flags))


@pytest.fixture
def local():
    """node-1 alone: client (10.42.1.3) talks to other (10.42.1.4), both local."""
    st = make_state()
    return datapath(st, "node-1"), pod(st, "client"), pod(st, "other")


def _conn(dp):
    (conn,) = dp.ct.conns()
    return conn


def test_tcp_states_and_timeouts_follow_nf_conntrack(local):
    dp, c, o = local

    def fwd(flags, t):
        return dp.process(seg(c, o.ip, 1000, 7, flags), c.host_ifname, t)

    def back(flags, t):
        return dp.process(seg(o, c.ip, 7, 1000, flags), o.host_ifname, t)

    fwd("S", 0.0)
    conn = _conn(dp)
    assert (conn.state, conn.expires, conn.assured) == (S.SYN_SENT, 120, False)
    back("SA", 1.0)  # the SYN-ACK alone: SYN_RECV, 60 s, never a 5-day entry
    assert (conn.state, conn.expires, conn.assured) == (S.SYN_RECV, 61, False)
    fwd("A", 2.0)  # the ACK of the SYN-ACK completes the handshake
    assert (conn.state, conn.expires, conn.assured) == (S.ESTABLISHED, 2 + 432000, True)
    fwd("PA", 3.0)
    assert conn.expires == 3 + 432000
    fwd("FA", 4.0)
    assert (conn.state, conn.expires - 4.0) == (S.FIN_WAIT, 120)
    back("A", 5.0)
    assert (conn.state, conn.expires - 5.0) == (S.CLOSE_WAIT, 60)
    back("FA", 6.0)
    assert (conn.state, conn.expires - 6.0) == (S.LAST_ACK, 30)
    fwd("A", 7.0)
    assert (conn.state, conn.expires - 7.0) == (S.TIME_WAIT, 120)


def test_a_rst_closes_an_established_connection_in_10_s(local):
    dp, c, o = local
    dp.process(seg(c, o.ip, 1000, 7, "S"), c.host_ifname, 0.0)
    dp.process(seg(o, c.ip, 7, 1000, "SA"), o.host_ifname, 0.0)
    dp.process(seg(c, o.ip, 1000, 7, "A"), c.host_ifname, 0.0)
    [s] = dp.process(seg(o, c.ip, 7, 1000, "R"), o.host_ifname, 1.0)
    assert isinstance(s, Send)
    conn = _conn(dp)
    assert (conn.state, conn.expires, conn.closing) == (S.CLOSE, 11.0, True)
    assert dp.expire(11.0) == 1


def test_a_refused_connect_leaves_no_entry(local):
    dp, c, o = local
    dp.process(seg(c, o.ip, 1000, 7, "S"), c.host_ifname, 0.0)
    [s] = dp.process(seg(o, c.ip, 7, 1000, "RA"), o.host_ifname, 0.0)
    assert isinstance(s, Send) and len(dp.ct) == 0  # delivered, and forgotten


def test_early_drop_evicts_half_open_entries_the_syn_ack_answered(local):
    """A flood whose SYN-ACKs are answered by nothing (the attacker drops its own RSTs) fills
    the table with SYN_RECV entries: unassured, so a legitimate connection still gets in."""
    dp, c, o = local
    dp.ct.max_entries = 50
    dp.process(seg(c, o.ip, 1, 7, "S"), c.host_ifname, 0.0)
    dp.process(seg(o, c.ip, 7, 1, "SA"), o.host_ifname, 0.0)
    dp.process(seg(c, o.ip, 1, 7, "A"), c.host_ifname, 0.0)
    for port in range(2, 200):
        dp.process(seg(c, o.ip, port, 7, "S"), c.host_ifname, 1.0)
        dp.process(seg(o, c.ip, 7, port, "SA"), o.host_ifname, 1.0)
    assert len(dp.ct) == 50 and dp.ct.insert_failed == 0
    dp.process(seg(c, o.ip, 5000, 7, "S"), c.host_ifname, 2.0)
    keys = {x.orig[2] for x in dp.ct.conns()}
    assert (5000).to_bytes(2, "big") in keys and (1).to_bytes(2, "big") in keys
    assert dp.ct.insert_failed == 0
    assured = [x for x in dp.ct.conns() if x.assured]
    assert len(assured) == 1 and assured[0].orig[2] == (1).to_bytes(2, "big")


def test_the_snapshot_never_keeps_unassured_entries(local, tmp_path):
    dp, c, o = local
    store = CtStore.attach(dp.ct, tmp_path, "node-1", None, 0.0, {})
    dp.process(seg(c, o.ip, 1, 7, "S"), c.host_ifname, 0.0)
    dp.process(seg(o, c.ip, 7, 1, "SA"), o.host_ifname, 0.0)
    dp.process(seg(c, o.ip, 1, 7, "A"), c.host_ifname, 0.0)
    for port in range(2, 102):  # a SYN flood: half-open, some answered
        dp.process(seg(c, o.ip, port, 7, "S"), c.host_ifname, 1.0)
        if port % 2:
            dp.process(seg(o, c.ip, 7, port, "SA"), o.host_ifname, 1.0)
    store.save(1.0)
    assert len(json.loads(store.path.read_text())["conns"]) == 1
    fresh = Conntrack()
    assert CtStore.attach(fresh, tmp_path, "node-1", None, 2.0, {}).restored == 1
    (conn,) = fresh.conns()
    assert conn.assured and conn.state == S.ESTABLISHED and conn.steady


def test_packets_dropped_after_conntrack_leave_no_entry():
    """Linux confirms a connection at the last hook: 300 packets without a route (a local
    address nobody holds, an address outside the cluster, a remote node's empty address)."""
    st = make_state()
    pair = PipelinePair(st)
    c = pod(st, "client")
    for port in range(100):
        for dst in ("10.42.1.99", "10.99.0.1", "10.42.2.99"):
            pair.send("node-1", seg(c, dst, 20000 + port, 80, "S"), c.host_ifname)
    reasons = {d.reason for d in pair.drops if isinstance(d, Drop)}
    assert reasons == {DropReason.NO_ROUTE} and len(pair.drops) == 300
    # node-1 sent the 10.42.2.99 ones on (they left: tracked there); node-2 had no route
    assert len(pair.dps["node-1"].ct) == 100 and len(pair.dps["node-2"].ct) == 0
    assert all(x.orig[1] == bytes([10, 42, 2, 99]) for x in pair.dps["node-1"].ct.conns())


def _delivered(sends, port):
    [s] = [x for x in sends if x.port == port]
    return Ether(s.frame)


@pytest.mark.parametrize("direct_first", [True, False])
def test_a_nat_tuple_clash_remaps_the_source_port(direct_first):
    """The same client port to the same backend directly and through the ClusterIP: Linux's
    NAT picks another source port for the second (nf_nat_used_tuple); the replies of each
    reach the client with its own port and the address it spoke to."""
    st = make_state()
    pair = PipelinePair(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    order = [(w.ip, 8080), (VIP, 80)]
    if not direct_first:
        order.reverse()
    wire = {}
    for dst, dport in order:
        sends = pair.send("node-1", seg(c, dst, 40000, dport, "S"), c.host_ifname)
        got = _delivered(sends, w.host_ifname)
        assert got[IP].dst == w.ip and got[TCP].dport == 8080
        wire[dst] = got[TCP].sport
    assert not [d for d in pair.drops if isinstance(d, Drop)]
    second = order[1][0]
    assert wire[order[0][0]] == 40000 and wire[second] != 40000  # the second one remapped
    assert pair.dps["node-1"].counters["nat_port_remapped"] == 1
    for dst, dport in order:  # each SYN-ACK back to the client, un-NAT'ed
        sends = pair.send("node-2", seg(w, c.ip, 8080, wire[dst], "SA", GW2_MAC),
                          w.host_ifname)
        got = _delivered(sends, c.host_ifname)
        assert (got[IP].src, got[TCP].sport, got[TCP].dport) == (dst, dport, 40000)
        assert IP(bytes(got[IP])).chksum == got[IP].chksum


def test_a_remapped_connection_keeps_its_port_for_the_rest_of_the_flow():
    st = make_state()
    pair = PipelinePair(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    pair.send("node-1", seg(c, w.ip, 40000, 8080, "S"), c.host_ifname)
    first = _delivered(pair.send("node-1", seg(c, VIP, 40000, 80, "S"), c.host_ifname),
                       w.host_ifname)
    again = _delivered(pair.send("node-1", seg(c, VIP, 40000, 80, "A"), c.host_ifname),
                       w.host_ifname)
    assert again[TCP].sport == first[TCP].sport != 40000
    assert isinstance(pair.dps["node-1"].process(seg(c, VIP, 40000, 80, "A"), c.host_ifname,
                                                 pair.now)[0], Encap)
