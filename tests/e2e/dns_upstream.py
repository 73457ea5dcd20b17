"""A fake upstream DNS server for tests: `python dns_upstream.py [PORT]` inside a pod.

Answers every A question with ANSWER_IP (TTL 60, not authoritative, RA set), anything else with
NOERROR/NODATA, so a test can tell a forwarded answer from one emunet made itself.
"""

from __future__ import annotations

import socket
import struct
import sys

ANSWER_IP = "192.0.2.44"
HEADER = struct.Struct("!6H")  # RFC 1035 4.1.1


def answer(query: bytes) -> bytes | None:
    if len(query) < 12:
        return None
    ident, flags, qd, *_ = HEADER.unpack_from(query)
    if flags & 0x8000 or qd != 1:
        return None
    off = 12
    while query[off] != 0:  # the question name (no compression in a question)
        off += 1 + query[off]
    end = off + 5
    qtype = struct.unpack_from("!H", query, off + 1)[0]
    question = query[12:end]
    rflags = 0x8000 | (flags & 0x0100) | 0x0080  # QR, RD copied, RA
    if qtype != 1:
        return HEADER.pack(ident, rflags, 1, 0, 0, 0) + question
    rr = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(ANSWER_IP)
    return HEADER.pack(ident, rflags, 1, 1, 0, 0) + question + rr


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 53
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    while True:
        data, addr = sock.recvfrom(4096)
        try:
            out = answer(data)
        except (IndexError, struct.error):
            out = None
        if out is not None:
            sock.sendto(out, addr)


if __name__ == "__main__":
    main()
