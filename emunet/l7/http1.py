"""HTTP/1.1 message heads and body framing, for the L7 proxy. Pure (bytes in, values out).

Only what a transparent policy proxy needs (RFC 9112): parse a request or status line and its
header fields, and decide how the body that follows is delimited (§6.3: chunked, else
Content-Length, else none for requests / until close for responses). Bodies themselves are
relayed by the proxy as they arrive, never buffered whole.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass, field

from emunet.errors import EmunetError

MAX_HEAD = 64 * 1024  # Envoy's default max_request_headers_kb is 60
CHUNKED, LENGTH, NONE, UNTIL_CLOSE = "chunked", "length", "none", "until-close"

# Cilium's answer to a request its L7 policy denies (Envoy local reply; body "Access denied\r\n",
# content-length 15, content-type text/plain, server envoy: see cilium/cilium#13280).
DENIED_BODY = b"Access denied\r\n"


class HTTPError(EmunetError, ValueError):
    """A malformed message: the proxy answers 400 and closes, as Envoy does."""


@dataclass
class Head:
    """A parsed request or response head. `target` is the request-target as sent (origin form:
    path and query), which is what Envoy's `:path` holds and Cilium's path regex sees."""

    start: tuple[str, str, str]  # (method, target, version) or (version, status, reason)
    headers: list[tuple[str, str]] = field(default_factory=list)
    raw: bytes = b""

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def header_map(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in self.headers:
            out.setdefault(k.lower(), []).append(v)
        return out

    def keep_alive(self) -> bool:
        """RFC 9112 §9.3: HTTP/1.1 persists unless `close`; 1.0 only with `keep-alive`."""
        tokens = {t.strip().lower() for v in self.get_all("connection") for t in v.split(",")}
        version = self.start[0] if self.start[0].startswith("HTTP/") else self.start[2]
        if "close" in tokens:
            return False
        return version == "HTTP/1.1" or "keep-alive" in tokens


def parse_head(raw: bytes, request: bool) -> Head:
    """Parse a head ending with an empty line (the terminating CRLF CRLF included)."""
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError as e:  # latin-1 decodes anything; kept for clarity
        raise HTTPError("undecodable head") from e
    lines = text.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) != 3:
        raise HTTPError(f"bad start line {lines[0]!r}")
    if request:
        method, target, version = parts
        if not method.isalpha() or not version.startswith("HTTP/1.") or not target:
            raise HTTPError(f"bad request line {lines[0]!r}")
    elif not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HTTPError(f"bad status line {lines[0]!r}")
    head = Head((parts[0], parts[1], parts[2]), raw=raw)
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HTTPError(f"bad header line {line!r}")  # RFC 9112 §5.1: no space before ':'
        head.headers.append((name, value.strip()))
    return head


def body_framing(head: Head, request: bool, request_method: str = "") -> tuple[str, int]:
    """(kind, length) of the body after `head` (RFC 9112 §6.3)."""
    if not request:
        status = int(head.start[1])
        if request_method == "HEAD" or status < 200 or status in (204, 304):
            return NONE, 0
    te = ",".join(head.get_all("transfer-encoding")).lower()
    if te:
        if te.split(",")[-1].strip() != "chunked":
            if request:
                raise HTTPError("a request body must end with chunked transfer coding")
            return UNTIL_CLOSE, 0
        return CHUNKED, 0
    lengths = {v.strip() for v in head.get_all("content-length")}
    if len(lengths) > 1:
        raise HTTPError("conflicting Content-Length values")
    if lengths:
        value = lengths.pop()
        if not value.isdigit():
            raise HTTPError(f"bad Content-Length {value!r}")
        n = int(value)
        return (LENGTH, n) if n else (NONE, 0)
    return (NONE, 0) if request else (UNTIL_CLOSE, 0)


def chunk_size(line: bytes) -> int:
    """The size in a chunk-size line (extensions after ';' ignored), RFC 9112 §7.1."""
    text = line.split(b";", 1)[0].strip()
    try:
        return int(text, 16)
    except ValueError:
        raise HTTPError(f"bad chunk size {line[:40]!r}") from None


def denied_response(now: float) -> bytes:
    """Cilium's 403 for a request its HTTP rules deny, header for header."""
    return (b"HTTP/1.1 403 Forbidden\r\n"
            b"content-length: " + str(len(DENIED_BODY)).encode() + b"\r\n"
            b"content-type: text/plain\r\n"
            b"date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
            b"server: envoy\r\n\r\n" + DENIED_BODY)


def error_response(status: int, reason: str, now: float) -> bytes:
    body = f"{reason}\r\n".encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-length: {len(body)}\r\n"
            f"content-type: text/plain\r\ndate: {email.utils.formatdate(now, usegmt=True)}\r\n"
            "server: envoy\r\nconnection: close\r\n\r\n").encode() + body
