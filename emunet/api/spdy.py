"""SPDY/3.1 framing: bytes to frames and frames to bytes, with the header blocks' zlib streams.

Pure (no I/O): `Codec.feed(bytes)` returns the whole frames received so far and keeps the rest
(a frame may arrive in pieces, e.g. spread over WebSocket messages); `Codec.encode(frame)` gives
the bytes of one frame. The layout is the one of the SPDY Protocol draft 3 (section 2.2 frame
header, 2.6 control frames) with draft 3.1's session-wide WINDOW_UPDATE (stream 0). Header
blocks (2.6.10) are zlib streams, one per direction for the connection's lifetime, seeded with
the dictionary of section 2.6.10.1 (built below from its strings, 1423 bytes). kubectl and the
kubelet speak this for port-forward and for exec before WebSocket (k8s.io/apimachinery
pkg/util/httpstream/spdy on moby/spdystream).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS = 1, 2, 3, 4
PING, GOAWAY, HEADERS, WINDOW_UPDATE = 6, 7, 8, 9
FLAG_FIN, FLAG_UNIDIRECTIONAL = 0x01, 0x02
# RST_STREAM status codes (draft 3 section 2.6.3)
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, UNSUPPORTED_VERSION = 1, 2, 3, 4
CANCEL, INTERNAL_ERROR, FLOW_CONTROL_ERROR, STREAM_IN_USE = 5, 6, 7, 8
STREAM_ALREADY_CLOSED, FRAME_TOO_LARGE = 9, 11
# SETTINGS ids (2.6.4) of interest; GOAWAY status codes (2.6.6)
SETTINGS_INITIAL_WINDOW_SIZE = 7
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR, GOAWAY_INTERNAL_ERROR = 0, 1, 2
INITIAL_WINDOW = 64 * 1024  # both the stream and the session windows (draft 3.1 2.6.8)
MAX_HEADER_BLOCK = 256 * 1024  # inflated header bytes accepted per frame (a zlib bomb is an error)
_STREAM_MASK = 0x7FFFFFFF

# Draft 3 section 2.6.10.1: length-prefixed header names and values, then a run of common
# status codes, dates and values with no prefixes.
_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
    "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization",
    "cache-control", "connection", "content-base", "content-encoding", "content-language",
    "content-length", "content-location", "content-md5", "content-range", "content-type",
    "date", "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since",
    "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
    "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
    "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent",
    "vary", "via", "warning", "www-authenticate", "method", "get", "status", "200 OK",
    "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin")
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
    "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
    "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
    "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec"
    " 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,"
    "image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,public"
    "privatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")
DICTIONARY = (b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS)
              + _TAIL.encode())


class ProtocolError(Exception):
    """The peer broke the framing (the session cannot go on: GOAWAY PROTOCOL_ERROR)."""


@dataclass(frozen=True)
class Data:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: dict[str, str]
    associated: int = 0
    priority: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: dict[str, str] = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    values: dict[int, int]  # id -> value (per-entry flags are not kept)
    clear: bool = False


@dataclass(frozen=True)
class Ping:
    id: int


@dataclass(frozen=True)
class GoAway:
    last_good: int
    status: int = GOAWAY_OK


@dataclass(frozen=True)
class Headers:
    stream_id: int
    headers: dict[str, str]
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int  # 0: the session's window (SPDY/3.1)
    delta: int


@dataclass(frozen=True)
class Unknown:
    """A control frame of a type this codec does not know: ignored, as draft 3 2.2.1 says."""

    type: int


Frame = (Data | SynStream | SynReply | RstStream | Settings | Ping | GoAway | Headers
         | WindowUpdate | Unknown)


def pack_headers(headers: dict[str, str]) -> bytes:
    """The uncompressed name/value block (2.6.10): counts and lengths are 32-bit."""
    out = [struct.pack(">I", len(headers))]
    for name, value in headers.items():
        n, v = name.lower().encode(), value.encode()
        out += [struct.pack(">I", len(n)), n, struct.pack(">I", len(v)), v]
    return b"".join(out)


def unpack_headers(raw: bytes) -> dict[str, str]:
    try:
        (count,), pos, out = struct.unpack_from(">I", raw), 4, {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", raw, pos)
            name = raw[pos + 4:pos + 4 + n]
            pos += 4 + n
            (v,) = struct.unpack_from(">I", raw, pos)
            value = raw[pos + 4:pos + 4 + v]
            pos += 4 + v
            if len(name) != n or len(value) != v or not name:
                raise ProtocolError("header block: truncated name or value")
            out[name.decode("latin-1")] = value.decode("latin-1")
    except struct.error:
        raise ProtocolError("header block: truncated") from None
    if pos != len(raw):
        raise ProtocolError("header block: trailing bytes")
    return out


class Codec:
    """One side of one SPDY connection: parses what it is fed, encodes what it sends. Each
    direction has its own zlib stream for the connection's life (draft 3 2.6.10.1), so frames
    must be encoded in the order they are sent and fed in the order they arrive."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 9,
                                         zlib.Z_DEFAULT_STRATEGY, DICTIONARY)

    def compress(self, headers: dict[str, str]) -> bytes:
        return self._deflate.compress(pack_headers(headers)) + self._deflate.flush(
            zlib.Z_SYNC_FLUSH)

    def decompress(self, block: bytes) -> dict[str, str]:
        try:
            raw = self._inflate.decompress(block, MAX_HEADER_BLOCK)
        except zlib.error as e:
            raise ProtocolError(f"header block: {e}") from None
        if self._inflate.unconsumed_tail:
            raise ProtocolError(f"header block larger than {MAX_HEADER_BLOCK} bytes")
        return unpack_headers(raw)

    def feed(self, data: bytes) -> list[Frame]:
        """The frames completed by `data` (an incomplete one stays buffered)."""
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= 8:
            (length,) = struct.unpack_from(">I", self._buf, 4)
            flags, length = length >> 24, length & 0xFFFFFF
            if len(self._buf) < 8 + length:
                break
            head, body = bytes(self._buf[:8]), bytes(self._buf[8:8 + length])
            del self._buf[:8 + length]
            frames.append(self._frame(head, flags, body))
        return frames

    def _frame(self, head: bytes, flags: int, body: bytes) -> Frame:
        (word,) = struct.unpack_from(">I", head)
        if not word & 0x80000000:
            return Data(word & _STREAM_MASK, body, bool(flags & FLAG_FIN))
        version, kind = (word >> 16) & 0x7FFF, word & 0xFFFF
        if version != VERSION:
            raise ProtocolError(f"SPDY version {version} (only 3 is spoken)")
        fin = bool(flags & FLAG_FIN)
        try:
            if kind == SYN_STREAM:
                sid, assoc, pri = struct.unpack_from(">IIB", body)
                return SynStream(sid & _STREAM_MASK, self.decompress(body[10:]),
                                 assoc & _STREAM_MASK, pri >> 5, fin,
                                 bool(flags & FLAG_UNIDIRECTIONAL))
            if kind in (SYN_REPLY, HEADERS):
                (sid,) = struct.unpack_from(">I", body)
                cls = SynReply if kind == SYN_REPLY else Headers
                return cls(sid & _STREAM_MASK, self.decompress(body[4:]), fin)
            if kind == RST_STREAM:
                sid, st = struct.unpack_from(">II", body)
                return RstStream(sid & _STREAM_MASK, st)
            if kind == SETTINGS:
                (n,) = struct.unpack_from(">I", body)
                values = {}
                for i in range(n):
                    ident, value = struct.unpack_from(">II", body, 4 + 8 * i)
                    values[ident & 0xFFFFFF] = value
                return Settings(values, bool(flags & 0x01))
            if kind == PING:
                return Ping(struct.unpack_from(">I", body)[0])
            if kind == GOAWAY:
                last, st = struct.unpack_from(">II", body)
                return GoAway(last & _STREAM_MASK, st)
            if kind == WINDOW_UPDATE:
                sid, delta = struct.unpack_from(">II", body)
                return WindowUpdate(sid & _STREAM_MASK, delta & _STREAM_MASK)
        except struct.error:
            raise ProtocolError(f"control frame type {kind}: {len(body)} bytes is too short"
                                ) from None
        return Unknown(kind)

    def encode(self, f: Frame) -> bytes:
        if isinstance(f, Data):
            if len(f.data) > 0xFFFFFF:
                raise ValueError("a data frame carries at most 16 MiB - 1")
            return struct.pack(">II", f.stream_id & _STREAM_MASK,
                               (FLAG_FIN if f.fin else 0) << 24 | len(f.data)) + f.data
        if isinstance(f, SynStream):
            body = struct.pack(">IIBB", f.stream_id, f.associated, (f.priority & 7) << 5, 0)
            body += self.compress(f.headers)
            flags = (FLAG_FIN if f.fin else 0) | (FLAG_UNIDIRECTIONAL if f.unidirectional
                                                  else 0)
            return _control(SYN_STREAM, flags, body)
        if isinstance(f, (SynReply, Headers)):
            body = struct.pack(">I", f.stream_id) + self.compress(f.headers)
            kind = SYN_REPLY if isinstance(f, SynReply) else HEADERS
            return _control(kind, FLAG_FIN if f.fin else 0, body)
        if isinstance(f, RstStream):
            return _control(RST_STREAM, 0, struct.pack(">II", f.stream_id, f.status))
        if isinstance(f, Settings):
            body = struct.pack(">I", len(f.values)) + b"".join(
                struct.pack(">II", ident & 0xFFFFFF, v) for ident, v in f.values.items())
            return _control(SETTINGS, 0x01 if f.clear else 0, body)
        if isinstance(f, Ping):
            return _control(PING, 0, struct.pack(">I", f.id))
        if isinstance(f, GoAway):
            return _control(GOAWAY, 0, struct.pack(">II", f.last_good, f.status))
        if isinstance(f, WindowUpdate):
            return _control(WINDOW_UPDATE, 0, struct.pack(">II", f.stream_id, f.delta))
        raise ValueError(f"cannot encode {f!r}")


def _control(kind: int, flags: int, body: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, kind, flags << 24 | len(body)) + body
