"""TCP segmentation and coalescing for the agent's offload path. Pure (bytes in, bytes out).

With TSO/checksum offloads on in the pod veths, AF_PACKET with PACKET_VNET_HDR hands the agent
TCP super-frames (up to 64 KB) with a virtio-net header (virtio spec 1.x §5.1.6, struct
virtio_net_hdr) instead of MTU-sized frames. The wire must stay standard RFC 7348 VXLAN with
inner frames that fit the pod MTU, so:
  - `segment_tcp` cuts a super-frame into MSS-sized segments with complete checksums, as a
    NIC's TSO (or Linux's tcp_gso_segment) would: seq advances, IP ID increments, FIN/PSH only
    on the last segment, CWR only on the first;
  - `coalesce_tcp` does the reverse on the receiving node, as Linux's GRO (tcp_gro_receive)
    does: consecutive in-order segments of one flow with identical headers, each checksum
    verified first, become one super-frame the pod receives with a GSO vnet header.
IPv6 (dual-stack): both for TCP over IPv6 too (emunet.datapath.gso6; gso_type
VIRTIO_NET_HDR_GSO_TCPV6). Checksums: emunet.datapath.csum.
"""

from __future__ import annotations

import struct

from emunet.datapath import gso6
from emunet.datapath.csum import fold, mod_ffff, ones  # noqa: F401 (re-export)
from emunet.packets import ETH_LEN, ETH_TYPE, ETHERTYPE_IP, IPV4_OFF_CSUM, PROTO_TCP

VNET = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_LEN = VNET.size  # 10: no num_buffers (PACKET_VNET_HDR uses the legacy header)
VNET_F_NEEDS_CSUM = 1  # CHECKSUM_PARTIAL: csum_start/csum_offset say where to finish it
GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_ECN = 0, 1, 4, 0x80
_ETHERTYPE_IPV6 = b"\x86\xdd"
_IP6_LEN = 40
VNET_NONE = bytes(VNET_LEN)
MAX_DATAGRAMS = 64  # UDP_MAX_SEGMENTS of older kernels: at most this many per UDP GSO send
MAX_DATAGRAM_BYTES = 65000  # one UDP GSO send carries one IPv4 datagram's worth of payload
_FIN_PSH, _CWR = 0x09, 0x80
_TCP_ACK, _TCP_PSH = 0x10, 0x08


def _pseudo(f: bytes | bytearray | memoryview, ip: int) -> int:
    """Pseudo-header terms without the length (RFC 9293 §3.1): addresses and protocol."""
    return ones(f[ip + 12:ip + 20]) + f[ip + 9]


def ip_checksum(hdr: bytearray | memoryview) -> None:
    """Recompute an IPv4 header's checksum in place."""
    csum = slice(IPV4_OFF_CSUM, IPV4_OFF_CSUM + 2)
    hdr[csum] = b"\0\0"
    hdr[csum] = fold(ones(hdr)).to_bytes(2, "big")


def partial_csum(f: bytes | bytearray | memoryview, ip: int) -> bytes:
    """What a CHECKSUM_PARTIAL TCP/UDP header holds: the folded, non-inverted pseudo-header sum
    over the addresses now in the frame (Linux: ~tcp_v4_check(len, saddr, daddr, 0))."""
    ihl = (f[ip] & 0xF) * 4
    tot = (f[ip + 2] << 8) | f[ip + 3]
    r = (_pseudo(f, ip) + tot - ihl) % 0xFFFF
    return (r or 0xFFFF).to_bytes(2, "big")


def partial_csum6(f: bytes | bytearray | memoryview, ip: int) -> bytes:
    """`partial_csum` for TCP over IPv6 (pseudo-header: RFC 8200 §8.1; Linux's
    ~tcp_v6_check(len, saddr, daddr, 0)): addresses, upper-layer length, next header."""
    plen = (f[ip + 4] << 8) | f[ip + 5]
    r = (ones(f[ip + 8:ip + _IP6_LEN]) + plen + PROTO_TCP) % 0xFFFF
    return (r or 0xFFFF).to_bytes(2, "big")


def vnet_tcp6(f: bytes | bytearray | memoryview, ip: int, gso_size: int) -> bytes:
    """The vnet header handing a TCPv6 super-frame to the kernel for segmentation (GSO)."""
    l4 = ip + _IP6_LEN
    return VNET.pack(VNET_F_NEEDS_CSUM, GSO_TCPV6, l4 + (f[l4 + 12] >> 4) * 4, gso_size, l4, 16)


def vnet_tcp4(f: bytes | bytearray | memoryview, ip: int, gso_size: int) -> bytes:
    """The vnet header handing a TCPv4 super-frame to the kernel for segmentation (GSO)."""
    l4 = ip + (f[ip] & 0xF) * 4
    return VNET.pack(VNET_F_NEEDS_CSUM, GSO_TCPV4, l4 + (f[l4 + 12] >> 4) * 4, gso_size,
                     l4, 16)


def segment_tcp(buf: bytes, off: int, mss: int) -> list[bytes]:
    """Cut the TCPv4 super-frame whose Ethernet header starts at `off` into MSS-sized frames;
    each result keeps `buf[:off]` (the VXLAN header) in front. Checksums are complete."""
    return [h + p for h, p in segment_tcp_iov(buf, off, mss)]


def segment_tcp_iov(buf: bytes, off: int, mss: int) -> list[tuple[bytes, memoryview]]:
    """`segment_tcp` as (headers, payload view) pairs: what a scatter-gather sendmsg takes,
    so no segment is ever copied in Python.

    Per segment only the IP total length, ID and checksum and the TCP sequence number, flags
    and checksum change: both checksums are the constant words' sum (computed once) plus the
    changing ones (mod 0xFFFF, a 32-bit seq counts as its two words), and each header is one
    `struct.pack` of constant slices and the new fields. An IPv6 super-frame: `gso6.segment_tcp6`.
    """
    if buf[off + 12:off + 14] == _ETHERTYPE_IPV6:
        return gso6.segment_tcp6(buf, off, mss)
    ip = off + ETH_LEN
    ihl = (buf[ip] & 0xF) * 4
    l4 = ip + ihl
    thl = (buf[l4 + 12] >> 4) * 4
    data = l4 + thl
    end = min(len(buf), ip + ((buf[ip + 2] << 8) | buf[ip + 3]))
    if mss <= 0 or end - data <= mss:
        mss = max(1, end - data)
    head, frag, addrs = buf[:ip + 2], buf[ip + 6:ip + 10], buf[ip + 12:l4 + 4]
    ackoff, win, tail = buf[l4 + 8:l4 + 13], buf[l4 + 14:l4 + 16], buf[l4 + 18:data]
    hdr = struct.Struct(f"!{ip + 2}sHH4sH{ihl - 12 + 4}sI5sB2sH{thl - 18}s")
    ip_base = ones(buf[ip:ip + 2]) + ones(frag) + ones(buf[ip + 12:l4])
    tcp_base = (_pseudo(buf, ip) + thl + ones(buf[l4:l4 + 4]) + ones(ackoff) + ones(win)
                + ones(tail))
    ident = (buf[ip + 4] << 8) | buf[ip + 5]
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
        tot = ihl + thl + n
        r = mod_ffff(tcp_base + n + seq + f + (x << 8 if n & 1 else x))
        ri = (ip_base + tot + ident) % 0xFFFF
        out.append((pack(head, tot, ident, frag, 0xFFFF - ri if ri else 0, addrs, seq, ackoff, f,
                         win, 0xFFFF - r if r else 0, tail), payload))
        seq = (seq + n) & 0xFFFFFFFF
        ident = (ident + 1) & 0xFFFF
        pos += n
    return out


def gso_batches(datagrams: list[bytes]) -> list[list[bytes]]:
    """Group datagrams into UDP GSO sends: equal sizes except a shorter last one, bounded."""
    return [datagrams[r.start:r.stop] for r in gso_ranges([len(d) for d in datagrams])]


def gso_ranges(sizes: list[int]) -> list[range]:
    """`gso_batches` on datagram sizes: the index ranges of each UDP GSO send."""
    out: list[range] = []
    start = total = size = 0
    for i, n in enumerate(sizes):
        if i > start and (n > size or sizes[i - 1] < size or i - start >= MAX_DATAGRAMS
                          or total + n > MAX_DATAGRAM_BYTES):
            out.append(range(start, i))
            start, total = i, 0
        if i == start:
            size = n
        total += n
    if start < len(sizes):
        out.append(range(start, len(sizes)))
    return out


def _tcp_segment_info(d: bytes, off: int) -> tuple[int, int, int] | None:
    """(l4 offset, data offset, end) of a plain IPv4 TCP segment (no IP options, not a
    fragment, ACK with at most PSH) whose checksum verifies; None otherwise."""
    ip = off + ETH_LEN
    if len(d) < ip + 40 or d[off + ETH_TYPE.start:ip] != ETHERTYPE_IP or d[ip] != 0x45 \
            or d[ip + 9] != PROTO_TCP or d[ip + 6] & 0x3F or d[ip + 7]:
        return None
    end = ip + ((d[ip + 2] << 8) | d[ip + 3])
    l4 = ip + 20
    thl = (d[l4 + 12] >> 4) * 4
    if end != len(d) or thl < 20 or l4 + thl >= end or d[l4 + 13] & ~_TCP_PSH != _TCP_ACK \
            or d[l4 + 18] or d[l4 + 19]:
        return None
    if mod_ffff(_pseudo(d, ip) + end - l4 + ones(memoryview(d)[l4:end])):
        return None  # a bad checksum: never merged (GRO validates before merging)
    return l4, l4 + thl, end


def coalesce_tcp(datagrams: list[bytes], off: int) -> list[tuple[bytes, int]]:
    """Merge runs of consecutive segments of one TCP flow (GRO). Returns (datagram, gso_size);
    gso_size is 0 for a datagram passed through as it came. A merged datagram's TCP checksum
    is left stale: the agent sends it as CHECKSUM_PARTIAL (`partial_csum`) after the pipeline.

    A segment joins the run when everything but the IP length/ID/checksum and the TCP seq,
    checksum and PSH is byte-identical (one struct unpack compares them), its seq follows,
    it is not longer than the first, and its checksum verifies (as tcp_gro_receive demands).
    """
    out: list[tuple[bytes, int]] = []
    i, n = 0, len(datagrams)
    ip = off + ETH_LEN
    frombytes = int.from_bytes
    while i < n:
        d = datagrams[i]
        info = _tcp_segment_info(d, off)
        if info is None:
            if d[off + 12:off + 14] == _ETHERTYPE_IPV6:  # TCP over IPv6: gso6's GRO
                merged, gso_size, i = gso6.coalesce_run6(datagrams, i, off)
                out.append((merged, gso_size))
                continue
            out.append((d, 0))
            i += 1
            continue
        i += 1
        l4, data, end = info
        size = end - data
        hdr = struct.Struct(f"!{ip + 2}s2x2x4s2x{l4 + 4 - ip - 12}sI5sB2s2x{data - l4 - 18}s")
        unpack = hdr.unpack_from
        k = unpack(d)
        same = k[:3]
        rest = k[4] + k[6] + k[7]
        seq = (k[3] + size) & 0xFFFFFFFF
        base = _pseudo(d, ip) + data - l4
        payloads = [memoryview(d)[data:end]]
        total = data - ip + size
        psh = k[5] & _TCP_PSH
        while i < n and not psh:
            e = datagrams[i]
            esize = len(e) - data
            if esize <= 0 or esize > size or total + esize > 0xFFFF \
                    or ((e[ip + 2] << 8) | e[ip + 3]) != len(e) - ip:
                break
            t = unpack(e)
            if t[:3] != same or t[3] != seq or t[5] & ~_TCP_PSH != _TCP_ACK \
                    or t[4] + t[6] + t[7] != rest:
                break
            x = frombytes(memoryview(e)[l4:], "big")
            if mod_ffff(base + esize + (x << 8 if esize & 1 else x)):
                break  # a bad checksum: never merged (GRO validates before merging)
            payloads.append(memoryview(e)[data:])
            total += esize
            seq = (seq + esize) & 0xFFFFFFFF
            psh = t[5] & _TCP_PSH
            i += 1
            if esize < size:
                break  # a short segment ends a GSO run (all but the last are gso_size)
        if len(payloads) == 1:
            out.append((d, 0))
            continue
        head = bytearray(d[:data])
        head[ip + 2:ip + 4] = total.to_bytes(2, "big")
        ip_checksum(memoryview(head)[ip:l4])
        head[l4 + 13] |= psh
        out.append((b"".join((head, *payloads)), size))
    return out
