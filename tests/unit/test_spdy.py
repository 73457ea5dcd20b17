"""The SPDY/3.1 codec (emunet.api.spdy): frames round-trip, header blocks share one zlib stream
per direction, frames split anywhere are reassembled, and a real kubectl's bytes decode."""

from __future__ import annotations

import zlib

import pytest

from emunet.api import spdy

# What kubectl 1.35.2 sent in one `port-forward pod/P 18086:3000` session with two curls
# (recorded from the WebSocket messages the API server received): two request pairs, each
# SYN_STREAM error + FIN, SYN_STREAM data + the HTTP request, then FIN or RST_STREAM CANCEL.
KUBECTL_1_35 = bytes.fromhex(
    "800300010000003e0000000100000000000078f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb"
    "45e01c606c6060c0c0c0c0590489c64c50f2663400000000ffff0000000101000000800300010000001800000"
    "003000000000000c2aa19540e2512d60b000000ffff0000000300000050474554202f6120485454502f312e31"
    "0d0a486f73743a203132372e302e302e313a31383038360d0a557365722d4167656e743a206375726c2f372e"
    "38382e310d0a4163636570743a202a2f2a0d0a0d0a000000030100000080030001000000180000000500000000"
    "000082ea45153524d22900000000ffff0000000501000000800300010000001400000007000000000000a2c06"
    "24300000000ffff0000000700000050474554202f6220485454502f312e310d0a486f73743a203132372e302e"
    "302e313a31383038360d0a557365722d4167656e743a206375726c2f372e38382e310d0a4163636570743a20"
    "2a2f2a0d0a0d0a80030003000000080000000700000005")

FRAMES: list[spdy.Frame] = [
    spdy.SynStream(1, {"streamtype": "error", "port": "80", "requestid": "0"}),
    spdy.SynStream(3, {"streamtype": "data"}, associated=1, priority=7, fin=True,
                   unidirectional=True),
    spdy.SynReply(1, {}),
    spdy.SynReply(3, {"x": "a\x00b"}, fin=True),
    spdy.Headers(3, {"k": "v"}, fin=True),
    spdy.Data(3, b"hello"),
    spdy.Data(3, b"", fin=True),
    spdy.Data(0x7FFFFFFF, bytes(range(256)) * 300),
    spdy.RstStream(7, spdy.CANCEL),
    spdy.Settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20, 4: 100}, clear=True),
    spdy.Ping(1),
    spdy.GoAway(5, spdy.GOAWAY_INTERNAL_ERROR),
    spdy.WindowUpdate(0, 65536),
    spdy.WindowUpdate(3, 0x7FFFFFFF),
]


def test_the_dictionary_is_the_one_kubectl_compresses_with():
    # draft 3 2.6.10.1 gives 1423 bytes; zlib names a preset dictionary by its Adler-32
    # (RFC 1950 DICTID), which is what kubectl's first header block asks for
    assert len(spdy.DICTIONARY) == 1423
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"utf-,*,enq=0.")
    dictid = KUBECTL_1_35[8 + 10 + 2:8 + 10 + 6]
    assert int.from_bytes(dictid, "big") == zlib.adler32(spdy.DICTIONARY)


def test_a_real_kubectl_session_decodes():
    frames = spdy.Codec().feed(KUBECTL_1_35)
    syns = [f for f in frames if isinstance(f, spdy.SynStream)]
    assert [(s.stream_id, s.headers) for s in syns] == [
        (1, {"streamtype": "error", "port": "3000", "requestid": "0"}),
        (3, {"streamtype": "data", "port": "3000", "requestid": "0"}),
        (5, {"streamtype": "error", "port": "3000", "requestid": "1"}),
        (7, {"streamtype": "data", "port": "3000", "requestid": "1"})]
    assert spdy.Data(1, b"", fin=True) in frames
    data = [f for f in frames if isinstance(f, spdy.Data) and f.data]
    assert data[0].stream_id == 3 and data[0].data.startswith(b"GET /a HTTP/1.1\r\n")
    assert frames[-1] == spdy.RstStream(7, spdy.CANCEL)


def test_every_frame_round_trips_through_one_pair_of_codecs():
    sender, receiver = spdy.Codec(), spdy.Codec()
    wire = b"".join(sender.encode(f) for f in FRAMES)
    assert receiver.feed(wire) == FRAMES


def test_frames_split_at_every_byte_are_reassembled():
    # over WebSocket a frame may span messages (and a message hold several frames)
    sender, receiver = spdy.Codec(), spdy.Codec()
    wire = b"".join(sender.encode(f) for f in FRAMES[:8])
    got: list[spdy.Frame] = []
    for i in range(len(wire)):
        got += receiver.feed(wire[i:i + 1])
    assert got == FRAMES[:8]
    assert receiver.feed(b"") == []


def test_header_blocks_share_one_zlib_stream_per_direction():
    sender = spdy.Codec()
    headers = {"streamtype": "data", "port": "8080", "requestid": "12"}
    first = sender.encode(spdy.SynStream(1, headers))
    second = sender.encode(spdy.SynStream(3, headers))
    assert len(second) < len(first)  # the second refers back to the first's bytes
    assert spdy.Codec().feed(first + second)[1].headers == headers
    with pytest.raises(spdy.ProtocolError):  # without the first, the stream makes no sense
        spdy.Codec().feed(second)


def test_unknown_control_frames_are_ignored_and_bad_ones_are_errors():
    unknown = b"\x80\x03\x00\x0a\x00\x00\x00\x02\xab\xcd"  # type 10 (draft 2 NOOP-like)
    assert spdy.Codec().feed(unknown) == [spdy.Unknown(10)]
    with pytest.raises(spdy.ProtocolError, match="version 2"):
        spdy.Codec().feed(b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01")
    with pytest.raises(spdy.ProtocolError, match="too short"):
        spdy.Codec().feed(b"\x80\x03\x00\x03\x00\x00\x00\x04\x00\x00\x00\x01")
    with pytest.raises(spdy.ProtocolError, match="header block"):
        spdy.Codec().feed(b"\x80\x03\x00\x02\x00\x00\x00\x08\x00\x00\x00\x01garb")


def test_a_header_block_that_inflates_too_far_is_refused():
    c = spdy.Codec()
    huge = {"h": "x" * (spdy.MAX_HEADER_BLOCK + 10)}
    with pytest.raises(spdy.ProtocolError, match="larger than"):
        spdy.Codec().feed(c.encode(spdy.SynReply(1, huge)))


def test_header_block_layout_is_counted_and_length_prefixed():
    raw = spdy.pack_headers({"Port": "80"})
    assert raw == b"\x00\x00\x00\x01\x00\x00\x00\x04port\x00\x00\x00\x0280"
    assert spdy.unpack_headers(raw) == {"port": "80"}
    with pytest.raises(spdy.ProtocolError):
        spdy.unpack_headers(raw[:-1])
    with pytest.raises(spdy.ProtocolError):
        spdy.unpack_headers(raw + b"x")
