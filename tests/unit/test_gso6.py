"""TCP over IPv6 segmentation (dual-stack offloads): segments checked against Scapy's own
checksums, the vnet header and the CHECKSUM_PARTIAL pseudo-header sum."""

from __future__ import annotations

import os

import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from emunet import packets as pk
from emunet.datapath import gso

SRC6, DST6 = "2001:cafe:42:1::5", "2001:cafe:42:2::7"
VX = pk.vxlan_header(1)


def super_frame6(payload: bytes, flags: str = "PA", seq: int = 1000) -> bytes:
    pkt = (Ether(src="aa:aa:aa:aa:aa:aa", dst="bb:bb:bb:bb:bb:bb")
           / IPv6(src=SRC6, dst=DST6, hlim=64, fl=0x12345)
           / TCP(sport=1234, dport=5201, seq=seq, ack=77, flags=flags, window=500,
                 options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]) / payload)
    return bytes(pkt)


def scapy_valid(frame: bytes) -> bool:
    """Scapy's checksum of the segment as it is, recomputed from scratch, equals the one sent."""
    pkt = Ether(frame)
    sent = pkt[TCP].chksum
    del pkt[TCP].chksum
    del pkt[IPv6].plen
    again = Ether(bytes(pkt))
    return again[TCP].chksum == sent and again[IPv6].plen == len(frame) - 54


@pytest.mark.parametrize("size", [1, 1377, 1378, 1379, 5001, 64000])
def test_ipv6_segments_are_standard_frames_with_checksums(size):
    payload = os.urandom(size)
    frame = super_frame6(payload, seq=0xFFFFFF00)
    segs = gso.segment_tcp(VX + frame, 8, 1378)
    assert len(segs) == -(-size // 1378)
    for i, s in enumerate(segs):
        assert s[:8] == VX and s[8:22] == frame[:14]
        assert s[8 + 14:8 + 18] == frame[14:18]  # version, traffic class, flow label kept
        assert s[8 + 20:8 + 54] == frame[20:54]  # next header, hop limit, addresses
        assert scapy_valid(s[8:]) and len(s) <= 8 + 14 + 1450
        assert Ether(s[8:])[TCP].seq == (0xFFFFFF00 + 1378 * i) & 0xFFFFFFFF
    flags = [Ether(s[8:])[TCP].flags for s in segs]
    assert flags[-1] == "PA" and all(f == "A" for f in flags[:-1])
    assert b"".join(bytes(Ether(s[8:])[TCP].payload) for s in segs) == payload


def test_ipv6_cwr_on_first_segment_fin_on_last_only():
    segs = gso.segment_tcp(super_frame6(os.urandom(3000), flags="CAF"), 0, 1000)
    assert [s[54 + 13] for s in segs] == [0x90, 0x10, 0x11]


def test_ipv6_partial_csum_and_vnet_header():
    frame = super_frame6(os.urandom(3000))
    part = int.from_bytes(gso.partial_csum6(frame, 14), "big")
    pseudo = (gso.ones(frame[22:54]) + len(frame) - 54 + 6) % 0xFFFF
    assert part == pseudo
    # the sum a kernel finishing CHECKSUM_PARTIAL adds to: total with the field = the field's
    # value, so filling the field with ~(sum of the segment + part) gives a valid checksum
    buf = bytearray(frame)
    buf[54 + 16:54 + 18] = gso.partial_csum6(frame, 14)
    c = gso.fold(gso.ones(bytes(buf[54:])))
    buf[54 + 16:54 + 18] = c.to_bytes(2, "big")
    assert scapy_valid(bytes(buf))
    hdr = gso.VNET.unpack(gso.vnet_tcp6(frame, 14, 1378))
    assert hdr == (1, gso.GSO_TCPV6, 54 + 32, 1378, 54, 16)


@pytest.mark.parametrize("size", [20000, 4135, 1379])
def test_ipv6_coalesce_inverts_segmentation(size):
    frame = super_frame6(os.urandom(size))
    segs = gso.segment_tcp(VX + frame, 8, 1378)
    [(merged, gso_size)] = gso.coalesce_tcp(segs, 8)
    assert gso_size == 1378
    m = merged[8:]
    assert m[:54] == frame[:54]  # the same IPv6 header, payload length of the whole
    assert m[54:70] == frame[54:70] and m[72:] == frame[72:]  # all but the TCP checksum


def test_ipv6_bad_checksum_other_flow_and_gaps_are_never_merged():
    a = gso.segment_tcp(VX + super_frame6(os.urandom(1378 * 4)), 8, 1378)
    bad = bytearray(a[1])
    bad[-1] ^= 0xFF
    out = gso.coalesce_tcp([a[0], bytes(bad), a[2], a[3]], 8)
    assert [g for _, g in out] == [0, 0, 1378]  # a[0] alone, the bad one alone, a[2]+a[3]
    other = gso.segment_tcp(VX + super_frame6(os.urandom(1378 * 2), seq=5), 8, 1378)
    assert [g for _, g in gso.coalesce_tcp([a[0], other[0], a[1]], 8)] == [0, 0, 0]
    assert [g for _, g in gso.coalesce_tcp([a[0], a[2]], 8)] == [0, 0]  # a hole


def test_ipv4_and_ipv6_runs_coalesce_side_by_side():
    from tests.unit.test_gso import super_frame
    v4 = gso.segment_tcp(VX + super_frame(os.urandom(1398 * 3)), 8, 1398)
    v6 = gso.segment_tcp(VX + super_frame6(os.urandom(1378 * 3)), 8, 1378)
    out = gso.coalesce_tcp(v4 + v6, 8)
    assert [g for _, g in out] == [1398, 1378]
    assert len(out[1][0]) == 8 + 54 + 32 + 1378 * 3
