"""A fake upstream DNS server for tests: `python dns_upstream.py [PORT]` inside a pod.

Answers every A question with ANSWER_IP (TTL 60, not authoritative, RA set), anything else with
NOERROR/NODATA, so a test can tell a forwarded answer from one emunet made itself. Over UDP and
over TCP (RFC 7766 length prefix); TCP answers carry TCP_ANSWER_IP instead, so a test can tell
which transport the query came upstream on.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading

ANSWER_IP = "192.0.2.44"
TCP_ANSWER_IP = "192.0.2.45"
HEADER = struct.Struct("!6H")  # RFC 1035 4.1.1


def answer(query: bytes, ip: str = ANSWER_IP) -> bytes | None:
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
    rr = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(ip)
    return HEADER.pack(ident, rflags, 1, 1, 0, 0) + question + rr


def serve_tcp(port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(16)
    while True:
        conn, _ = srv.accept()
        with conn:
            try:
                conn.settimeout(5)
                n = struct.unpack("!H", conn.recv(2, socket.MSG_WAITALL))[0]
                out = answer(conn.recv(n, socket.MSG_WAITALL), TCP_ANSWER_IP)
                if out is not None:
                    conn.sendall(struct.pack("!H", len(out)) + out)
            except (OSError, IndexError, struct.error):
                pass


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 53
    threading.Thread(target=serve_tcp, args=(port,), daemon=True).start()
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
