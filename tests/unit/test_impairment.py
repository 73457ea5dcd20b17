"""Link impairment: the agent's netem semantics (emunet.datapath.netem) with an injected clock and
RNG, the underlay shaper around the datapath's actions, and `emunet link` argument parsing and
tc commands (emunet.host.tc)."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from emunet.config import impairment
from emunet.datapath import Drop, DropReason, Encap, Send
from emunet.datapath.netem import Impairer, LinkShape, UnderlayShaper, link_shape
from emunet.host import tc
from emunet.model import Impairment


def test_fixed_delay_holds_each_item_exactly_that_long():
    imp = Impairer(LinkShape(delay=0.05), random.Random(1))
    for i in range(5):
        assert imp.offer(i, 10.0 + i * 0.01)
    assert imp.next_due() == pytest.approx(10.05)
    assert imp.due(10.049) == []
    assert imp.due(10.0651) == [0, 1]
    assert imp.due(11.0) == [2, 3, 4] and imp.next_due() is None and imp.sent == 5


def test_uniform_jitter_stays_within_bounds_and_reorders_like_tfifo():
    imp = Impairer(LinkShape(delay=0.05, jitter=0.01), random.Random(2))
    for i in range(2000):
        imp.offer(i, 0.0)
    times = sorted(imp._heap)
    waits = [t for t, _, _ in times]
    assert 0.04 <= min(waits) < 0.041 and 0.059 < max(waits) <= 0.06
    assert statistics.mean(waits) == pytest.approx(0.05, abs=0.001)
    out = imp.due(1.0)
    assert sorted(out) == list(range(2000)) and out != list(range(2000))  # reordered


def test_normal_jitter_has_the_given_deviation_and_never_goes_below_zero():
    imp = Impairer(LinkShape(delay=0.02, jitter=0.01, distribution="normal"),
                   random.Random(3))
    for i in range(4000):
        imp.offer(i, 0.0)
    waits = [t for t, _, _ in imp._heap]
    assert statistics.pstdev(waits) == pytest.approx(0.01, rel=0.1)
    assert min(waits) >= 0.0  # a 2-sigma draw below -delay is clamped, never in the past


def test_loss_is_per_item_with_the_given_probability():
    imp = Impairer(LinkShape(loss=0.25), random.Random(4))
    kept = sum(imp.offer(i, 0.0) for i in range(10000))
    assert imp.lost == 10000 - kept
    assert kept / 10000 == pytest.approx(0.75, abs=0.02)
    assert len(imp.due(0.0)) == kept


def test_loss_only_sends_at_once_and_in_order():
    imp = Impairer(LinkShape(loss=0.5), random.Random(5))
    kept = [i for i in range(100) if imp.offer(i, 3.0)]
    assert imp.due(3.0) == kept


def test_link_shape_from_the_model():
    assert link_shape(None) is None
    assert link_shape(Impairment(rate_bps=10_000_000)) is None  # the rate is tbf's
    s = link_shape(Impairment(delay_ms=50, jitter_ms=5, loss_pct=2, distribution="normal"))
    assert s == LinkShape(0.05, 0.005, 0.02, "normal")


# ---- the shaper around the datapath's actions ---------------------------------------------

def _tcp_frame(payload: int) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") /
                 IP(src="10.42.1.2", dst="10.42.2.2", id=1) /
                 TCP(sport=1, dport=2, flags="PA", seq=100) / (b"x" * payload))


def test_shaper_keeps_underlay_sends_and_passes_the_rest():
    sh = UnderlayShaper(random.Random(6))
    assert sh.configure(link_shape(Impairment(delay_ms=10))) is True
    enc, out = Encap("192.168.1.12", 8472, b"v" * 60), Send("eth0", b"n" * 60)
    pod, drop = Send("veth0a2a0102", b"p" * 60), Drop(DropReason.NO_ROUTE)
    assert sh.take([enc, pod, out, drop], 0, 1464, 1.0) == [pod, drop]
    assert sh.due == pytest.approx(1.01)
    assert sh.release(1.005) == [] and sh.release(1.02) == [enc, out]
    assert sh.due == math.inf and sh.counters() == {"link_sent": 2, "link_lost": 0,
                                                     "link_queued": 0}


def test_shaper_cuts_super_frames_into_wire_segments_first():
    sh = UnderlayShaper(random.Random(7))
    sh.configure(link_shape(Impairment(delay_ms=1)))
    frame = _tcp_frame(10 * 1400)
    vx = b"\x08\x00\x00\x00\x00\x00\x01\x00"
    assert sh.take([Encap("192.168.1.12", 8472, vx + frame), Send("eth0", frame)],
                   1400, 1464, 0.0) == []
    out = sh.release(1.0)
    assert len(out) == 20
    assert all(len(a.payload) == 8 + 14 + 40 + 1400 for a in out if isinstance(a, Encap))
    segs = [Ether(a.frame) for a in out if isinstance(a, Send)]
    assert [s[TCP].seq for s in segs] == [100 + 1400 * i for i in range(10)]
    assert b"".join(bytes(s[TCP].payload) for s in segs) == b"x" * 14000


def test_shaper_reset_lets_queued_sends_leave_on_time():
    sh = UnderlayShaper(random.Random(8))
    sh.configure(link_shape(Impairment(delay_ms=100)))
    sh.take([Encap("192.168.1.12", 8472, b"a")], 0, 1464, 0.0)
    assert sh.configure(None) is False  # `link reset`: the agent stops calling take
    assert sh.release(0.05) == [] and len(sh.release(0.1)) == 1
    assert sh.configure(link_shape(Impairment(loss_pct=100))) is True
    assert sh.take([Encap("192.168.1.12", 8472, b"b")], 0, 1464, 1.0) == []
    assert sh.release(2.0) == [] and sh.counters()["link_lost"] == 1


# ---- emunet link: parsing and tc -----------------------------------------------------------

def test_parse_units_as_tc_writes_them():
    imp = impairment.parse("0.5s", "200us", "2.5%", "1.5gbit", "normal")
    assert imp == Impairment(500.0, 0.2, 2.5, 1_500_000_000, "normal")
    assert impairment.parse(rate="10mbit").rate_bps == 10_000_000
    assert impairment.parse(rate="64kbit").rate_bps == 64_000
    assert impairment.describe(impairment.parse("50ms", "5ms", "1%", "10mbit")) == \
        "delay 50ms ±5ms, loss 1%, rate 10mbit"


@pytest.mark.parametrize("kwargs, needle", [
    ({"delay": "50"}, "delay: '50' is not a duration"),
    ({"delay": "fast"}, "not a duration"),
    ({"jitter": "5ms"}, "jitter: needs a delay"),
    ({"delay": "5ms", "jitter": "6ms"}, "larger than the delay"),
    ({"loss": "5"}, "not a percentage"),
    ({"loss": "101%"}, "not a percentage"),
    ({"rate": "0mbit"}, "not a rate"),
    ({"rate": "10MB/s"}, "not a rate"),
    ({}, "nothing to set"),
    ({"delay": "5ms", "distribution": "pareto"}, "not one of uniform, normal"),
    ({"delay": "5ms", "distribution": "normal"}, "give --jitter too"),
])
def test_parse_errors_name_the_field(kwargs, needle):
    with pytest.raises(impairment.ImpairmentError, match=needle):
        impairment.parse(**kwargs)


def test_tc_commands_only_tbf_for_agent_nodes_netem_for_kernel_nodes():
    imp = impairment.parse("50ms", "5ms", "1%", "10mbit")
    cmds = tc.tc_commands("p-node-1", imp)
    assert cmds[0] == ["tc", "-n", "p-node-1", "qdisc", "del", "dev", "eth0", "root"]
    assert cmds[1][:8] == ["tc", "-n", "p-node-1", "qdisc", "add", "dev", "eth0", "root"]
    assert "tbf" in cmds[1] and "netem" not in sum(cmds, []) and len(cmds) == 2
    assert "10000000bit" in cmds[1]
    assert tc.tc_commands("p", impairment.parse(delay="5ms")) == [cmds[0][:2] + ["p"] +
                                                                   cmds[0][3:]]
    kernel = tc.tc_commands("p", imp, netem_too=True)
    assert kernel[1][8:] == ["handle", "1:", "netem", "delay", "50ms", "5ms", "loss", "1%"]
    assert kernel[2][6:10] == ["eth0", "parent", "1:1", "handle"] and "tbf" in kernel[2]


def test_agent_takes_the_shaped_path_only_while_impaired():
    """The no-impairment fast path is the class's `_act`, untouched (no per-frame check)."""
    from types import SimpleNamespace

    from emunet.agent.loop import Agent

    a = object.__new__(Agent)
    a.node, a.shaper = "node-1", UnderlayShaper(random.Random(9))
    a._state = SimpleNamespace(links={"node-1": Impairment(delay_ms=5)})
    a._shape()
    assert a._act == a._act_shaped
    a._state = SimpleNamespace(links={"node-1": Impairment(rate_bps=1000)})  # tbf only
    a._shape()
    assert "_act" not in a.__dict__ and a._act.__func__ is Agent._act
