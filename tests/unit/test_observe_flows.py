"""Records -> Hubble flows, filters, the capped flow log and the journey text. Pure."""

from __future__ import annotations

import argparse
import json
import random
import time

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from emunet.observe import filters, flowlog, hubble, journey
from emunet.observe.counters import agent_lines, dns_lines
from tests.unit.observed_pair import EMPTY_VIP, WEB_VIP, ObservedPair, syn
from tests.unit.pipeline_pair import make_state, pod

GW2_MAC = "0a:58:0a:2a:02:01"


def _args(**kw) -> argparse.Namespace:
    base = dict(namespace=None, pod=None, from_pod=None, to_pod=None, label=None,
                verdict=None, protocol=None, port=None, type=None, since=None)
    return argparse.Namespace(**{**base, **kw})


@pytest.fixture
def story():
    """Records of: a cross-node Service connection (SYN, SYN-ACK) and a no-endpoints drop."""
    st = make_state()
    pp = ObservedPair(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    pp.send("node-1", syn(c, WEB_VIP, 80), c.host_ifname)
    pp.send("node-2", bytes(Ether(src=w.mac, dst=GW2_MAC) / IP(src=w.ip, dst=c.ip) /
                            TCP(sport=8080, dport=40000, flags="SA")), w.host_ifname)
    recs = pp.records("node-1") + pp.records("node-2")
    # the SYN-ACK is not kept (conntrack reply); trace marks would keep it, see hook tests
    pp.send("node-1", syn(c, EMPTY_VIP, 80, sport=40002), c.host_ifname)
    recs += pp.records("node-1")
    recs.sort(key=lambda r: (r["time"], r["from"] == "overlay"))
    return st, recs


def test_flows_use_hubble_field_names_and_name_the_backend(story):
    st, recs = story
    d = hubble.Directory(st)
    flows = [f for r in recs for f in hubble.flows(r, d)]
    first = flows[0]
    assert first["trace_observation_point"] == "TO_OVERLAY" and first["verdict"] == "FORWARDED"
    assert first["source"]["pod_name"] == "client" and first["source"]["namespace"] == "blog"
    assert "k8s:io.kubernetes.pod.namespace=blog" in first["source"]["labels"]
    assert first["destination"]["pod_name"] == "web-0"
    assert first["destination_service"] == {"name": "web", "namespace": "blog"}
    assert first["dnat"] == {"service": "blog/web:80/TCP", "backend": "10.42.2.2:8080",
                             "original_destination": f"{WEB_VIP}:80"}
    assert first["l4"] == {"TCP": {"source_port": 40000, "destination_port": 8080,
                                   "flags": {"SYN": True}}}
    assert first["IP"]["ipVersion"] == "IPv4" and first["Summary"] == "TCP Flags: SYN"
    assert first["event_type"] == {"type": 4, "sub_type": 4}
    assert first["traffic_direction"] == "EGRESS" and first["is_reply"] is False
    on2 = next(f for f in flows if f["node_name"] == "node-2")
    assert on2["trace_observation_point"] == "TO_ENDPOINT"
    assert on2["traffic_direction"] == "INGRESS" and on2["outer"]["vni"] == 1
    drop = next(f for f in flows if f["verdict"] == "DROPPED")
    assert drop["drop_reason_desc"] == "SERVICE_BACKEND_NOT_FOUND"
    assert drop["drop_reason"] == 158 and drop["event_type"] == {"type": 1, "sub_type": 158}
    json.dumps(flows)  # JSON-ready


def test_policy_verdicts_become_policy_flows_with_the_policy_name(story):
    st, _ = story
    rec = {"time": 1.0, "node": "node-2", "from": "overlay", "ct": "untracked",
           "pkt": {"src": "10.42.1.3", "dst": "10.42.2.2", "proto": "TCP", "sport": 1,
                   "dport": 8080, "flags": ["SYN"]},
           "verdict": "DROPPED", "drop": {"reason": "POLICY_DENIED", "detail": "x"},
           "policy": [{"direction": "ingress", "allowed": False, "pod": "blog/web-0",
                       "policies": ["blog/web-only"]}]}
    pv, dropf = hubble.flows(rec, hubble.Directory(st))
    assert pv["event_type"]["type"] == 5 and pv["verdict"] == "DROPPED"
    assert pv["ingress_denied_by"] == [{"name": "web-only", "namespace": "blog",
                                        "kind": "NetworkPolicy"}]
    assert dropf["drop_reason_desc"] == "POLICY_DENIED" and "ingress_denied_by" in dropf
    f = filters.FlowFilter.from_args(_args(type=["policy-verdict"]))
    assert f.match(pv) and not f.match(dropf)
    assert "ingress denied by blog/web-only" in filters.compact(pv)


def test_l7_records_render_as_l7_flows(story):
    st, _ = story
    d = hubble.Directory(st)
    http = hubble.flows({"time": 2.0, "node": "node-2", "type": "l7-http", "verdict": "DENIED",
                         "method": "POST", "path": "/admin", "host": "x", "status": 403,
                         "src": {"ip": "10.42.1.3", "port": 5}, "dst": {"ip": "10.42.2.2",
                                                                      "port": 8080}}, d)[0]
    assert http["Type"] == "L7" and http["l7"]["http"]["method"] == "POST"
    assert http["verdict"] == "DROPPED" and http["event_type"]["type"] == 129
    f = filters.FlowFilter.from_args(_args(protocol=["http"]))
    assert f.match(http)


def test_filters_select_like_hubble(story):
    st, recs = story
    d = hubble.Directory(st)
    flows = [f for r in recs for f in hubble.flows(r, d)]

    def sel(**kw):
        flt = filters.FlowFilter.from_args(_args(**kw))
        return [f for f in flows if flt.match(f)]

    assert len(sel()) == len(flows) == 3
    assert [f["verdict"] for f in sel(verdict=["dropped"])] == ["DROPPED"]
    assert len(sel(from_pod=["blog/client"])) == 3
    assert len(sel(to_pod=["blog/web"])) == 2  # prefix, as in Hubble
    assert sel(to_pod=["other/web"]) == []
    assert len(sel(pod=["web-0"], namespace="blog")) == 2
    assert len(sel(label=["app=web"])) == 2 and sel(label=["app=web,tier=x"]) == []
    assert len(sel(port=[8080])) == 2 and sel(protocol=["udp"]) == []
    assert len(sel(type=["drop"])) == 1 and len(sel(type=["trace"])) == 2
    assert sel(namespace="kube-system") == []
    assert len(sel(since="1h")) == 0  # the records are from 1970 (injected clock)
    with pytest.raises(filters.FilterError):
        filters.FlowFilter.from_args(_args(type=["bogus"]))
    with pytest.raises(filters.FilterError):
        filters.parse_since("yesterday")
    assert filters.parse_since("5m", now=1000.0) == 700.0
    row = filters.table_row(flows[0])
    assert len(row) == len(filters.TABLE_HEAD) and row[4] == "to-overlay"


def test_flow_log_is_capped_rotates_and_merges_sources_by_time(tmp_path):
    a = flowlog.FlowLog(tmp_path / "flows-node-1.jsonl", cap=400)
    b = flowlog.FlowLog(tmp_path / "flows-node-2.jsonl", cap=400)
    for i in range(100):
        (a if i % 2 else b).write([{"time": float(i), "pad": "x" * 40}])
    sizes = [p.stat().st_size for p in tmp_path.iterdir()]
    assert max(sizes) < 400 + 100 and len(sizes) == 4  # current + .1 per source
    times = [r["time"] for r in flowlog.read_all(tmp_path)]
    assert times == sorted(times) and times[-1] == 99.0 and len(times) < 30
    with (tmp_path / "flows-node-1.jsonl").open("a") as f:
        f.write('{"time": 300.0}\n{"cut')
    assert flowlog.read_all(tmp_path)[-1]["time"] == 300.0  # a half line is skipped


def test_follow_yields_appended_records_in_time_order(tmp_path):
    log1 = flowlog.FlowLog(tmp_path / "flows-node-1.jsonl")
    log1.write([{"time": 1.0}])  # already there: not followed
    now = time.time()
    log2 = flowlog.FlowLog(tmp_path / "flows-node-2.jsonl")
    it = flowlog.follow(tmp_path, poll=0.01, lag=0.0, stop=time.monotonic() + 0.3)
    log1.write([{"time": now + 0.002}])
    log2.write([{"time": now + 0.001}])
    got = [r["time"] for r in it]
    assert got == [now + 0.001, now + 0.002]


def test_journey_names_layers_and_groups_packets_across_nodes(story):
    st, recs = story
    d = hubble.Directory(st)
    groups = journey.packets(recs)
    assert [len(g) for g in groups] == [2, 1]  # SYN over two nodes; the rejected SYN
    hops = [h for r in groups[0] for h in journey.hops(r, d)]
    assert [h["step"] for h in hops] == ["send", "veth", "conntrack", "dnat", "policy",
                                         "route", "encap", "underlay", "decap", "conntrack",
                                         "policy", "route", "deliver"]
    assert {h["layer"] for h in hops} >= {"L2", "L3", "L4", "L3/L4", "L2 over UDP", "L1/L2"}
    drop = journey.hops(groups[1][0], d)[-1]
    assert drop["step"] == "drop" and "Service load balancer" in drop["text"]
    assert "RST" in drop["text"]


def test_status_counters_are_worded_per_node():
    doc = {"node": "node-1", "pid": 7, "time": 100.0, "started": 40.0,
           "counters": {"forwarded": 5, "encap": 3, "decap": 2, "rx_bytes": 2048,
                        "tx_bytes": 10, "ct_entries": 4, "dnat": 2,
                        "drop:POLICY_DENIED": 1, "mystery": 9}}
    lines = agent_lines(doc, 2, now=101.0)
    assert lines[0] == "node node-1: agent pid 7, up 1m01s, restarts 2"
    assert "forwarded: 8 packets" in lines[1] and "2.0 KiB" in lines[1]
    assert lines[2] == "  drops: POLICY_DENIED 1"
    assert "4 entries" in lines[3] and "2 translations" in lines[3]
    assert lines[4] == "  other: mystery=9"
    assert dns_lines({"queries": 3, "NOERROR": 2, "NXDOMAIN": 1, "pid": 1}) == [
        "dns: 3 queries; answers NOERROR 2, NXDOMAIN 1"]


def test_random_frames_always_describe(story):
    """Whatever the datapath keeps, rendering never fails (fuzzed headers)."""
    st, _ = story
    pp = ObservedPair(st)
    c = pod(st, "client")
    rng = random.Random(7)
    base = syn(c, WEB_VIP, 80)
    for _ in range(300):
        f = bytearray(base)
        for _ in range(rng.randrange(1, 6)):
            f[rng.randrange(len(f))] = rng.randrange(256)
        pp.send("node-1", bytes(f[:rng.randrange(14, len(f) + 1)]), c.host_ifname)
    d = hubble.Directory(st)
    for r in pp.records("node-1") + pp.records("node-2"):
        for fl in hubble.flows(r, d):
            filters.compact(fl)
            json.dumps(fl)
        journey.hops(r, d)
