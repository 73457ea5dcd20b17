"""The page's live flow stream (emunet.ui.live and the server's /api/events), no root: the flow
files tailed from now on, a batch's rows the same as parsing and sampling every record would
give while parsing only a few, a filter seeing every record, and the stream end to end."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from emunet.observe import filters, flowlog, hubble
from emunet.state import store
from emunet.ui import live, model, server
from tests.unit.pipeline_pair import make_state, pod

HOST = {"Host": "127.0.0.1:8484"}


def forwarded(st, t: float, sport: int, node: str = "node-1") -> dict:
    c, w = pod(st, "client"), pod(st, "web-0")
    return {"time": t, "node": node, "from": "endpoint", "to": "overlay",
            "verdict": "FORWARDED", "ct": "new",
            "pkt": {"src": c.ip, "dst": w.ip, "proto": "UDP", "sport": sport, "dport": 53}}


def dropped(st, t: float, sport: int) -> dict:
    c, w = pod(st, "client"), pod(st, "web-0")
    return {"time": t, "node": "node-2", "from": "overlay", "verdict": "DROPPED",
            "pkt": {"src": c.ip, "dst": w.ip, "proto": "TCP", "sport": sport, "dport": 8080,
                    "flags": ["SYN"]}, "ct": "untracked",
            "policy": [{"direction": "ingress", "allowed": False, "pod": "blog/web-0",
                        "policies": ["blog/web-access"]}],
            "drop": {"reason": "POLICY_DENIED", "desc": "policy denied", "detail": ""}}


def lines(recs: list[dict]) -> list[bytes]:
    return [json.dumps(r, separators=(",", ":")).encode() for r in recs]


def test_tail_reads_only_new_complete_lines_and_new_sources(tmp_path):
    st = make_state()
    one = flowlog.FlowLog(tmp_path / "flows-node-1.jsonl")
    one.write([forwarded(st, 1.0, 1)])
    tail = live.Tail(tmp_path)
    assert tail.read() == {}  # from now on
    one.write([forwarded(st, 2.0, 2)])
    with open(tmp_path / "flows-node-1.jsonl", "ab") as f:
        f.write(b'{"time": 3.0, "half')  # being written: waits
    two = flowlog.FlowLog(tmp_path / "flows-node-2.jsonl")
    two.write([forwarded(st, 2.5, 3, "node-2")])  # a source that appeared: from its start
    got = tail.read()
    assert {p.name: [json.loads(x)["time"] for x in v] for p, v in got.items()} == {
        "flows-node-1.jsonl": [2.0], "flows-node-2.jsonl": [2.5]}
    assert tail.read() == {}
    (tmp_path / "l7-proxy.jsonl.1").write_text("")  # rotated, its next file not yet there
    (tmp_path / "flows-node-1.jsonl.tmp").write_text("")  # not a source
    assert [p.name for p in flowlog.sources(tmp_path)] == [
        "flows-node-1.jsonl", "flows-node-2.jsonl", "l7-proxy.jsonl"]
    one.close()
    two.close()


def reference(recs: list[dict], d: hubble.Directory, drops: int, others: int) -> list[dict]:
    """What a batch showed before: every record parsed, then the drops and newest others."""
    recs = sorted(recs, key=lambda r: r["time"])
    dr = [r for r in recs if r["verdict"] == "DROPPED"][-drops:] if drops else []
    rest = [r for r in recs if r["verdict"] != "DROPPED"][-others:] if others else []
    keep = {id(r) for r in dr + rest}
    return model.flow_rows([r for r in recs if id(r) in keep], d, model.flow_filter({}))


def test_unfiltered_batch_parses_few_and_shows_what_parsing_all_would(monkeypatch):
    st = make_state()
    d = hubble.Directory(st)
    a = [forwarded(st, 1 + i / 1000, 1000 + i) for i in range(500)]
    b = [forwarded(st, 1 + i / 1000 + 0.0005, 3000 + i, "node-2") for i in range(400)]
    b[10], b[300] = dropped(st, b[10]["time"], 7), dropped(st, b[300]["time"], 8)
    chunks = {Path("/a"): lines(a), Path("/b"): lines(b)}
    parsed = []
    real = json.loads
    monkeypatch.setattr(live.json, "loads", lambda s: parsed.append(s) or real(s))
    rows, skipped = live.rows(chunks, d, model.flow_filter({}), drops=100, others=40)
    assert len(parsed) <= 2 + 2 * 40  # the two drops and each source's newest 40
    assert rows == reference(a + b, d, 100, 40)
    assert [r["verdict"] for r in rows].count("DROPPED") >= 2
    assert any("blog/web-access" in r["policy"] for r in rows)
    assert skipped == 900 - 42
    rows, _ = live.rows(chunks, d, model.flow_filter({}), drops=1, others=0)
    assert rows == reference(a + b, d, 1, 0)  # the newest drop only


def test_a_filter_sees_every_record_of_the_batch():
    st = make_state()
    d = hubble.Directory(st)
    recs = [forwarded(st, 1 + i / 1000, 1000 + i) for i in range(300)]
    other = pod(st, "other")
    recs[5]["pkt"]["src"] = other.ip  # old in its batch, and the only one the filter wants
    flt = model.flow_filter({"from-pod": ["blog/other"]})
    assert flt != filters.FlowFilter()
    rows, skipped = live.rows({Path("/a"): lines(recs)}, d, flt, drops=100, others=40)
    assert [r["source_pod"] for r in rows] == ["blog/other"] and skipped == 0


def test_a_batch_is_due_at_once_for_a_new_drop_else_after_calm():
    st = make_state()
    b = live.Batch(calm=1.0)
    assert b.due() is None
    b.add({Path("/a"): lines([forwarded(st, 1.0, 1)])}, now=10.0)
    assert b.due() == 11.0  # others wait for the calm
    b.add({Path("/b"): lines([dropped(st, 1.1, 7)])}, now=10.3)
    assert b.due() == 10.0  # a new drop: now
    assert len(b.take()) == 2 and b.due() is None
    b.add({Path("/b"): lines([dropped(st, 1.5, 8)])}, now=10.5)  # the same drop again
    assert b.due() == 11.5
    b.take()
    b.add({Path("/b"): lines([dropped(st, 9.0, 9)])}, now=10.5 + live.REPEAT)  # news again
    assert b.due() == 10.5 + live.REPEAT
    b.take()
    other = dropped(st, 9.1, 9)
    other["pkt"]["dport"] = 9999  # another flow dropped: news
    b.add({Path("/b"): lines([other])}, now=11.0 + live.REPEAT)
    assert b.due() == 11.0 + live.REPEAT


async def test_events_stream_new_flows_and_drops(tmp_path):
    st = make_state()
    store.write(st, tmp_path / store.FILE_NAME)
    log = flowlog.FlowLog(tmp_path / "flows-node-1.jsonl")
    log.write([forwarded(st, 1.0, 1)])  # history: not in the live stream
    ui = server.UI(tmp_path, 8484, check_uid=False)
    async with TestClient(TestServer(server.make_app(ui, live=True))) as client:
        r = await client.get("/api/events", headers=HOST)
        assert r.status == 200

        async def event() -> tuple[str, dict]:
            name, data = "", ""
            while True:
                line = (await r.content.readline()).decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif not line and name:
                    return name, json.loads(data)
        assert (await asyncio.wait_for(event(), 5))[0] == "map"
        await asyncio.sleep(2 * server.POLL)  # the tail starts when a page is there
        log.write([forwarded(st, 2.0 + i / 100, 100 + i) for i in range(60)]
                  + [dropped(st, 3.0, 9)])
        name, batch = await asyncio.wait_for(event(), 5)
        assert name == "flows"
        assert len(batch["rows"]) >= server.LIVE_OTHERS and batch["skipped"] >= 1
        assert any(x["verdict"] == "DROPPED" and x["policy"] == ["blog/web-access"]
                   for x in batch["rows"])
        assert not any(x["source"].endswith(":1") for x in batch["rows"])  # not the history
        r.close()
    log.close()
