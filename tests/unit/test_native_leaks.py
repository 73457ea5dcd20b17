"""The datapath keeps no memory per packet or per connection it has forgotten, in either build.

mypyc 1.19.1 leaked the left operand of `bytes + bytes` (mypyc/mypyc#1192): the compiled agent
kept ~300 B of every connection it evicted and 34 B of every established packet, which grew an
agent under a SYN flood by 20 MB (tests/e2e/test_load.py). These loops fail on such a build:
they run the same traffic round after round, tracing allocations across rounds, and a round
after the warm-up ones must leave the traced total where it was. `scripts/test` runs this file
on the compiled build (the default) and on the pure sources.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from emunet import native
from tests.unit import pipeline_pair as pp

ROUNDS = 4
FLOWS = 3000


def _retained_per_round(one_round: Callable[[], None]) -> float:
    """Bytes still allocated after each of ROUNDS rounds that follow two warm-up rounds."""
    gc.collect()
    tracemalloc.start()
    try:
        one_round()
        one_round()  # the tables have reached their size
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(ROUNDS):
            one_round()
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - before) / ROUNDS
    finally:
        tracemalloc.stop()


def test_new_connections_forgotten_leave_nothing_behind() -> None:
    """New UDP flows to a pod, then every connection removed: each round must free them all."""
    st = pp.make_state(("node-1",))
    dp = pp.datapath(st, "node-1")
    c, w = pp.pod(st, "client"), pp.pod(st, "web-0")
    frames = [bytes(Ether(src=c.mac, dst=pp.GW_MAC) / IP(src=c.ip, dst=w.ip)
                    / UDP(sport=1024 + i, dport=5353)) for i in range(FLOWS)]
    clock = [100.0]

    def one_round() -> None:
        for f in frames:
            clock[0] += 0.001
            dp.process(f, c.host_ifname, clock[0])
        for conn in list(dp.ct.conns()):
            dp.ct.remove(conn)

    per_conn = _retained_per_round(one_round) / FLOWS
    assert per_conn < 2, f"{native.running()}: {per_conn:.0f} B kept per forgotten connection"


def test_a_flood_through_a_full_table_stays_bounded() -> None:
    """SYNs with ever new ports through a small table: eviction frees what it evicts."""
    st = pp.make_state()
    dp = pp.datapath(st, "node-1")
    dp.ct.max_entries = 256
    c = pp.pod(st, "client")
    frames = [bytes(Ether(src=c.mac, dst=pp.GW_MAC) / IP(src=c.ip, dst=pp.VIP)
                    / TCP(sport=1024 + i, dport=80, flags="S", seq=i)) for i in range(FLOWS)]
    clock = [100.0]

    def one_round() -> None:
        for f in frames:
            clock[0] += 0.001
            dp.process(f, c.host_ifname, clock[0])

    per_syn = _retained_per_round(one_round) / FLOWS
    assert len(dp.ct) <= dp.ct.max_entries
    assert per_syn < 2, f"{native.running()}: {per_syn:.0f} B kept per evicting SYN"


def test_established_packets_on_the_fast_path_leave_nothing_behind() -> None:
    """Data segments of one connection, both directions, across VXLAN (fast path both ways)."""
    pair = pp.PipelinePair(pp.make_state())
    c, w = pp.open_connection(pair)
    fwd = bytes(Ether(src=c.mac, dst=pp.GW_MAC) / IP(src=c.ip, dst=pp.VIP)
                / TCP(sport=40000, dport=80, flags="A", seq=1, ack=1) / (b"x" * 100))
    back = bytes(Ether(src=w.mac, dst=pp.GW2_MAC) / IP(src=w.ip, dst=c.ip)
                 / TCP(sport=8080, dport=40000, flags="A", seq=1, ack=101) / (b"y" * 100))

    def one_round() -> None:
        for _ in range(FLOWS):
            assert len(pair.send("node-1", fwd, c.host_ifname)) == 1
            assert len(pair.send("node-2", back, w.host_ifname)) == 1

    per_packet = _retained_per_round(one_round) / (2 * FLOWS)
    assert per_packet < 0.5, f"{native.running()}: {per_packet:.1f} B kept per packet"
