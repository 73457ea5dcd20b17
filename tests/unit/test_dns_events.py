"""DNS query/answer events: decoding (Scapy builds the replies), budget, ring file, and the
real responder on loopback rendered by `observe` as Hubble `l7.dns` flows."""

from __future__ import annotations

import argparse
import asyncio
import json
import struct

from scapy.layers.dns import DNS, DNSQR, DNSRR

from emunet.dns import querylog as events
from emunet.dns import server
from emunet.dns.querylog import DnsEvents, answer, question
from emunet.dns.server import DnsServer
from emunet.observe import filters, flowlog, hubble
from emunet.state import codec
from tests.unit.dns_cluster import NS, cluster, handler, query
from tests.unit.dns_loopback import free_port, udp_ask

SVC = f"monospaced.{NS}.svc.cluster.local"
CLIENT = "10.42.1.3"  # frontend-client in the fixture cluster
# cilium/cilium api/v1/flow/flow.proto, message DNS
HUBBLE_DNS = {"query", "ips", "ttl", "cnames", "observation_source", "rcode", "qtypes",
              "rrtypes"}


def _args(**kw) -> argparse.Namespace:
    base = dict(namespace=None, pod=None, from_pod=None, to_pod=None, label=None,
                verdict=None, protocol=None, port=None, type=None, since=None)
    return argparse.Namespace(**{**base, **kw})


def test_answers_of_our_handler_decode():
    h = handler()
    ok = h.handle(query(SVC.upper(), ident=7))
    assert question(ok) == (7, SVC + ".", "A")  # lowercased, trailing dot as Hubble prints
    assert answer(ok) == {"rcode": "NOERROR", "rcode_num": 0, "ips": ["10.43.0.11"],
                          "ttl": 5, "cnames": [], "rrtypes": ["A"]}
    alias = answer(h.handle(query(f"alias.{NS}.svc.cluster.local")))
    assert alias["cnames"] == [SVC + "."] and alias["ips"] == ["10.43.0.11"]
    assert alias["rrtypes"] == ["CNAME", "A"]
    nx = answer(h.handle(query(f"nope.{NS}.svc.cluster.local")))
    assert (nx["rcode"], nx["rcode_num"], nx["ips"], nx["ttl"]) == ("NXDOMAIN", 3, [], 0)
    headless = answer(h.handle(query(f"db.{NS}.svc.cluster.local")))
    assert sorted(headless["ips"]) == ["10.42.1.4", "10.42.2.3", "10.42.2.4"]
    srv = h.handle(query(f"_http._tcp.{SVC}", "SRV"))
    assert question(srv)[2] == "SRV" and answer(srv)["rrtypes"] == ["SRV"]


def test_upstream_style_replies_decode_with_compression_and_min_ttl():
    reply = bytes(DNS(id=9, qr=1, rd=1, ra=1, qd=DNSQR(qname="www.example.com", qtype="A"),
                      an=[DNSRR(rrname="www.example.com", type="CNAME", ttl=300,
                                rdata="edge.example.net"),
                          DNSRR(rrname="edge.example.net", type="A", ttl=20,
                                rdata="192.0.2.7"),
                          DNSRR(rrname="edge.example.net", type="AAAA", ttl=60,
                                rdata="2001:db8::7")]))
    a = answer(reply)
    assert a["cnames"] == ["edge.example.net."] and a["ips"] == ["192.0.2.7", "2001:db8::7"]
    assert a["ttl"] == 20 and a["rrtypes"] == ["CNAME", "A", "AAAA"]
    # cut short, a pointer loop, no header: what is readable, never an exception
    assert answer(reply[:-10])["cnames"] == ["edge.example.net."]
    loop = reply[:12] + b"\xc0\x0c" + reply[-4:]
    assert answer(loop)["ips"] == [] and question(loop)[1] == ""
    assert answer(b"\x00")["rcode"] == "SERVFAIL" and question(b"") == (0, "", "")
    assert events.type_name(99) == "TYPE99"


def test_budget_keeps_per_tick_and_counts_the_rest(tmp_path):
    ev = DnsEvents(tmp_path / "dns-events.jsonl", per_tick=3)
    ev.set_state(cluster(), "0.0.0.0", 53)
    h = handler()
    q = query(SVC)
    r = h.handle(q)
    for i in range(5):
        ev.add(100.0 + i, "UDP", (CLIENT, 40000 + i), q, r)
    assert len(ev.pending) == 3 and ev.suppressed == 2 and ev.room == 0
    assert ev.flush() == 3 and ev.room == 3 and ev.pending == []
    recs = [json.loads(line) for line in (tmp_path / "dns-events.jsonl").read_text().split()]
    assert [r["response"] for r in recs] == [False, True] * 3
    ask, ans = recs[0], recs[1]
    assert ask["src"] == {"ip": CLIENT, "port": 40000, "pod": f"{NS}/frontend-client"}
    assert ask["dst"]["pod"].startswith("kube-system/coredns") and ask["dst"]["port"] == 53
    assert ask["node"] == "node-1" and ask["query"] == SVC + "." and ask["qtype"] == "A"
    assert ans["src"] == ask["dst"] and ans["dst"] == ask["src"]
    assert ans["ips"] == ["10.43.0.11"] and ans["ttl"] == 5 and ans["rcode"] == "NOERROR"
    off = DnsEvents(None)  # no file: nothing kept, nothing counted
    off.add(1.0, "UDP", (CLIENT, 1), q, r)
    assert off.pending == [] and off.suppressed == 0 and off.flush() == 0


def test_event_file_is_a_bounded_ring(tmp_path):
    path = tmp_path / events.FILE_NAME
    ev = DnsEvents(path, per_tick=10, cap=20_000)
    q = query(SVC)
    r = handler().handle(q)
    tick_bytes = 0
    for tick in range(40):
        for i in range(10):
            ev.add(tick + i / 100, "UDP", (CLIENT, i), q, r)
        before = path.stat().st_size if path.exists() else 0
        ev.flush()
        if path.exists() and path.stat().st_size > before:
            tick_bytes = max(tick_bytes, path.stat().st_size - before)
    rotated = path.with_name(path.name + ".1")
    assert rotated.exists() and tick_bytes
    # a file stops growing at the first flush past the cap: at most cap + one tick's records
    size = path.stat().st_size if path.exists() else 0  # absent right after a rotation
    assert size < 20_000 and rotated.stat().st_size < 20_000 + tick_bytes
    recs = flowlog.read_all(tmp_path)  # observe's reader picks the file up
    assert recs and all(r["type"] == "l7-dns" for r in recs)
    assert [r["time"] for r in recs] == sorted(r["time"] for r in recs)
    assert recs[-1]["time"] == 39.09 and len(recs) < 2 * 40 * 10
    path.unlink(missing_ok=True)  # right after a rotation only `.1` is there: still read
    assert flowlog.read_all(tmp_path) == [json.loads(x) for x in rotated.read_text().split()]


def test_hubble_renders_query_and_answer_with_pod_identity():
    st = cluster()
    ev = DnsEvents(None)
    ev.set_state(st, "0.0.0.0", 53)
    h = handler()
    ok = ev.records([(5.0, "UDP", (CLIENT, 41000), query(SVC), h.handle(query(SVC)))])
    nx_q = query(f"nope.{NS}.svc.cluster.local", "AAAA")
    nx = ev.records([(6.0, "TCP", (CLIENT, 41001), nx_q, h.handle(nx_q, udp=False))])
    d = hubble.Directory(st)
    req, resp, _, nx_resp = [hubble.flows(r, d)[0] for r in ok + nx]
    assert req["Type"] == resp["Type"] == "L7" and req["event_type"]["type"] == 129
    assert req["l7"]["type"] == "REQUEST" and resp["l7"]["type"] == "RESPONSE"
    assert set(req["l7"]["dns"]) <= HUBBLE_DNS and set(resp["l7"]["dns"]) == HUBBLE_DNS
    assert req["l7"]["dns"] == {"query": SVC + ".", "qtypes": ["A"],
                                "observation_source": "emunet-dns"}
    dns = resp["l7"]["dns"]
    assert (dns["ips"], dns["ttl"], dns["rcode"], dns["rrtypes"]) == (
        ["10.43.0.11"], 5, 0, ["A"])
    src = req["source"]
    assert (src["namespace"], src["pod_name"]) == (NS, "frontend-client")
    assert "k8s:app=frontend-client" in src["labels"]
    assert req["destination"]["namespace"] == "kube-system"
    assert resp["is_reply"] and resp["destination"]["pod_name"] == "frontend-client"
    assert req["l4"] == {"UDP": {"source_port": 41000, "destination_port": 53}}
    assert nx_resp["l4"]["TCP"]["destination_port"] == 41001
    assert req["Summary"] == f"DNS Query {SVC}. A"
    assert resp["Summary"] == f'DNS Answer "10.43.0.11" TTL: 5 (Query {SVC}. A)'
    assert nx_resp["Summary"].startswith("DNS Answer RCode: NXDOMAIN TTL: 0")
    line = filters.compact(resp)
    assert f"{NS}/frontend-client:41000 <- kube-system/coredns" in line
    assert "dns-response FORWARDED" in line
    # a pod deleted since keeps the name its record carries
    gone = hubble.flows({**ok[0], "src": {"ip": "10.42.9.9", "port": 1, "pod": "x/old"}}, d)[0]
    assert (gone["source"]["namespace"], gone["source"]["pod_name"]) == ("x", "old")

    http = hubble.flows({"time": 7.0, "node": "node-2", "type": "l7-http", "verdict": "FORWARDED",
                         "method": "GET", "path": "/", "host": "x", "status": 200,
                         "src": {"ip": CLIENT, "port": 5}, "dst": {"ip": "10.42.2.2",
                                                                   "port": 3000}}, d)[0]
    flows = [req, resp, nx_resp, http]

    def sel(**kw):
        flt = filters.FlowFilter.from_args(_args(**kw))
        return [f for f in flows if flt.match(f)]

    assert sel(protocol=["dns"]) == [req, resp, nx_resp]
    assert sel(type=["l7"]) == flows  # both DNS and HTTP
    assert sel(type=["drop"]) == [] and sel(protocol=["http"]) == [http]
    assert sel(from_pod=[f"{NS}/frontend-client"], protocol=["dns"]) == [req]
    assert sel(port=[53]) == [req, resp, nx_resp]


async def test_responder_writes_events_off_the_hot_path(tmp_path, monkeypatch):
    monkeypatch.setattr(server, "TICK", 1.0)  # long enough to see what is pending
    state = tmp_path / "state.json"
    state.write_text(codec.to_json(cluster()))
    srv = DnsServer(state, "127.0.0.1", free_port(), tmp_path / "dns.json",
                    tmp_path / events.FILE_NAME)
    await srv.start()
    try:
        await udp_ask(srv.port, query(SVC, ident=11))
        await udp_ask(srv.port, query(f"nope.{NS}.svc.cluster.local", ident=12))
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        data = query(SVC, "AAAA", ident=13)
        writer.write(struct.pack("!H", len(data)) + data)
        await reader.readexactly(struct.unpack("!H", await reader.readexactly(2))[0])
        writer.close()
        assert srv.events.pending  # kept, not yet decoded: the answer path did no I/O
        for _ in range(40):
            if not srv.events.pending:
                break
            await asyncio.sleep(0.1)
        assert srv.events.pending == []  # the events loop flushed them
        srv.events.room = 0  # budget spent: the next answer is counted, not kept
        DNS(await udp_ask(srv.port, query(SVC, ident=14)))
        assert srv.events.suppressed == 1 and srv.events.pending == []
    finally:
        await srv.stop()
    assert json.loads((tmp_path / "dns.json").read_text())["dns_events_suppressed"] == 1
    recs = flowlog.read_all(tmp_path)
    assert [(r["id"], r["response"], r["proto"]) for r in recs] == [
        (11, False, "UDP"), (11, True, "UDP"), (12, False, "UDP"), (12, True, "UDP"),
        (13, False, "TCP"), (13, True, "TCP")]
    assert recs[1]["ips"] == ["10.43.0.11"] and recs[3]["rcode"] == "NXDOMAIN"
    assert recs[5]["qtype"] == "AAAA" and recs[0]["src"]["ip"] == "127.0.0.1"
