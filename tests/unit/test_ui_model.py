"""The JSON `emunet ui` serves, built from a planned state and recorded flow events (no root):
the cluster map, the flow rows with observe's filters, a trace's journey with each hop's
headers decoded by Scapy, the trace's pcap, and the server's guards (aiohttp test client)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.utils import rdpcap

from emunet.cluster import tracer
from emunet.config import load_config
from emunet.observe import filters, flowlog, hubble
from emunet.observe.hook import TRACE_TOS
from emunet.state import store
from emunet.state.plan import plan
from emunet.ui import frames, model, server
from tests.unit.observed_pair import EMPTY_VIP, WEB_VIP, ObservedPair, syn
from tests.unit.pipeline_pair import make_state, pod

ROOT = Path(__file__).resolve().parents[2]
GW2_MAC = "0a:58:0a:2a:02:01"


@pytest.fixture
def traced():
    """A traced cross-node Service connection (SYN, SYN-ACK) and an untraced drop."""
    st = make_state()
    pp = ObservedPair(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    pp.send("node-1", syn(c, WEB_VIP, 80, tos=TRACE_TOS), c.host_ifname)
    recs = pp.records("node-1") + pp.records("node-2")
    pp.now += 0.001
    pp.send("node-2", bytes(Ether(src=w.mac, dst=GW2_MAC) / IP(src=w.ip, dst=c.ip) /
                            TCP(sport=8080, dport=40000, flags="SA")), w.host_ifname)
    recs += pp.records("node-2") + pp.records("node-1")
    pp.send("node-1", syn(c, EMPTY_VIP, 80, sport=40002), c.host_ifname)
    recs += pp.records("node-1")
    return st, recs


def test_map_of_the_story_config():
    st = plan(load_config(str(ROOT / "configs" / "two-node.yaml")))
    m = model.cluster_map(st, stopped=["node-2"])
    assert [(n["name"], n["underlay_ip"], n["pod_cidr"], n["stopped"]) for n in m["nodes"]] == [
        ("node-1", "192.168.1.11", "10.42.1.0/24", False),
        ("node-2", "192.168.1.12", "10.42.2.0/24", True)]
    pods = {p["ref"]: p for p in m["pods"]}
    assert len(pods) == 4
    mono = pods["blog-website/monospaced-test"]
    assert mono["node"] == "node-2" and mono["ip"] == st.pods[
        ("blog-website", "monospaced-test")].ip
    assert mono["labels"] == {"app": "monospaced"}
    assert mono["policies"] == ["blog-website/monospaced-access"]
    assert pods["blog-website/intruder"]["policies"] == []
    svc = next(s for s in m["services"] if s["ref"] == "blog-website/monospaced")
    assert svc["cluster_ip"].startswith("10.43.") and svc["ports"][0]["port"] == 80
    assert [(e["pod"], e["port"]) for e in svc["endpoints"]] == [
        ("blog-website/monospaced-test", 3000)]
    [pol] = m["policies"]
    assert pol == {"ref": "blog-website/monospaced-access", "kind": "NetworkPolicy",
                   "types": ["Ingress"], "selects": ["blog-website/monospaced-test"]}
    json.dumps(m)


def test_flow_rows_filter_with_observe_names(traced):
    st, recs = traced
    d = hubble.Directory(st)
    rows = model.flow_rows(recs, d, model.flow_filter({}))
    assert len(rows) == len([f for r in recs for f in hubble.flows(r, d)])
    first = rows[0]
    assert first["source"] == "blog/client:40000" and first["verdict"] == "FORWARDED"
    assert first["backend"] == "10.42.2.2:8080" and first["service"] == "blog/web:80/TCP"
    assert first["traced"] and first["protocol"] == "TCP"
    dropped = model.flow_rows(recs, d, model.flow_filter({"verdict": ["DROPPED"]}))
    assert {r["reason"] for r in dropped} == {"SERVICE_BACKEND_NOT_FOUND"}
    assert model.flow_rows(recs, d, model.flow_filter({"from-pod": ["blog/web"]}))[0][
        "source_pod"] == "blog/web-0"
    assert model.flow_rows(recs, d, model.flow_filter({"namespace": ["nope"]})) == []
    for n in (1, 2, 3, len(rows), len(rows) + 5):  # rendered from the end: the same tail
        assert model.flow_rows(recs, d, model.flow_filter({}), last=n) == rows[-n:]
    with pytest.raises(filters.FilterError):
        model.flow_filter({"verdict": ["MAYBE"]})
    with pytest.raises(filters.FilterError):
        model.flow_filter({"port": ["http"]})


def test_flow_rows_name_the_policy_that_dropped():
    st = make_state()
    rec = {"time": 1.0, "node": "node-2", "from": "overlay", "verdict": "DROPPED",
           "pkt": {"src": "10.42.1.3", "dst": "10.42.2.2", "proto": "TCP", "sport": 1,
                   "dport": 8080, "flags": ["SYN"]}, "ct": "untracked",
           "policy": [{"direction": "ingress", "allowed": False, "pod": "blog/web-0",
                       "policies": ["blog/web-access"]}],
           "drop": {"reason": "POLICY_DENIED", "desc": "policy denied", "detail": ""}}
    rows = model.flow_rows([rec], hubble.Directory(st), model.flow_filter({}))
    assert rows and all(r["policy"] == ["blog/web-access"] for r in rows)
    assert {r["verdict"] for r in rows} == {"DROPPED"}


def test_journey_from_a_trace_has_layers_headers_and_the_reply(traced):
    st, recs = traced
    d = hubble.Directory(st)
    c = pod(st, "client")
    flow = tracer.flow_records(recs, c.ip, 40000, "TCP", 0.0)
    report = {"pod": "blog/client", "pod_ip": c.ip, "node": "node-1", "dest": "web",
              "dns": [{"name": "web.blog.svc.cluster.local.", "ips": [WEB_VIP],
                       "rcode": "NOERROR", "server": "10.43.0.10", "packets": []}],
              "packets": tracer.packets(flow, d, keep_records=True),
              "result": {"result": "connected"}}
    j = model.journey(report, d)
    req, rep = j["paths"]
    assert not req["reply"] and rep["reply"] and not req["dropped"]
    steps = [h["step"] for h in req["hops"]]
    assert steps == ["send", "veth", "conntrack", "dnat", "policy", "route", "encap",
                     "underlay", "decap", "conntrack", "policy", "route", "deliver"]
    assert [h["n"] for h in req["hops"] + rep["hops"]] == list(
        range(1, len(req["hops"]) + len(rep["hops"]) + 1))
    dnat = next(h for h in req["hops"] if h["step"] == "dnat")
    assert dnat["backend"] == "10.42.2.2:8080" and dnat["headers"]["inner"]["dst"] == "10.42.2.2"
    send = req["hops"][0]
    assert send["headers"]["inner"]["dst"] == WEB_VIP  # before the DNAT
    assert req["hops"][4]["step"] == "policy"
    assert req["hops"][4]["headers"]["inner"]["dst"] == "10.42.2.2"  # judged after it
    encap = next(h for h in req["hops"] if h["step"] == "encap")
    assert encap["layer"] == "L2 over UDP" and encap["headers"]["outer"]["vni"] == 1
    assert "reverse-nat" in [h["step"] for h in rep["hops"]]
    assert j["dns"][0]["ips"] == [WEB_VIP] and "packets" not in j["dns"][0]
    json.dumps(j)
    # a hop's headers decoded by Scapy: the VXLAN wrapping and the inner SYN as recorded
    dec = frames.decode(encap["headers"])
    names = [la["layer"] for la in dec["layers"]]
    assert names == ["Ethernet", "IP", "UDP", "VXLAN", "Ethernet", "IP", "TCP"]
    assert dec["layers"][2]["fields"]["dport"] == 8472
    assert dec["layers"][3]["fields"]["vni"] == 1
    inner_ip, tcp = dec["layers"][5]["fields"], dec["layers"][6]["fields"]
    assert inner_ip["dst"] == "10.42.2.2" and inner_ip["tos"] == TRACE_TOS
    assert tcp["flags"] == "S" and tcp["dport"] == 8080
    assert "VXLAN" in dec["show"]


def test_pcap_of_a_trace_reopens_with_the_recorded_headers(traced):
    st, recs = traced
    c = pod(st, "client")
    flow = tracer.flow_records(recs, c.ip, 40000, "TCP", 0.0)
    pkts = rdpcap(io.BytesIO(frames.pcap(flow)))
    assert len(pkts) == 2 * len(flow)  # in and out of every node's datapath
    assert pkts[0][IP].dst == WEB_VIP and pkts[1][VXLAN].vni == 1
    assert pkts[1][VXLAN][IP].dst == "10.42.2.2"
    assert float(pkts[0].time) == pytest.approx(flow[0]["time"])
    assert rdpcap(io.BytesIO(frames.pcap([]))) is not None  # an empty trace: a valid file


def test_peer_uid_reads_the_tcp_table(tmp_path):
    table = tmp_path / "tcp"
    table.write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
        "   0: 0100007F:A1B2 0100007F:2118 01 00000000:00000000 00:00000000 00000000  1000\n"
        "   1: 0100007F:A1B3 0100007F:2118 01 00000000:00000000 00:00000000 00000000     0\n")
    assert server.peer_uid(("127.0.0.1", 0xA1B2), 8472, str(table)) == 1000
    assert server.peer_uid(("127.0.0.1", 0xA1B3), 8472, str(table)) == 0
    assert server.peer_uid(("127.0.0.1", 0xA1B4), 8472, str(table)) is None


@pytest.fixture
def run_dir(tmp_path, traced):
    st, recs = traced
    store.write(st, tmp_path / store.FILE_NAME)
    log = flowlog.FlowLog(tmp_path / "flows-node-1.jsonl")
    log.write(recs)
    log.close()
    return tmp_path


async def test_server_serves_map_flows_and_guards_the_host(run_dir):
    ui = server.UI(run_dir, 8484, check_uid=False)
    async with TestClient(TestServer(server.make_app(ui, live=False))) as client:
        await _requests(client)


async def _requests(client: TestClient) -> None:
    r = await client.get("/api/map", headers={"Host": "127.0.0.1:8484"})
    assert r.status == 200 and len((await r.json())["pods"]) == 4
    r = await client.get("/api/flows?verdict=DROPPED", headers={"Host": "127.0.0.1:8484"})
    rows = await r.json()
    assert rows and all(x["verdict"] == "DROPPED" for x in rows) and "flow" not in rows[0]
    r = await client.get("/api/flows?download=1", headers={"Host": "127.0.0.1:8484"})
    assert "attachment" in r.headers["Content-Disposition"]
    assert all("verdict" in f for f in json.loads(await r.text()))
    r = await client.get("/api/flows?verdict=MAYBE", headers={"Host": "127.0.0.1:8484"})
    assert r.status == 400 and "MAYBE" in (await r.json())["error"]
    r = await client.get("/api/map", headers={"Host": "evil.example:8484"})
    assert r.status == 403  # DNS rebinding: only the loopback name is served
    r = await client.get("/", headers={"Host": "localhost:8484"})
    assert r.status == 200 and "emunet" in await r.text()
    r = await client.get("/api/trace/9.pcap", headers={"Host": "127.0.0.1:8484"})
    assert r.status == 404


async def test_server_lets_in_the_token_or_root_only(run_dir):
    """The test client's socket is this process's: uid 0 under sudo, else the token decides."""
    ui = server.UI(run_dir, 0, token="s3cret")
    async with TestClient(TestServer(server.make_app(ui, live=False))) as client:
        ui.port = client.server.port
        host = {"Host": f"127.0.0.1:{ui.port}"}
        r = await client.get("/?token=s3cret", headers=host, allow_redirects=False)
        assert r.status == 302 and r.headers["Location"] == "/"
        assert "HttpOnly" in r.headers["Set-Cookie"] and "SameSite=Strict" in r.headers[
            "Set-Cookie"]
        r = await client.get("/api/map", headers={**host, "Cookie": "emunet_ui=s3cret"})
        assert r.status == 200
        client.session.cookie_jar.clear()
        r = await client.get("/api/map?token=wrong", headers=host)
        assert r.status == (200 if os.geteuid() == 0 else 403)
