"""Test helper for flow events: a PipelinePair of two `ObservedDatapath`s (the agent's event
hook) that also renders each node's kept events as flow records, and a SYN builder."""

from __future__ import annotations

import random

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from emunet.datapath import NodeTables
from emunet.observe.hook import ObservedDatapath
from emunet.observe.record import describe
from tests.unit.pipeline_pair import PipelinePair

GW_MAC = "0a:58:0a:2a:01:01"
GW2_MAC = "0a:58:0a:2a:02:01"
WEB_VIP = "10.43.0.11"
EMPTY_VIP = "10.43.0.12"


class ObservedPair(PipelinePair):
    def __init__(self, st) -> None:
        super().__init__(st)
        self.dps = {n: ObservedDatapath(NodeTables.from_state(st, n), random.Random(1))
                    for n in ("node-1", "node-2")}

    def records(self, node: str) -> list[dict]:
        dp = self.dps[node]
        names = {p.port: p.name for p in dp.tables.pods_by_port.values()}
        return [describe(ev, node, self.st.node(node).underlay_ip, dp.ct.table, dp.traced,
                         1000.0, names) for ev in dp.drain()]


def syn(c, dst, dport, sport=40000, tos=0, flags="S"):
    return bytes(Ether(src=c.mac, dst=GW_MAC) / IP(src=c.ip, dst=dst, tos=tos) /
                 TCP(sport=sport, dport=dport, flags=flags, seq=1))
