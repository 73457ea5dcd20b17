"""Conntrack's expiry wheel and live index (emunet.datapath.conntrack): `expire` looks only at
due buckets, yet removes exactly what a walk of the whole table would; `live` is exactly the
connections a snapshot keeps."""

from __future__ import annotations

import random

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from emunet.datapath import cttcp
from emunet.datapath.conntrack import Conn, Conntrack
from emunet.packets import PROTO_UDP
from tests.unit.pipeline_pair import GW_MAC, datapath, make_state, pod


def _udp(i: int) -> Conn:
    a, b = bytes([10, 42, 1, 2]), bytes([10, 42, 1, 3])
    sp, dp = (1024 + i).to_bytes(2, "big"), b"\x00\x35"
    return Conn(PROTO_UDP, (a, b, sp, dp), (b, a, dp, sp))


def _walk(ct: Conntrack) -> set[int]:
    return {id(c) for c, _ in ct.table.values()}


def test_expire_removes_exactly_the_expired_whatever_refreshes_and_cuts_happened():
    rnd = random.Random(7)
    ct = Conntrack()
    conns: list[Conn] = []
    now = 1000.0
    for step in range(3000):
        now += rnd.choice((0.0, 0.01, 0.3, 1.0, 2.7))
        op = rnd.random()
        if op < 0.4:
            c = _udp(step)
            assert ct.add(c, now)
            conns.append(c)
        elif op < 0.7 and conns:  # the fast path pushes a deadline later, unfiled
            c = rnd.choice(conns)
            c.expires = max(c.expires, now + rnd.uniform(0, 60))
        elif op < 0.8 and conns:  # the slow path may pull it earlier (a cut, a close)
            ct.cut(rnd.choice(conns), now)
        elif op < 0.85 and conns:
            ct.remove(rnd.choice(conns))
        else:
            expected = {id(c) for c, _ in ct.table.values() if c.expires > now}
            gone = len(_walk(ct)) - len(expected)
            assert ct.expire(now) == gone
            assert _walk(ct) == expected
    # every entry in the table is filed in the wheel, in its deadline's bucket or an earlier one
    filed = {id(c): b for b, d in ct.wheel.items() for c in d}
    for c, _ in ct.table.values():
        assert id(c) in filed and filed[id(c)] <= c.expires + 1
    assert not any(not d for d in ct.wheel.values())  # no empty buckets kept


def test_expire_after_a_long_gap_looks_at_the_filed_buckets_only():
    ct = Conntrack()
    a, b = _udp(1), _udp(2)
    ct.add(a, 10.0)
    ct.add(b, 10.0)
    b.expires = 10.0 + 100000.0
    assert ct.expire(50000.0) == 1 and _walk(ct) == {id(b)}
    assert ct.expire(200000.0) == 1 and not ct.table and not ct.wheel


def seg(src, dst_ip: str, sport: int, dport: int, flags: str) -> bytes:
    return bytes(Ether(src=src.mac, dst=GW_MAC) / IP(src=src.ip, dst=dst_ip)
                 / TCP(sport=sport, dport=dport, flags=flags, seq=1, ack=1))


def test_live_holds_the_assured_open_connections_only():
    st = make_state(("node-1",))
    dp = datapath(st, "node-1")
    c, o = pod(st, "client"), pod(st, "web-0")

    def live() -> list[int]:
        assert sorted(id(x) for x in dp.ct.live) == sorted(
            id(x) for x in dp.ct._kept(closing=True, assured_only=True) if not x.closing)
        return [cn.state for cn in dp.ct.live]

    dp.process(seg(c, o.ip, 1000, 80, "S"), c.host_ifname, 1.0)
    assert live() == []  # half open: never in a snapshot
    dp.process(seg(o, c.ip, 80, 1000, "SA"), o.host_ifname, 1.0)
    dp.process(seg(c, o.ip, 1000, 80, "A"), c.host_ifname, 1.0)
    assert live() == [cttcp.ESTABLISHED]
    dp.process(seg(c, o.ip, 1000, 80, "FA"), c.host_ifname, 2.0)
    assert live() == []  # closing: left out
    dp.process(seg(c, o.ip, 1001, 80, "S"), c.host_ifname, 3.0)
    dp.process(seg(o, c.ip, 80, 1001, "SA"), o.host_ifname, 3.0)
    dp.process(seg(c, o.ip, 1001, 80, "A"), c.host_ifname, 3.0)
    [conn] = list(dp.ct.live)
    dp.ct.cut(conn, 4.0)
    assert live() == []  # a tombstone of a denied flow
    dp.process(seg(c, o.ip, 1002, 80, "S"), c.host_ifname, 5.0)
    dp.process(seg(o, c.ip, 80, 1002, "SA"), o.host_ifname, 5.0)
    dp.process(seg(c, o.ip, 1002, 80, "A"), c.host_ifname, 5.0)
    [conn] = list(dp.ct.live)
    dp.ct.remove(conn)
    assert live() == []
