"""The agent's idle-time flow records (emunet.agent.flows): events pinned right after their
batch keep what conntrack said then, are described in chunks, and reach the file in few
writes and within MAX_DELAY."""

from __future__ import annotations

import json
import random

from emunet.agent import flows
from emunet.agent.flows import MAX_DELAY, Records
from emunet.datapath import NodeTables
from emunet.observe.flowlog import FlowLog
from emunet.observe.hook import TRACE_TOS, ObservedDatapath
from tests.unit.observed_pair import WEB_VIP, syn
from tests.unit.pipeline_pair import make_state, pod


class CountingLog(FlowLog):
    def __init__(self, path) -> None:
        super().__init__(path)
        self.writes = 0

    def write_lines(self, lines: list[str]) -> None:
        self.writes += 1
        super().write_lines(lines)


def _setup(tmp_path):
    st = make_state()
    c = pod(st, "client")
    dp = ObservedDatapath(NodeTables.from_state(st, "node-1"), random.Random(1))
    log = CountingLog(tmp_path / "flows-node-1.jsonl")
    rec = Records(log, "node-1", 1000.0)
    rec.context(st.node("node-1").underlay_ip,
                {p.port: p.name for p in dp.tables.pods_by_port.values()},
                dp.tables.vxlan_port, "")
    return st, c, dp, log, rec


def _lines(log: FlowLog) -> list[dict]:
    return [json.loads(x) for x in log.path.read_text().splitlines()]


def test_a_pinned_event_keeps_its_backend_after_conntrack_forgot_it(tmp_path):
    st, c, dp, log, rec = _setup(tmp_path)
    dp.process(syn(c, WEB_VIP, 80, tos=TRACE_TOS), c.host_ifname, 10.0)
    dp.process(syn(c, WEB_VIP, 80, flags="A"), c.host_ifname, 10.0)  # unmarked, a traced flow
    rec.keep(dp.drain(), dp.ct.table, dp.traced)
    dp.ct.table.clear()  # evicted (a flood) or expired before the record is described
    dp.traced.clear()
    rec.work(10.01)
    first, second = _lines(log)
    assert first["ct"] == "new" and first["service"] == "blog/web:80/TCP" and first["backend"]
    assert first["traced"] and first["in_pod"] == "blog/client" and first["time"] == 1010.0
    assert second["pkt"]["tos"] == 0 and second["traced"] and second["ct"] == "established"
    assert second["backend"] == first["backend"]


def test_idle_chunks_describe_a_few_and_write_once(tmp_path):
    st, c, dp, log, rec = _setup(tmp_path)
    for i in range(10):
        dp.process(syn(c, WEB_VIP, 80, sport=41000 + i), c.host_ifname, 10.0)
    rec.keep(dp.drain(), dp.ct.table, dp.traced)
    assert rec.busy and rec.due == 10.0 + MAX_DELAY
    rec.written_at = 10.0  # a write just happened: chunks only describe
    rec.work(10.001, 4)
    assert len(rec.pending) == 6 and len(rec.lines) == 4 and log.writes == 0
    rec.work(10.002, 4)
    assert len(rec.pending) == 2 and log.writes == 0
    rec.work(10.0 + flows.WRITE_AFTER, 4)  # the last two, and the write is due: one call
    assert log.writes == 1 and not rec.busy and rec.due == float("inf")
    assert [r["pkt"]["sport"] for r in _lines(log)] == list(range(41000, 41010))
    dp.process(syn(c, WEB_VIP, 80, sport=42000), c.host_ifname, 10.07)
    rec.keep(dp.drain(), dp.ct.table, dp.traced)
    rec.work(10.08)  # the loop goes idle: described and written whatever the time
    assert log.writes == 2 and len(_lines(log)) == 11


def test_due_follows_the_oldest_event_not_yet_written(tmp_path):
    st, c, dp, log, rec = _setup(tmp_path)
    dp.process(syn(c, WEB_VIP, 80, sport=41000), c.host_ifname, 5.0)
    rec.keep(dp.drain(), dp.ct.table, dp.traced)
    rec.written_at = 5.0
    rec.work(5.01, 1)  # described, not yet written: still due by its packet's time
    assert rec.lines and rec.due == 5.0 + MAX_DELAY
    dp.process(syn(c, WEB_VIP, 80, sport=41001), c.host_ifname, 5.02)
    rec.keep(dp.drain(), dp.ct.table, dp.traced)
    assert rec.due == 5.0 + MAX_DELAY
    rec.work(5.0 + MAX_DELAY, 1)  # overdue: written even inside a chunk
    assert log.writes == 1 and len(_lines(log)) == 2 and rec.due == float("inf")
