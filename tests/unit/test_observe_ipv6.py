"""Flows of IPv6 packets (dual-stack): the hook keeps them, records decode IPv6 headers and
backends, Hubble flows say IP.ipVersion IPv6; conntrack scrub and snapshots hold IPv6 flows."""

from __future__ import annotations

import random

from scapy.layers.inet import TCP
from scapy.layers.inet6 import ICMPv6EchoRequest

from emunet.datapath import NodeTables
from emunet.datapath.conntrack import Conntrack
from emunet.datapath.ctscrub import pod_owners, stale_ips
from emunet.datapath.ipv6pkt import ip6_bytes
from emunet.observe import hubble
from emunet.observe.hook import ObservedDatapath, flow_key
from emunet.observe.record import describe
from tests.unit.dualstack import VIP6, dual_state, eth6
from tests.unit.pipeline_pair import pod


def _observed(st):
    return ObservedDatapath(NodeTables.from_state(st, "node-1"), random.Random(1))


def test_ipv6_flow_record_and_hubble():
    st = dual_state()
    dp, c, w = _observed(st), pod(st, "client"), pod(st, "web-0")
    syn = bytes(eth6(c) / TCP(sport=40000, dport=80, flags="S"))
    dp.process(syn, c.host_ifname, 1.0)
    [ev] = dp.drain()
    rec = describe(ev, "node-1", st.node("node-1").underlay_ip, dp.ct.table, dp.traced, 0.0)
    assert rec["pkt"]["ipv"] == 6 and rec["pkt"]["src"] == c.ip6 and rec["pkt"]["dst"] == VIP6
    assert rec["ct"] == "new" and rec["backend"] == f"[{w.ip6}]:8080"
    assert rec["service"] == "blog/web:80/TCP" and rec["pkt_out"]["dst"] == w.ip6
    assert rec["pkt_out"]["ttl"] == 63
    [flow] = [f for f in hubble.flows(rec, hubble.Directory(st)) if f.get("IP")]
    assert flow["IP"] == {"source": c.ip6, "destination": w.ip6, "ipVersion": "IPv6"}
    assert flow["source"]["pod_name"] == "client" and flow["destination"]["pod_name"] == "web-0"
    assert flow_key(syn) == bytes((6,)) + ip6_bytes(c.ip6) + ip6_bytes(VIP6) + \
        (40000).to_bytes(2, "big") + (80).to_bytes(2, "big")


def test_ipv6_echo_to_gateway_summary():
    st = dual_state()
    dp, c = _observed(st), pod(st, "client")
    dp.process(bytes(eth6(c, dst="2001:db8::1") / ICMPv6EchoRequest()), c.host_ifname, 1.0)
    [ev] = dp.drain()  # a drop: kept
    rec = describe(ev, "node-1", st.node("node-1").underlay_ip, dp.ct.table, dp.traced, 0.0)
    assert rec["verdict"] == "DROPPED" and rec["pkt"]["icmp"] == [128, 0]
    flows = hubble.flows(rec, hubble.Directory(st))
    assert flows[-1]["l4"] == {"ICMPv6": {"type": 128, "code": 0}}
    assert flows[-1]["Summary"] == "ICMPv6 EchoRequest"


def test_scrub_and_snapshot_of_ipv6_flows():
    st = dual_state(("node-1",))
    dp, c = _observed(st), pod(st, "client")
    dp.process(bytes(eth6(c) / TCP(sport=40000, dport=80, flags="S")), c.host_ifname, 1.0)
    assert len(dp.ct) == 1
    records = dp.ct.to_records(2.0)
    ct = Conntrack()
    assert ct.from_records(records, 2.0) == 1
    [conn] = ct.conns()
    assert conn.orig[0] == ip6_bytes(c.ip6) and conn.backend[0] == ip6_bytes(pod(st, "web-0").ip6)
    assert sorted(ct.table) == sorted(dp.ct.table)
    owners = pod_owners(st)
    gone = dict(owners)
    del gone[c.ip6], gone[c.ip]
    assert stale_ips(owners, gone) == {ip6_bytes(c.ip6), bytes(int(x) for x in c.ip.split("."))}
    assert dp.ct.flush_ips(stale_ips(owners, gone)) == 1


def test_ipv6_addresses_with_ports_are_bracketed_in_flows():
    from emunet.observe import filters, hubble

    assert hubble.hostport("fd00:e3e7::b", 30080) == "[fd00:e3e7::b]:30080"
    assert hubble.hostport("192.168.1.11", 30080) == "192.168.1.11:30080"
    assert filters._name({}, "fd00:e3e7::b", 30080) == "[fd00:e3e7::b]:30080"
    assert filters._name({}, "fd00:e3e7::b", None) == "fd00:e3e7::b"
    assert filters._name({"namespace": "n", "pod_name": "p"}, "2001:db8::1", 80) == "n/p:80"
