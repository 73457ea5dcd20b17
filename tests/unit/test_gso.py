"""TCP segmentation/coalescing for the offload path (emunet.datapath.gso): every segment is a
standard frame with correct checksums, and coalescing is the exact inverse (GRO semantics)."""

from __future__ import annotations

import os

import pytest

from bench import datapath
from emunet import model
from emunet import packets as pk
from emunet.config import ConfigError, load_config_text
from emunet.datapath import gso

SRC, DST = bytes([10, 42, 0, 5]), bytes([10, 42, 1, 7])
MACS = b"\xaa" * 6 + b"\xbb" * 6
VX = pk.vxlan_header(1)


def super_frame(payload: bytes, flags: int = pk.TCP_ACK | 0x08, seq: int = 1000,
                opts: bytes = b"\x01\x01\x08\x0a" + bytes(range(8)), ident: int = 100) -> bytes:
    th = bytearray(pk.TCP.pack(1234, 5201, seq, 77, (5 + len(opts) // 4) << 4, flags, 500, 0,
                               0) + opts)
    th[16:18] = pk.U16.pack(pk.checksum(bytes(th) + payload,
                                        pk.pseudo_sum(SRC, DST, 6, len(th) + len(payload))))
    return MACS + b"\x08\x00" + pk.ipv4_header(SRC, DST, 6, len(th) + len(payload),
                                               ident=ident) + bytes(th) + payload


def valid(frame: bytes) -> bool:
    end = 14 + pk.U16.unpack_from(frame, 16)[0]
    return (end == len(frame) and pk.checksum(frame[14:34]) == 0
            and pk.checksum(frame[34:end], pk.pseudo_sum(SRC, DST, 6, end - 34)) == 0)


@pytest.mark.parametrize("size", [1, 1397, 1398, 1399, 5000, 64000])
def test_segments_are_standard_frames_with_checksums(size):
    payload = os.urandom(size)
    segs = gso.segment_tcp(VX + super_frame(payload, seq=0xFFFFFF00), 8, 1398)
    assert len(segs) == -(-size // 1398)
    for i, s in enumerate(segs):
        assert s[:8] == VX and s[8:22] == MACS + b"\x08\x00"
        assert valid(s[8:]) and len(s) <= 8 + 14 + 1450
        assert pk.U16.unpack_from(s, 8 + 18)[0] == 100 + i  # IP ID increments, as TSO does
        assert pk.TCP.unpack_from(s, 8 + 34)[2] == (0xFFFFFF00 + 1398 * i) & 0xFFFFFFFF
    flags = [s[8 + 34 + 13] for s in segs]
    assert flags[-1] == pk.TCP_ACK | 0x08 and all(f == pk.TCP_ACK for f in flags[:-1])
    assert b"".join(s[8 + 34 + 32:] for s in segs) == payload


def test_cwr_on_first_segment_fin_on_last_only():
    segs = gso.segment_tcp(super_frame(os.urandom(3000), flags=0x80 | 0x10 | 0x01), 0, 1000)
    assert [s[34 + 13] for s in segs] == [0x90, 0x10, 0x11]


@pytest.mark.parametrize("size", [20000, 4195, 1399])
def test_coalesce_inverts_segmentation(size):
    frame = super_frame(os.urandom(size))
    segs = gso.segment_tcp(VX + frame, 8, 1398)
    [(merged, size)] = gso.coalesce_tcp(segs, 8)
    assert size == 1398
    m = merged[8:]
    assert m[:34] == frame[:24] + m[24:26] + frame[26:34]  # same IP header, fresh checksum
    assert pk.checksum(m[14:34]) == 0
    assert m[34:50] == frame[34:50] and m[52:] == frame[52:]  # all but the TCP checksum


def test_bad_checksum_other_flow_and_gaps_are_never_merged():
    a = gso.segment_tcp(VX + super_frame(os.urandom(1398 * 4)), 8, 1398)
    bad = bytearray(a[1])
    bad[-1] ^= 0xFF
    out = gso.coalesce_tcp([a[0], bytes(bad), a[2], a[3]], 8)
    assert [g for _, g in out] == [0, 0, 1398]  # a[0] alone, the bad one alone, a[2]+a[3]
    other = gso.segment_tcp(VX + super_frame(os.urandom(1398 * 2), seq=5), 8, 1398)
    out = gso.coalesce_tcp([a[0], other[0], a[1]], 8)
    assert [g for _, g in out] == [0, 0, 0]
    out = gso.coalesce_tcp([a[0], a[2]], 8)  # a hole in the sequence
    assert [g for _, g in out] == [0, 0]
    syn = bytearray(a[0])
    syn[8 + 34 + 13] = pk.TCP_SYN
    assert gso.coalesce_tcp([bytes(syn)], 8) == [(bytes(syn), 0)]


def test_gso_batches_equal_sizes_bounded():
    grams = [b"x" * 1472] * 100 + [b"y" * 700, b"z" * 1472]
    batches = gso.gso_batches(grams)
    for b in batches:
        assert all(len(g) == len(b[0]) for g in b[:-1]) and len(b[-1]) <= len(b[0])
        assert len(b) <= gso.MAX_DATAGRAMS and sum(map(len, b)) <= gso.MAX_DATAGRAM_BYTES
    assert [g for b in batches for g in b] == grams


def test_partial_csum_and_vnet_header():
    frame = super_frame(os.urandom(3000))
    part = int.from_bytes(gso.partial_csum(frame, 14), "big")
    assert part == pk.pseudo_sum(SRC, DST, 6, len(frame) - 34)
    flags, gso_type, hdr_len, size, start, off = gso.VNET.unpack(gso.vnet_tcp4(frame, 14, 1398))
    assert (flags, gso_type, hdr_len, size, start, off) == (1, 1, 66, 1398, 34, 16)


def test_spec_offloads_parses_defaults_on_and_is_checked():
    assert load_config_text(datapath.config("emunet"), "b.yaml").cluster.offloads is True
    off = load_config_text(datapath.config("emunet", offloads=False), "b.yaml")
    assert off.cluster.offloads is False
    bad = datapath.config("emunet").replace("spec:\n", "spec:\n  offloads: sometimes\n", 1)
    with pytest.raises(ConfigError, match="offloads.*true or false"):
        load_config_text(bad, "b.yaml")


def test_bench_busy_poll_column_config():
    """bench.datapath --busy-poll-off builds the same cluster with spec.busyPoll: 0."""
    on = load_config_text(datapath.config("emunet"), "b.yaml")
    assert on.cluster.busy_poll_us == model.DEFAULT_BUSY_POLL_US
    off = load_config_text(datapath.config("emunet", busy_poll=0), "b.yaml")
    assert off.cluster.busy_poll_us == 0
