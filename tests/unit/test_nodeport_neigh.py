"""The NodePort neighbour table is bounded and aged (issue 15 §3): a flood of spoofed sources at a
node port keeps it at its cap (it grew by every source before), a legitimate client still gets
its replies during and after the flood, an entry unseen for NEIGH_AGE is gone, and a pod's own
traffic to an address that once was a NodePort client never leaves through eth0."""

from __future__ import annotations

import struct

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from emunet.datapath import Send, nodeport
from tests.unit.pipeline_pair import datapath
from tests.unit.test_datapath_nodeport import ETH0_MAC, NODE1, OUT_IP, OUT_MAC, _state, _syn


def _spoofed(frame: bytes, i: int) -> bytes:
    """The frame from source 100.64.0.0 + i, with its IPv4 header checksum redone."""
    f = bytearray(frame)
    f[26:30] = (0x64400000 + i).to_bytes(4, "big")
    f[24:26] = b"\0\0"
    words = struct.unpack("!10H", bytes(f[14:34]))
    s = sum(words)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    f[24:26] = struct.pack("!H", ~s & 0xFFFF)
    return bytes(f)


def _legit_round_trip(dp, st, sport: int, now: float) -> Send:
    web = st.pods[("blog", "web-0")]
    gw = st.node("node-1")
    [s] = dp.process_nodeport(bytes(_syn(sport=sport)), now)
    assert isinstance(s, Send) and s.port == web.host_ifname
    reply = Ether(src=web.mac, dst=gw.gateway_mac) / IP(src=web.ip, dst=gw.gateway_ip) / \
        TCP(sport=8080, dport=sport, flags="SA", seq=1, ack=1001)
    [r] = dp.process(bytes(reply), web.host_ifname, now + 0.01)
    assert isinstance(r, Send) and r.port == "eth0", r
    return r


def test_a_spoofed_flood_keeps_the_table_at_its_cap_and_clients_still_served():
    st = _state()
    dp = datapath(st, "node-1")
    probe = bytes(Ether(src=OUT_MAC, dst=ETH0_MAC) / IP(src=OUT_IP, dst=NODE1) /
                  UDP(sport=5000, dport=30099) / b"x")  # a port no Service has: rejected
    for i in range(200_000):
        dp.process_nodeport(_spoofed(probe, i), 1.0 + i * 1e-6)
        if i % 50_000 == 0:
            _legit_round_trip(dp, st, 40000 + i // 50_000, 1.0 + i * 1e-6)
    assert len(dp.neigh) == nodeport.NEIGH_MAX
    r = _legit_round_trip(dp, st, 41000, 2.0)
    got = Ether(r.frame)
    assert (got.dst, got[IP].dst, got[IP].src) == (OUT_MAC, OUT_IP, NODE1)


def test_entries_age_out():
    st = _state()
    dp = datapath(st, "node-1")
    _legit_round_trip(dp, st, 40000, 1.0)
    assert len(dp.neigh) == 1
    dp.neigh.learn(b"\x01\x02\x03\x04", b"\0" * 12, 1.0 + nodeport.NEIGH_AGE + 1)
    assert len(dp.neigh) == 1 and dp.neigh.get(bytes([192, 168, 1, 254]), 9e9) is None


def test_pod_traffic_to_a_former_client_address_is_not_sent_out_of_eth0():
    st = _state()
    dp = datapath(st, "node-1")
    _legit_round_trip(dp, st, 40000, 1.0)  # OUT_IP is in the table now
    web, gw = st.pods[("blog", "web-0")], st.node("node-1")
    own = Ether(src=web.mac, dst=gw.gateway_mac) / IP(src=web.ip, dst=OUT_IP) / \
        UDP(sport=1234, dport=9999) / b"hi"
    out = dp.process(bytes(own), web.host_ifname, 1.5)
    assert not any(isinstance(a, Send) and a.port == "eth0" for a in out), out
