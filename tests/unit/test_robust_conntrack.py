"""Conntrack survives an agent restart (snapshot records) and stays bounded under a SYN flood."""

from __future__ import annotations

import json

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from emunet.datapath.conntrack import TCP_SYN_SENT, Conntrack
from tests.unit.pipeline_pair import (
    GW_MAC,
    VIP,
    PipelinePair,
    datapath,
    make_state,
    open_connection,
    pod,
    tcp_reply,
    tcp_syn,
)


def _restart(pair: PipelinePair, node: str, records: list | None) -> None:
    """A new agent for `node`: a fresh datapath, loaded from a snapshot if given."""
    pair.dps[node] = datapath(pair.st, node, seed=99)
    if records is not None:
        assert pair.dps[node].ct.from_records(json.loads(json.dumps(records)), pair.now) > 0


def test_snapshot_keeps_reverse_nat_across_a_restart():
    pair = PipelinePair(make_state())
    c, w = open_connection(pair)
    records = pair.dps["node-1"].ct.to_records(pair.now)
    pair.now += 1
    _restart(pair, "node-1", records)
    # the server speaks first after the restart: only a restored entry un-NATs it
    [back] = pair.send("node-2", tcp_reply(w, c, 40000, "A"), w.host_ifname)
    ip = IP(back.frame[14:])
    assert (ip.src, ip[TCP].sport) == (VIP, 80)
    assert IP(bytes(ip)).chksum == ip.chksum  # checksums still right after the rewrite
    [fwd] = pair.send("node-1", tcp_syn(c, 40000, flags="A"), c.host_ifname)
    assert IP(fwd.frame[14:]).dst == w.ip


def test_without_a_snapshot_the_reply_leaks_the_backend_address():
    """The control experiment: what the snapshot prevents."""
    pair = PipelinePair(make_state())
    c, w = open_connection(pair)
    _restart(pair, "node-1", None)
    [back] = pair.send("node-2", tcp_reply(w, c, 40000, "A"), w.host_ifname)
    assert IP(back.frame[14:]).src == w.ip  # the client's TCP would answer with a RST


def test_records_keep_state_and_time_left():
    pair = PipelinePair(make_state())
    open_connection(pair)
    ct = pair.dps["node-1"].ct
    (conn,) = ct.conns()
    assert conn.replied and conn.service and conn.backend
    fresh = Conntrack()
    assert fresh.from_records(ct.to_records(pair.now), pair.now + 5) == 1
    (copy,) = fresh.conns()
    assert (copy.orig, copy.reply_key, copy.service, copy.backend, copy.replied) == \
        (conn.orig, conn.reply_key, conn.service, conn.backend, True)
    assert copy.expires - (pair.now + 5) == round(conn.expires - pair.now, 3)
    assert fresh.from_records([["junk"], [6, "zz", "", 0, 0, 1, "", None, None]], 0) == 0


def test_syn_flood_is_bounded_and_spares_established_flows():
    st = make_state()
    dp = datapath(st, "node-1")
    dp.ct.max_entries = 100
    c, o = pod(st, "client"), pod(st, "other")
    # one established local flow client -> other
    dp.process(tcp_syn(c, 1, dst=o.ip, dport=7), c.host_ifname, 0)
    reply = Ether(src=o.mac, dst=GW_MAC) / IP(src=o.ip, dst=c.ip) / TCP(sport=7, dport=1,
                                                                      flags="SA")
    dp.process(bytes(reply), o.host_ifname, 0)
    dp.process(tcp_syn(c, 1, dst=o.ip, dport=7, flags="A"), c.host_ifname, 0)
    syn = bytearray(tcp_syn(c, 0))
    for port in range(2, 20002):  # 20k half-open connections to the ClusterIP
        syn[34:36] = port.to_bytes(2, "big")  # the TCP source port (checksums are not checked)
        dp.process(bytes(syn), c.host_ifname, 1)
    assert len(dp.ct) == 100
    assert dp.ct.evicted == 20000 - 99
    est = [x for x in dp.ct.conns() if x.assured]
    assert len(est) == 1 and est[0].expires > TCP_SYN_SENT  # established: 5 days


def test_full_of_established_flows_refuses_new_ones():
    ct = Conntrack(max_entries=2)
    pair = PipelinePair(make_state())
    pair.dps["node-1"].ct = ct
    open_connection(pair)
    c = pod(pair.st, "client")
    w = pod(pair.st, "web-0")
    pair.send("node-1", tcp_syn(c, 40001), c.host_ifname)
    pair.send("node-2", tcp_reply(w, c, 40001), w.host_ifname)
    pair.send("node-1", tcp_syn(c, 40001, flags="A"), c.host_ifname)
    assert len(ct) == 2 and all(x.assured for x in ct.conns())
    pair.send("node-1", tcp_syn(c, 40002), c.host_ifname)
    assert ct.insert_failed == 1 and len(ct) == 2
    assert pair.drops  # the new flow's SYN was dropped, with a reason


def test_flood_after_many_established_flows_still_recycles_itself():
    """More established flows than one early-drop scan looks at: the clock sweep moves them
    to the back, so the flood's half-open entries are still found and evicted."""
    st = make_state()
    dp = datapath(st, "node-1")
    dp.ct.max_entries = 400
    c, o = pod(st, "client"), pod(st, "other")
    for port in range(1, 301):  # 300 established client -> other flows
        dp.process(tcp_syn(c, port, dst=o.ip, dport=7), c.host_ifname, 0)
        back = Ether(src=o.mac, dst=GW_MAC) / IP(src=o.ip, dst=c.ip) / TCP(
            sport=7, dport=port, flags="SA")
        dp.process(bytes(back), o.host_ifname, 0)
        dp.process(tcp_syn(c, port, dst=o.ip, dport=7, flags="A"), c.host_ifname, 0)
    syn = bytearray(tcp_syn(c, 0))
    for port in range(1000, 6000):
        syn[34:36] = port.to_bytes(2, "big")
        dp.process(bytes(syn), c.host_ifname, 1)
    assert len(dp.ct) == 400 and dp.ct.insert_failed == 0
    assert sum(x.assured for x in dp.ct.conns()) == 300
