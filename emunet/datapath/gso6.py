"""TCP over IPv6 segmentation and coalescing (dual-stack offloads). Pure.

The IPv6 halves of emunet.datapath.gso's `segment_tcp_iov` and `coalesce_tcp` (which call
these for an IPv6 frame), for TCP right behind the fixed 40-byte header (RFC 8200 §3; a pod's
stack puts no extension header on TCP): per segment only the payload length and the TCP seq,
flags and checksum change. IPv6 has no header checksum; the TCP checksum covers the IPv6
pseudo-header (§8.1: source, destination, upper-layer length, next header). Coalescing follows
Linux's GRO as for IPv4 (tcp6_gro_receive -> tcp_gro_receive): in-order segments of one flow,
identical headers but for the payload length, seq, checksum and PSH, each checksum verified.
"""

from __future__ import annotations

import struct

from emunet.datapath.csum import mod_ffff, ones
from emunet.packets import ETH_LEN, PROTO_TCP

IP6_LEN = 40
ETHERTYPE_IPV6 = b"\x86\xdd"
_FIN_PSH, _CWR = 0x09, 0x80
_TCP_ACK, _TCP_PSH = 0x10, 0x08


def segment_tcp6(buf: bytes, off: int, mss: int) -> list[tuple[bytes, memoryview]]:
    """`gso.segment_tcp_iov` for TCP over IPv6: per segment the payload length and the TCP seq,
    flags and checksum (over the IPv6 pseudo-header: addresses, length, next header)."""
    ip = off + ETH_LEN
    l4 = ip + IP6_LEN
    thl = (buf[l4 + 12] >> 4) * 4
    data = l4 + thl
    end = min(len(buf), l4 + ((buf[ip + 4] << 8) | buf[ip + 5]))
    if mss <= 0 or end - data <= mss:
        mss = max(1, end - data)
    head, mid = buf[:ip + 4], buf[ip + 6:l4 + 4]  # version..flow label; next header..ports
    ackoff, win, tail = buf[l4 + 8:l4 + 13], buf[l4 + 14:l4 + 16], buf[l4 + 18:data]
    hdr = struct.Struct(f"!{ip + 4}sH{l4 + 4 - ip - 6}sI5sB2sH{thl - 18}s")
    tcp_base = (ones(buf[ip + 8:l4]) + PROTO_TCP + thl + ones(buf[l4:l4 + 4]) + ones(ackoff)
                + ones(win) + ones(tail))
    seq = int.from_bytes(buf[l4 + 4:l4 + 8], "big")
    flags = buf[l4 + 13]
    mv = memoryview(buf)
    pack, frombytes = hdr.pack, int.from_bytes
    out = []
    pos = data
    while pos < end:
        n = min(mss, end - pos)
        f = flags if pos + n >= end else flags & ~_FIN_PSH
        if pos != data:
            f &= ~_CWR
        payload = mv[pos:pos + n]
        x = frombytes(payload, "big")
        r = mod_ffff(tcp_base + n + seq + f + (x << 8 if n & 1 else x))
        out.append((pack(head, thl + n, mid, seq, ackoff, f, win, 0xFFFF - r if r else 0,
                         tail), payload))
        seq = (seq + n) & 0xFFFFFFFF
        pos += n
    return out


def _segment_info6(d: bytes, off: int) -> tuple[int, int, int] | None:
    """(l4 offset, data offset, end) of a plain TCP-over-IPv6 segment (TCP the next header,
    ACK with at most PSH, no urgent data) whose checksum verifies; None otherwise."""
    ip = off + ETH_LEN
    if len(d) < ip + IP6_LEN + 20 or d[off + 12:ip] != ETHERTYPE_IPV6 or d[ip] >> 4 != 6 \
            or d[ip + 6] != PROTO_TCP:
        return None
    l4 = ip + IP6_LEN
    end = l4 + ((d[ip + 4] << 8) | d[ip + 5])
    thl = (d[l4 + 12] >> 4) * 4
    if end != len(d) or thl < 20 or l4 + thl >= end or d[l4 + 13] & ~_TCP_PSH != _TCP_ACK \
            or d[l4 + 18] or d[l4 + 19]:
        return None
    if mod_ffff(ones(d[ip + 8:l4]) + PROTO_TCP + end - l4 + ones(memoryview(d)[l4:end])):
        return None  # a bad checksum: never merged (GRO validates before merging)
    return l4, l4 + thl, end


def coalesce_run6(datagrams: list[bytes], i: int, off: int) -> tuple[bytes, int, int]:
    """The run of segments starting at datagrams[i] merged into one (GRO): (datagram,
    gso_size, index after the run); gso_size 0 when datagrams[i] goes on as it came. The
    merged TCP checksum is left stale (the agent sends it as CHECKSUM_PARTIAL)."""
    d = datagrams[i]
    info = _segment_info6(d, off)
    if info is None:
        return d, 0, i + 1
    l4, data, end = info
    size = end - data
    ip = off + ETH_LEN
    # version..flow label; next header..ports | seq | ack+offset | flags | window | options
    hdr = struct.Struct(f"!{ip + 4}s2x{l4 + 4 - ip - 6}sI5sB2s2x{data - l4 - 18}s")
    unpack = hdr.unpack_from
    k = unpack(d)
    same, rest = k[:2], k[3] + k[5] + k[6]
    seq = (k[2] + size) & 0xFFFFFFFF
    base = ones(d[ip + 8:l4]) + PROTO_TCP
    payloads = [memoryview(d)[data:end]]
    total = end - l4  # the payload length field: TCP header and data
    psh = k[4] & _TCP_PSH
    j, n = i + 1, len(datagrams)
    while j < n and not psh:
        e = datagrams[j]
        esize = len(e) - data
        if esize <= 0 or esize > size or total + esize > 0xFFFF \
                or ((e[ip + 4] << 8) | e[ip + 5]) != len(e) - l4:
            break
        t = unpack(e)
        if t[:2] != same or t[2] != seq or t[4] & ~_TCP_PSH != _TCP_ACK \
                or t[3] + t[5] + t[6] != rest:
            break
        x = int.from_bytes(memoryview(e)[l4:], "big")
        if mod_ffff(base + len(e) - l4 + (x << 8 if esize & 1 else x)):
            break  # a bad checksum: never merged
        payloads.append(memoryview(e)[data:])
        total += esize
        seq = (seq + esize) & 0xFFFFFFFF
        psh = t[4] & _TCP_PSH
        j += 1
        if esize < size:
            break  # a short segment ends a GSO run
    if len(payloads) == 1:
        return d, 0, i + 1
    head = bytearray(d[:data])
    head[ip + 4:ip + 6] = total.to_bytes(2, "big")
    head[l4 + 13] |= psh
    return b"".join((head, *payloads)), size, j
