"""IPv6 fragments in the pod pipeline (RFC 8200 §4.5), tracked by identification as IPv4's are
(emunet.datapath.frags): a pod's UDP datagram above its MTU, fragmented by its kernel (Scapy's
fragment6), to an IPv6 ClusterIP across nodes arrives whole at the backend (defragment6, the
UDP checksum checked), the big answer comes back from the ClusterIP; a policy by port judges
the first fragment and its verdict holds for the rest."""

from __future__ import annotations

import dataclasses

from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, defragment6, fragment6
from scapy.layers.l2 import Ether

from emunet.config import load_config_text
from emunet.datapath import Drop, DropReason, Encap, Send
from emunet.datapath.frags import FRAG_MAX, FRAG_TIMEOUT
from tests.unit.dualstack import GW2_MAC, GW_MAC, VIP6, datapath6, dual_state, make_dual
from tests.unit.pipeline_pair import BLOG_CLUSTER, WEB_FROM_CLIENT, make_state, pod

MTU = 1450
DNS_FROM_CLIENT = WEB_FROM_CLIENT.replace("web-from-client", "dns-from-client").replace(
    "[{port: http}]", "[{port: dns, protocol: UDP}]")


class Pair6:
    """Two nodes' datapaths wired back to back through their IPv6 Encap actions."""

    def __init__(self, st) -> None:
        self.st = st
        self.dps = {n: datapath6(st, n) for n in ("node-1", "node-2")}
        self.under6 = {st.node(n).underlay_ip6: n for n in self.dps}
        self.drops: list = []

    def send(self, node: str, frame: bytes, port: str, now: float = 1.0) -> list[Send]:
        return self._run(node, self.dps[node].process(frame, port, now), now)

    def _run(self, node: str, actions: list, now: float) -> list[Send]:
        out: list[Send] = []
        for a in actions:
            if isinstance(a, Send):
                out.append(a)
            elif isinstance(a, Encap):
                peer = self.under6[a.dst_ip]
                src = self.st.node(node).underlay_ip6
                out += self._run(peer, self.dps[peer].process_underlay(a.payload, src, now), now)
            else:
                self.drops.append(a)
        return out


def frames6(src, dst: str, sport: int, dport: int, size: int, gw_mac: str,
            ident: int = 7) -> list[bytes]:
    """`size` bytes of UDP from pod `src` as its kernel sends them at the pod MTU."""
    pkt = IPv6(src=src.ip6, dst=dst) / IPv6ExtHdrFragment(id=ident) / \
        UDP(sport=sport, dport=dport) / (bytes(range(256)) * 40)[:size]
    return [bytes(Ether(src=src.mac, dst=gw_mac) / f) for f in fragment6(pkt, MTU)]


def whole6(sends: list[Send]) -> IPv6:
    got = IPv6(bytes(defragment6([IPv6(bytes(Ether(s.frame)[IPv6])) for s in sends])))
    check = got.copy()
    del check[UDP].chksum
    assert bytes(IPv6(bytes(check))[UDP]) == bytes(got[UDP]), "UDP checksum"
    return got


def test_fragmented_udp_to_an_ipv6_clusterip_across_nodes_and_the_big_answer():
    st = dual_state()
    pair = Pair6(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    for size in (1500, 3000, 8000):
        frames = frames6(c, VIP6, 5000 + size, 53, size, GW_MAC)
        assert len(frames) > 1
        sends = [s for f in frames for s in pair.send("node-1", f, c.host_ifname)]
        assert len(sends) == len(frames) and {s.port for s in sends} == {w.host_ifname}
        got = whole6(sends)
        assert (got.src, got.dst, got[UDP].dport, len(got[UDP].payload)) == (
            c.ip6, w.ip6, 5353, size)
        back = frames6(w, c.ip6, 5353, 5000 + size, size, GW2_MAC, ident=99)
        sends = [s for f in back for s in pair.send("node-2", f, w.host_ifname)]
        assert {s.port for s in sends} == {c.host_ifname}
        got = whole6(sends)
        assert (got.src, got[UDP].sport, got[UDP].dport) == (VIP6, 53, 5000 + size)
    assert not pair.drops
    assert not pair.dps["node-1"].frags and not pair.dps["node-2"].frags


def _with_policy(text: str):
    st = make_dual(make_state())
    cfg = load_config_text(BLOG_CLUSTER + text, "t.yaml")
    st.policies = {p.key: p for p in cfg.network_policies}
    c = pod(st, "client")
    c.pod = dataclasses.replace(c.pod, labels={"role": "client"})
    return st


def test_a_policy_by_port_judges_every_fragment_by_the_first():
    # allowed by port (dns/UDP): every fragment passes, the later ones on the first's verdict
    st = _with_policy(DNS_FROM_CLIENT)
    pair = Pair6(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    frames = frames6(c, w.ip6, 5000, 5353, 3000, GW_MAC)
    sends = [s for f in frames for s in pair.send("node-1", f, c.host_ifname)]
    assert len(sends) == len(frames) and not [d for d in pair.drops if isinstance(d, Drop)]
    [verdict] = pair.drops  # judged once, on the first fragment's port
    assert verdict.allowed and verdict.dport == 5353
    assert len(whole6(sends)[UDP].payload) == 3000
    # only http allowed: the first fragment is denied by port, the others meet no entry and
    # are judged port-less, so denied too: nothing of the datagram arrives
    st = _with_policy(WEB_FROM_CLIENT)
    pair = Pair6(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    frames = frames6(c, w.ip6, 5000, 5353, 3000, GW_MAC)
    assert [s for f in frames for s in pair.send("node-1", f, c.host_ifname)] == []
    reasons = [d.reason for d in pair.drops if isinstance(d, Drop)]
    assert reasons == [DropReason.POLICY_DENIED] * len(frames)


def test_ipv6_fragment_table_is_bounded_and_expires():
    st = dual_state()
    dp, c = datapath6(st, "node-1"), pod(st, "client")
    first = bytearray(frames6(c, VIP6, 5000, 53, 3000, GW_MAC)[0])
    for ident in range(FRAG_MAX + 10):  # first fragments of datagrams never completed
        first[58:62] = ident.to_bytes(4, "big")  # the Fragment header's identification
        dp.process(bytes(first), c.host_ifname, 1.0)
    assert len(dp.frags) == FRAG_MAX
    assert all(len(k) == 36 for k in dp.frags)  # (src, dst, identification)
    dp.expire(1.0 + FRAG_TIMEOUT)
    assert not dp.frags


def test_a_short_fragment_header_is_invalid():
    st = dual_state()
    dp, c = datapath6(st, "node-1"), pod(st, "client")
    bad = Ether(src=c.mac, dst=GW_MAC) / IPv6(src=c.ip6, dst=VIP6, nh=44) / b"\x11\0\0"
    [d] = dp.process(bytes(bad), c.host_ifname, 1.0)
    assert d.reason is DropReason.INVALID_PACKET
