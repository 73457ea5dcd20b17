"""UDP larger than the pod MTU through a ClusterIP (issue 15 §2): the pod's kernel fragments
it, and every fragment must be DNAT'ed (and a backend's big reply un-NAT'ed), fragments
tracked by IP id (emunet.datapath.frags)."""

from __future__ import annotations

from scapy.layers.inet import IP, UDP, defragment, fragment
from scapy.layers.l2 import Ether

from emunet.datapath import DropReason
from emunet.datapath.frags import FRAG_MAX, FRAG_TIMEOUT
from tests.unit.pipeline_pair import PipelinePair, make_state, pod

GW_MAC = "0a:58:0a:2a:01:01"
GW2_MAC = "0a:58:0a:2a:02:01"
VIP = "10.43.0.11"


def _frames(src, dst: str, sport: int, dport: int, size: int, gw: str, ident: int = 7):
    pkt = IP(src=src.ip, dst=dst, id=ident) / UDP(sport=sport, dport=dport) / (b"q" * size)
    return [bytes(Ether(src=src.mac, dst=gw) / f) for f in fragment(pkt, fragsize=1400)]


def _whole(sends):
    """The datagram the receiver's kernel would reassemble from the delivered fragments."""
    [dgram] = defragment([IP(bytes(Ether(s.frame)[IP])) for s in sends])
    return IP(bytes(dgram))


def test_every_fragment_to_a_clusterip_is_dnated_and_the_big_reply_un_nated():
    st = make_state()
    pair = PipelinePair(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    for size in (1500, 3000, 8000):
        frames = _frames(c, VIP, 5000 + size, 53, size, GW_MAC)
        assert len(frames) > 1
        sends = [s for f in frames for s in pair.send("node-1", f, c.host_ifname)]
        assert len(sends) == len(frames) and {s.port for s in sends} == {w.host_ifname}
        got = _whole(sends)
        assert (got.dst, got[UDP].dport, len(got[UDP].payload)) == (w.ip, 5353, size)
        raw = bytes(got[UDP])
        check = UDP(raw)
        del check.chksum
        assert bytes(IP(src=got.src, dst=got.dst) / check)[20:] == raw  # UDP checksum right
        # the backend's answer, as big: fragments back to the client, from the VIP
        back = _frames(w, c.ip, 5353, 5000 + size, size, GW2_MAC, ident=99)
        sends = [s for f in back for s in pair.send("node-2", f, w.host_ifname)]
        assert {s.port for s in sends} == {c.host_ifname}
        got = _whole(sends)
        assert (got.src, got[UDP].sport, got[UDP].dport) == (VIP, 53, 5000 + size)
    assert not pair.drops
    assert not pair.dps["node-1"].frags  # forgotten at each datagram's last fragment


def test_a_fragment_before_its_first_is_still_dropped_and_the_table_is_bounded():
    st = make_state()
    pair = PipelinePair(st)
    c = pod(st, "client")
    first, *rest = _frames(c, VIP, 5000, 53, 3000, GW_MAC)
    assert pair.send("node-1", rest[0], c.host_ifname) == []
    assert pair.drops[-1].reason is DropReason.FRAG_NOT_SUPPORTED
    dp = pair.dps["node-1"]
    for ident in range(FRAG_MAX + 10):  # first fragments only: datagrams never completed
        f = bytearray(first)
        f[18:20] = ident.to_bytes(2, "big")  # the IP id (the IP checksum is not checked)
        dp.process(bytes(f), c.host_ifname, 1.0)
    assert len(dp.frags) == FRAG_MAX
    dp.expire(1.0 + FRAG_TIMEOUT)
    assert not dp.frags
