"""Header codecs, Internet checksums and the few packets the datapath generates itself.

Every header layout is declared once, as a precompiled `struct.Struct` and as the named offsets
the pipeline reads and patches frames at; `parse_ipv4` and `tuple_key` are the parse every
stage shares (pipeline, NodePort, the observe hook). Generated packets (ARP replies, TCP RSTs,
ICMP errors, echo replies) carry checksums computed from scratch; rewrites use RFC 1624
incremental updates.
"""

from __future__ import annotations

import struct
import sys
from socket import inet_aton as _inet_aton

ETH_LEN = 14
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
PROTO_ICMP, PROTO_TCP, PROTO_UDP = 1, 6, 17
PROTO_ICMP6 = 58  # RFC 4443

ETH = struct.Struct("!6s6sH")  # IEEE 802.3: dst, src, ethertype
ARP = struct.Struct("!HHBBH6s4s6s4s")  # RFC 826: htype ptype hlen plen op sha spa tha tpa
# RFC 791 §3.1: ver/ihl, tos, total length, id, flags/frag offset, ttl, proto, csum, src, dst
IPV4 = struct.Struct("!BBHHHBBH4s4s")
TCP = struct.Struct("!HHIIBBHHH")  # RFC 9293 §3.1: ports, seq, ack, off, flags, win, csum, urp
UDP = struct.Struct("!HHHH")  # RFC 768: ports, length, checksum
ICMP = struct.Struct("!BBHHH")  # RFC 792: type, code, checksum, id/unused, seq/unused
VXLAN = struct.Struct("!B3x3sx")  # RFC 7348 §5: flags (I=0x08), reserved, VNI, reserved
U16 = struct.Struct("!H")

VXLAN_FLAG_I = 0x08  # RFC 7348 §5: "I" flag, the VNI is valid
ARP_REQUEST, ARP_REPLY = 1, 2
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10
ICMP_ECHO_REPLY, ICMP_UNREACH, ICMP_ECHO, ICMP_TIME_EXCEEDED = 0, 3, 8, 11
UNREACH_NET, UNREACH_PORT, UNREACH_FRAG_NEEDED = 0, 3, 4  # RFC 792 / RFC 1191 codes
IP_DF = 0x4000
IP_MF_OFFSET = 0x3FFF  # "more fragments" bit + fragment offset: non-zero means a fragment
DEFAULT_TTL = 64  # Linux net.ipv4.ip_default_ttl
# RFC 1624 eqn. 3 term ~m + m' for a hop's TTL decrement: the (TTL, protocol) word loses 0x0100
TTL_DEC_DELTA = 0xFEFF
ICMP_ERROR_MAX = 576  # RFC 1812 §4.3.2.3: an ICMP error fits in 576 bytes

# ---- where the fields are --------------------------------------------------------------------
# Offsets inside a header, as its RFC draws it: add the header's own position (an ICMP error's
# quote, a frame behind a VXLAN header, the L4 header after IPv4 options).
IPV4_OFF_TOS = 1  # RFC 791 §3.1
IPV4_OFF_LEN = 2  # total length, 16 bits
IPV4_OFF_FRAG = 6  # flags (3 bits) and fragment offset (13 bits)
IPV4_OFF_TTL = 8
IPV4_OFF_PROTO = 9
IPV4_OFF_CSUM = 10
IPV4_OFF_SRC = 12
IPV4_OFF_DST = 16
# RFC 8200 §3: an IPv6 header's source and destination; RFC 4443 §2.1: ICMPv6's checksum
IP6_OFF_SRC, IP6_OFF_DST = 8, 24
ICMP6_OFF_CSUM = 2
L4_OFF_SPORT = 0  # TCP/UDP source then destination port, 16 bits each (RFC 9293, RFC 768)
L4_OFF_DPORT = 2
TCP_OFF_DATA = 12  # data offset (header length in 32-bit words) in the high 4 bits
TCP_OFF_FLAGS = 13  # CWR ECE URG ACK PSH RST SYN FIN
TCP_OFF_CSUM = 16
UDP_OFF_CSUM = 6
ICMP_OFF_CSUM = 2  # RFC 792: type, code, checksum, then (echo) identifier and sequence
ICMP_OFF_ID = 4

# The frames the datapath handles are Ethernet II without VLAN tags (IEEE 802.3 clause 3:
# emunet's veths and underlay carry none) with IPv4 right behind, so the IPv4 fields sit at
# fixed positions in the frame: ETH_LEN + the RFC 791 offset.
ETH_DST = slice(0, 6)
ETH_SRC = slice(6, 12)
ETH_MACS = slice(0, 12)  # destination and source: what a routed hop rewrites
ETH_TYPE = slice(12, 14)
ETHERTYPE_IP = ETH_P_IP.to_bytes(2, "big")  # the frame's ETH_TYPE bytes
ETHERTYPE_ARP = ETH_P_ARP.to_bytes(2, "big")
IP_VIHL = ETH_LEN  # version (high 4 bits), header length in 32-bit words (low 4)
IP_TOS = ETH_LEN + IPV4_OFF_TOS
IP_LEN = ETH_LEN + IPV4_OFF_LEN
IP_FRAG = ETH_LEN + IPV4_OFF_FRAG
IP_TTL = ETH_LEN + IPV4_OFF_TTL
IP_PROTO = ETH_LEN + IPV4_OFF_PROTO
IP_CSUM = ETH_LEN + IPV4_OFF_CSUM
IP_SRC = slice(ETH_LEN + IPV4_OFF_SRC, ETH_LEN + IPV4_OFF_SRC + 4)  # 26:30
IP_DST = slice(ETH_LEN + IPV4_OFF_DST, ETH_LEN + IPV4_OFF_DST + 4)  # 30:34
IP_ADDRS = slice(IP_SRC.start, IP_DST.stop)  # source and destination, as in a tuple key
_IP_PROTO_BYTE = slice(IP_PROTO, IP_PROTO + 1)

# A conntrack tuple key (`make_key`): proto(1) src(4) dst(4) sport(2) dport(2).
KEY_SRC = slice(1, 5)
KEY_DST = slice(5, 9)
KEY_SPORT = slice(9, 11)
KEY_DPORT = slice(11, 13)

_NATIVE_LE = sys.byteorder == "little"


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def ip_bytes(ip: str) -> bytes:
    """A dotted quad's 4 bytes (inet_aton: ~10x the old per-octet parse, which was a fifth of
    an agent's reload at 1,000 pods). Anything but a dotted quad is a ValueError."""
    if ip.count(".") != 3:
        raise ValueError(f"not an IPv4 address: {ip!r}")
    try:
        return _inet_aton(ip)
    except OSError:
        raise ValueError(f"not an IPv4 address: {ip!r}") from None


def ip_str(b: bytes | bytearray) -> str:
    return ".".join(str(x) for x in b)


# ---- parsing: what every stage reads first ---------------------------------------------------

_L4_MIN = {PROTO_TCP: 20, PROTO_UDP: 8, PROTO_ICMP: 8}  # the header bytes a stage reads
_ICMP_ECHOS = (ICMP_ECHO, ICMP_ECHO_REPLY)
_ZERO16 = b"\0\0"
_PROTO_BYTES: tuple[bytes, ...] = tuple(bytes((i,)) for i in range(256))  # make_key's first


def parse_ipv4(f: bytes | bytearray | memoryview) -> tuple[int, int, int, bool] | None:
    """(l4 offset, end of the IP packet, protocol, is a fragment) of the IPv4 frame `f`, or
    None when its header is malformed (RFC 791 §3.1: version 4, IHL >= 5 words, total length
    within the frame; an unfragmented TCP/UDP/ICMP packet must hold its L4 header). Bytes past
    `end` are Ethernet padding. The caller has checked the ethertype."""
    if len(f) < ETH_LEN + 20:
        return None
    vihl = f[IP_VIHL]
    ihl = (vihl & 0xF) * 4
    tot = (f[IP_LEN] << 8) | f[IP_LEN + 1]
    end = ETH_LEN + tot
    if vihl >> 4 != 4 or ihl < 20 or tot < ihl or end > len(f):
        return None
    l4, proto = ETH_LEN + ihl, f[IP_PROTO]
    frag = bool(((f[IP_FRAG] << 8) | f[IP_FRAG + 1]) & IP_MF_OFFSET)
    if not frag and l4 + _L4_MIN.get(proto, 0) > end:
        return None
    return l4, end, proto, frag


def concat(a: bytes, b: bytes) -> bytes:
    """`a + b` as bytes, safe in the compiled build.

    mypyc 1.19.1 (the pinned build, scripts/setup) marks its bytes-concatenation primitive as
    stealing the left operand, which it does not, so `x + y` leaks `x` whenever `x` is a new
    object (a slice, a `bytes(...)` call, the result of another `+`): mypyc/mypyc#1192, fixed
    only in mypy 2.x, whose mypyc miscompiles `bytes[slice_constant]`. A call's arguments are
    borrowed, so here nothing leaks; `scripts/build-native` refuses a build that still has such
    an expression. Longer sums use `b"".join`.
    """
    return a + b


def make_key(proto: int, src: bytes, dst: bytes, sport: bytes, dport: bytes) -> bytes:
    """A conntrack tuple key (see KEY_*); ICMP echo uses (identifier, 0) as its ports."""
    return b"".join((_PROTO_BYTES[proto], src, dst, sport, dport))


def tuple_key(f: bytes | bytearray | memoryview, l4: int, proto: int) -> bytes | None:
    """The conntrack key (`make_key`) of a parsed TCP/UDP/ICMP echo frame (`l4`, `proto` from
    `parse_ipv4`); None for anything conntrack does not track."""
    if proto == PROTO_TCP or proto == PROTO_UDP:
        # join makes bytes (hashable) of the buffers in one copy; the L4 header starts with
        # both ports (L4_OFF_SPORT, L4_OFF_DPORT)
        return b"".join((f[_IP_PROTO_BYTE], f[IP_ADDRS], f[l4:l4 + 4]))
    if proto == PROTO_ICMP and f[l4] in _ICMP_ECHOS:
        return b"".join((f[_IP_PROTO_BYTE], f[IP_ADDRS],
                         f[l4 + ICMP_OFF_ID:l4 + ICMP_OFF_ID + 2], _ZERO16))
    return None


# ---- checksums (RFC 1071, RFC 1624) ----------------------------------------------------------

def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """16-bit one's complement sum (not inverted), in network order.

    RFC 1071 §2(B): the sum is byte-order independent, so summing native 16-bit words with a
    memoryview cast (fast, C speed) and swapping once at the end gives the same result.
    """
    if len(data) & 1:
        data = b"".join((data, b"\0"))
    s = sum(memoryview(data).cast("H"))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    if _NATIVE_LE:
        s = ((s & 0xFF) << 8) | (s >> 8)
    return s


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The Internet checksum of `data` (RFC 1071), optionally seeded with a partial sum."""
    s = ones_sum(data) + initial
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def pseudo_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Sum of the TCP/UDP pseudo-header (RFC 9293 §3.1, RFC 768)."""
    return ones_sum(b"".join((src, dst, bytes((0, proto)), U16.pack(length))))


def delta16(old: int, new: int) -> int:
    """The RFC 1624 eqn. 3 term ~m + m' for one 16-bit word changing from old to new."""
    return (~old & 0xFFFF) + new


def delta_bytes(old: bytes, new: bytes) -> int:
    """RFC 1624 terms for a run of 16-bit words (an address, a port) changing old -> new."""
    d = 0
    for i in range(0, len(old), 2):
        o, n = (old[i] << 8) | old[i + 1], (new[i] << 8) | new[i + 1]
        if o != n:  # an unchanged word would add 0xffff, -0 in one's complement
            d += delta16(o, n)
    return d


def apply_delta(csum: int, delta: int) -> int:
    """RFC 1624 eqn. 3: HC' = ~(~HC + sum(~m + m'))."""
    s = (~csum & 0xFFFF) + delta
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def fill_l4_checksum(frame: bytearray) -> bool:
    """Compute the full TCP/UDP checksum of an IPv4 frame in place.

    Needed for frames the kernel hands to AF_PACKET as CHECKSUM_PARTIAL (PACKET_AUXDATA
    TP_STATUS_CSUMNOTREADY): the field then holds only the pseudo-header sum. Returns False
    when the frame is not a complete, unfragmented IPv4 TCP/UDP packet.
    """
    if len(frame) < ETH_LEN + 20 or ETH.unpack_from(frame)[2] != ETH_P_IP:
        return _fill_l4_checksum6(frame)  # dual-stack: IPv4 frames never get here
    vihl, _, tot, _, frag, _, proto, _, src, dst = IPV4.unpack_from(frame, ETH_LEN)
    l4 = ETH_LEN + (vihl & 0xF) * 4
    end = ETH_LEN + tot
    if frag & IP_MF_OFFSET or end > len(frame) or proto not in (PROTO_TCP, PROTO_UDP):
        return False
    off = l4 + (TCP_OFF_CSUM if proto == PROTO_TCP else UDP_OFF_CSUM)
    if off + 2 > end:
        return False
    frame[off:off + 2] = b"\0\0"
    c = checksum(memoryview(frame)[l4:end], pseudo_sum(src, dst, proto, end - l4))
    if proto == PROTO_UDP and c == 0:
        c = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    U16.pack_into(frame, off, c)
    return True


ETH_P_IPV6 = 0x86DD


def _fill_l4_checksum6(frame: bytearray) -> bool:
    """fill_l4_checksum for an IPv6 frame (TCP/UDP right behind the fixed header, RFC 8200
    §3): the checksum over the IPv6 pseudo-header (§8.1: source, destination, 32-bit length,
    next header); False for anything else. emunet.datapath.ipv6pkt has the rest of IPv6."""
    if len(frame) < ETH_LEN + 40 or ETH.unpack_from(frame)[2] != ETH_P_IPV6 \
            or frame[ETH_LEN] >> 4 != 6:
        return False
    l4 = ETH_LEN + 40
    end = l4 + U16.unpack_from(frame, ETH_LEN + 4)[0]
    nh = frame[ETH_LEN + 6]
    if nh not in (PROTO_TCP, PROTO_UDP) or end > len(frame):
        return False
    off = l4 + (TCP_OFF_CSUM if nh == PROTO_TCP else UDP_OFF_CSUM)
    if off + 2 > end:
        return False
    frame[off:off + 2] = b"\0\0"
    pseudo = ones_sum(bytes(frame[ETH_LEN + 8:l4]) + (end - l4).to_bytes(4, "big")
                      + bytes((0, 0, 0, nh)))
    c = checksum(memoryview(frame)[l4:end], pseudo)
    U16.pack_into(frame, off, 0xFFFF if c == 0 and nh == PROTO_UDP else c)  # RFC 8200 §8.1
    return True


# ---- generated packets ------------------------------------------------------------------------

def ipv4_header(src: bytes, dst: bytes, proto: int, payload_len: int, ttl: int = DEFAULT_TTL,
                ident: int = 0, df: bool = True) -> bytes:
    hdr = bytearray(IPV4.pack(0x45, 0, 20 + payload_len, ident, IP_DF if df else 0, ttl, proto,
                              0, src, dst))
    U16.pack_into(hdr, IPV4_OFF_CSUM, checksum(hdr))
    return bytes(hdr)


def arp_reply(eth_dst: bytes, answer_mac: bytes, answer_ip: bytes, asker_mac: bytes,
              asker_ip: bytes) -> bytes:
    """RFC 826 reply: `answer_ip is-at answer_mac`, unicast to the asker."""
    return concat(ETH.pack(eth_dst, answer_mac, ETH_P_ARP),
                  ARP.pack(1, ETH_P_IP, 6, 4, ARP_REPLY, answer_mac, answer_ip, asker_mac,
                           asker_ip))


def rst_segment(sport: int, dport: int, seg_seq: int, seg_ack: int, flags: int,
                seg_len: int) -> bytearray:
    """The TCP header of a reset for an incoming segment, checksum zero (either family).

    RFC 9293 §3.10.7.1: if the segment had ACK, the RST takes seq=SEG.ACK; otherwise seq=0 and
    it ACKs SEG.SEQ+SEG.LEN (SYN and FIN count one each), as Linux's nf_reject does.
    """
    if flags & TCP_ACK:
        seq, ack, rflags = seg_ack, 0, TCP_RST
    else:
        ln = seg_len + (1 if flags & TCP_SYN else 0) + (1 if flags & TCP_FIN else 0)
        seq, ack, rflags = 0, (seg_seq + ln) & 0xFFFFFFFF, TCP_RST | TCP_ACK
    return bytearray(TCP.pack(sport, dport, seq, ack, 5 << 4, rflags, 0, 0, 0))


def tcp_rst(eth_dst: bytes, eth_src: bytes, src: bytes, dst: bytes, sport: int, dport: int,
            seg_seq: int, seg_ack: int, flags: int, seg_len: int) -> bytes:
    """A reset for an incoming segment (`rst_segment`; src/dst are the RST's own addresses)."""
    seg = rst_segment(sport, dport, seg_seq, seg_ack, flags, seg_len)
    U16.pack_into(seg, TCP_OFF_CSUM, checksum(seg, pseudo_sum(src, dst, PROTO_TCP, len(seg))))
    return b"".join((ETH.pack(eth_dst, eth_src, ETH_P_IP),
                     ipv4_header(src, dst, PROTO_TCP, len(seg)), seg))


def icmp_error(eth_dst: bytes, eth_src: bytes, src: bytes, icmp_type: int, code: int,
               original_ip: bytes | bytearray | memoryview, mtu: int = 0) -> bytes:
    """An ICMP error (RFC 792) quoting the offending IP packet, sent back to its source.

    Linux quotes as much of the original as fits in 576 bytes (RFC 1812 §4.3.2.3). `mtu`: the
    Next-Hop MTU of a fragmentation needed (type 3 code 4), in the low 16 bits of the word
    after the checksum (RFC 1191 §4); zero ("unused") in every other error.
    """
    quote = bytes(original_ip[:ICMP_ERROR_MAX - 28])
    dst = quote[IPV4_OFF_SRC:IPV4_OFF_SRC + 4]  # back to the quoted packet's source
    msg = bytearray(concat(ICMP.pack(icmp_type, code, 0, 0, mtu), quote))
    U16.pack_into(msg, ICMP_OFF_CSUM, checksum(msg))
    return b"".join((ETH.pack(eth_dst, eth_src, ETH_P_IP),
                     ipv4_header(src, dst, PROTO_ICMP, len(msg)), msg))


def echo_reply(eth_dst: bytes, eth_src: bytes, src: bytes, dst: bytes,
               request_icmp: bytes | bytearray | memoryview) -> bytes:
    """An echo reply (RFC 792) to an echo request whose ICMP message is `request_icmp`."""
    msg = bytearray(request_icmp)
    msg[0] = ICMP_ECHO_REPLY
    msg[ICMP_OFF_CSUM:ICMP_OFF_CSUM + 2] = _ZERO16
    U16.pack_into(msg, ICMP_OFF_CSUM, checksum(msg))
    return b"".join((ETH.pack(eth_dst, eth_src, ETH_P_IP),
                     ipv4_header(src, dst, PROTO_ICMP, len(msg)), msg))


def vxlan_header(vni: int) -> bytes:
    return VXLAN.pack(VXLAN_FLAG_I, vni.to_bytes(3, "big"))


