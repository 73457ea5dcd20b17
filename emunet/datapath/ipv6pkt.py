"""IPv6 header codecs, checksums and the IPv6 packets the datapath writes itself. Pure.

The IPv6 counterpart of emunet.packets (which stays IPv4-only, so the IPv4 path is untouched):
the fixed header's named offsets in an untagged Ethernet frame (RFC 8200 §3), `parse_ipv6` and
`tuple_key6` (conntrack keys of 37 bytes: proto(1) src(16) dst(16) sport(2) dport(2), which
can never equal an IPv4 key of 13), the upper-layer checksum over the IPv6 pseudo-header
(RFC 8200 §8.1: it covers ICMPv6 too, RFC 4443 §2.3), the NAT rewrite of an IPv6 packet, and
the generated packets: Neighbor Advertisements (RFC 4861 §4.4, §7.2.4), echo replies and
ICMPv6 errors (RFC 4443), TCP resets.
"""

from __future__ import annotations

import ipaddress
import struct

from emunet.packets import (
    ETH,
    ETH_LEN,
    ICMP6_OFF_CSUM,
    IP6_OFF_DST,
    IP6_OFF_SRC,
    PROTO_ICMP6,
    PROTO_TCP,
    PROTO_UDP,
    TCP_OFF_CSUM,
    U16,
    checksum,
    concat,
    ones_sum,
    rst_segment,
)

ETH_P_IPV6 = 0x86DD
ETHERTYPE_IPV6 = ETH_P_IPV6.to_bytes(2, "big")
NH_HOPOPTS, NH_FRAGMENT = 0, 44  # RFC 8200 §4.3, §4.5 (MLD reports carry a hop-by-hop header)
# RFC 8200 §3: version(4) traffic class(8) flow label(20), payload length, next header, hop
# limit, source, destination
IPV6 = struct.Struct("!IHBB16s16s")
IP6_HDR = 40
ICMP6_HDR = struct.Struct("!BBHI")  # RFC 4443 §2.1: type, code, checksum, 32-bit body word
U32 = struct.Struct("!I")

# ICMPv6 types (RFC 4443 §2.1, RFC 4861 §4, RFC 3810 §5)
ICMP6_UNREACH, ICMP6_TOO_BIG, ICMP6_TIME_EXCEEDED, ICMP6_PARAM = 1, 2, 3, 4
ICMP6_ECHO, ICMP6_ECHO_REPLY = 128, 129
ND_RS, ND_RA, ND_NS, ND_NA, ND_REDIRECT = 133, 134, 135, 136, 137
MLD_TYPES = frozenset((130, 131, 132, 143))  # MLDv1 query/report/done, MLDv2 report
UNREACH6_NOROUTE, UNREACH6_PORT = 0, 4  # RFC 4443 §3.1 codes
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0x80000000, 0x40000000, 0x20000000  # RFC 4861 §4.4
ND_OPT_SLLA, ND_OPT_TLLA = 1, 2  # RFC 4861 §4.6.1: source/target link-layer address
ND_HOP_LIMIT = 255  # RFC 4861 §6.1.2, §7.1: ND messages are sent and accepted only with 255
DEFAULT_HOP_LIMIT = 64  # Linux net.ipv6.conf.*.hop_limit
ICMP6_ERROR_MAX = 1280  # RFC 4443 §2.4(c): an error fits in the minimum IPv6 MTU

# ---- where the fields are (an untagged Ethernet frame, RFC 8200 §3 offsets + ETH_LEN) -------
IP6_OFF_PLEN, IP6_OFF_NH, IP6_OFF_HLIM = 4, 6, 7  # source, destination: packets
IP6_PLEN = ETH_LEN + IP6_OFF_PLEN
IP6_NH = ETH_LEN + IP6_OFF_NH
IP6_HLIM = ETH_LEN + IP6_OFF_HLIM
IP6_SRC = slice(ETH_LEN + IP6_OFF_SRC, ETH_LEN + IP6_OFF_SRC + 16)  # 22:38
IP6_DST = slice(ETH_LEN + IP6_OFF_DST, ETH_LEN + IP6_OFF_DST + 16)  # 38:54
IP6_ADDRS = slice(IP6_SRC.start, IP6_DST.stop)
L4_6 = ETH_LEN + IP6_HDR  # the upper-layer header right behind a fixed header: 54
ICMP6_OFF_ID = 4  # the checksum's: packets.ICMP6_OFF_CSUM

# A conntrack key of an IPv6 flow (`tuple_key6`): proto(1) src(16) dst(16) sport(2) dport(2)
KEY6_LEN = 37
KEY6_SRC = slice(1, 17)
KEY6_DST = slice(17, 33)
KEY6_SPORT = slice(33, 35)
KEY6_DPORT = slice(35, 37)

UNSPECIFIED = bytes(16)  # ::, the source of a DAD probe (RFC 4862 §5.4.2)
ALL_NODES = ipaddress.IPv6Address("ff02::1").packed
ALL_NODES_MAC = bytes.fromhex("333300000001")  # RFC 2464 §7: 33:33 + the last 32 bits

_L4_MIN = {PROTO_TCP: 20, PROTO_UDP: 8, PROTO_ICMP6: 8}
_ECHOS = (ICMP6_ECHO, ICMP6_ECHO_REPLY)
_ZERO16 = b"\0\0"
_SOLICITED_HEAD = bytes.fromhex("ff0200000000000000000001ff")  # ff02::1:ff00:0/104, RFC 4291


def ip6_bytes(ip: str) -> bytes:
    """An IPv6 address's 16 bytes (ValueError for anything else)."""
    return ipaddress.IPv6Address(ip).packed


def ip6_str(b: bytes | bytearray) -> str:
    return str(ipaddress.IPv6Address(bytes(b)))


def solicited_node(addr: bytes) -> bytes:
    """RFC 4291 §2.7.1: ff02::1:ff00:0/104 + the address's low 24 bits."""
    return concat(_SOLICITED_HEAD, addr[13:])


def link_local(addr: bytes) -> bool:
    return addr[0] == 0xFE and addr[1] & 0xC0 == 0x80  # fe80::/10, RFC 4291 §2.5.6


def parse_ipv6(f: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """(upper-layer offset, end of the IPv6 packet, next header) of the IPv6 frame `f`, or None
    when the fixed header is malformed (RFC 8200 §3: version 6, payload length within the
    frame; a TCP/UDP/ICMPv6 packet must hold its header). Extension headers are not walked:
    the next header is returned as it is (the caller refuses what it does not handle)."""
    if len(f) < L4_6 or f[ETH_LEN] >> 4 != 6:
        return None
    end = L4_6 + ((f[IP6_PLEN] << 8) | f[IP6_PLEN + 1])
    if end > len(f):
        return None
    nh = f[IP6_NH]
    if L4_6 + _L4_MIN.get(nh, 0) > end:
        return None
    return L4_6, end, nh


def tuple_key6(f: bytes | bytearray | memoryview, l4: int, proto: int) -> bytes | None:
    """The conntrack key (KEY6_*) of a parsed TCP/UDP/ICMPv6 echo frame; None otherwise."""
    if proto == PROTO_TCP or proto == PROTO_UDP:
        return b"".join((bytes((proto,)), f[IP6_ADDRS], f[l4:l4 + 4]))
    if proto == PROTO_ICMP6 and f[l4] in _ECHOS:
        return b"".join((bytes((proto,)), f[IP6_ADDRS],
                         f[l4 + ICMP6_OFF_ID:l4 + ICMP6_OFF_ID + 2], _ZERO16))
    return None


def pseudo_sum6(src: bytes, dst: bytes, nh: int, length: int) -> int:
    """RFC 8200 §8.1: source, destination, upper-layer length (32 bits), 3 zero bytes, next
    header."""
    return ones_sum(b"".join((src, dst, U32.pack(length), bytes((0, 0, 0, nh)))))


def l4_checksum6(src: bytes, dst: bytes, nh: int, msg: bytes | bytearray | memoryview) -> int:
    """The TCP/UDP/ICMPv6 checksum of `msg` (its checksum field zeroed) between src and dst.
    UDP over IPv6 may not send zero (RFC 8200 §8.1): a computed zero is sent as 0xffff."""
    c = checksum(msg, pseudo_sum6(src, dst, nh, len(msg)))
    return 0xFFFF if c == 0 and nh == PROTO_UDP else c


# ---- generated packets ------------------------------------------------------------------------

def ipv6_header(src: bytes, dst: bytes, nh: int, payload_len: int,
                hop_limit: int = DEFAULT_HOP_LIMIT) -> bytes:
    return IPV6.pack(6 << 28, payload_len, nh, hop_limit, src, dst)


def _frame(eth_dst: bytes, eth_src: bytes, src: bytes, dst: bytes, nh: int, msg: bytearray,
           csum_off: int, hop_limit: int = DEFAULT_HOP_LIMIT) -> bytes:
    U16.pack_into(msg, csum_off, l4_checksum6(src, dst, nh, msg))
    return b"".join((ETH.pack(eth_dst, eth_src, ETH_P_IPV6),
                     ipv6_header(src, dst, nh, len(msg), hop_limit), msg))


def neighbor_advert(eth_dst: bytes, mac: bytes, src: bytes, dst: bytes, target: bytes,
                    flags: int) -> bytes:
    """RFC 4861 §4.4: `target` is at `mac` (the target link-layer address option, §4.6.1),
    sent from `src` with hop limit 255 (§7.1.2: a receiver drops any other)."""
    msg = bytearray(b"".join((ICMP6_HDR.pack(ND_NA, 0, 0, flags), target,
                              bytes((ND_OPT_TLLA, 1)), mac)))
    return _frame(eth_dst, mac, src, dst, PROTO_ICMP6, msg, ICMP6_OFF_CSUM, ND_HOP_LIMIT)


def echo_reply6(eth_dst: bytes, eth_src: bytes, src: bytes, dst: bytes,
                request: bytes | bytearray | memoryview) -> bytes:
    """RFC 4443 §4.2: the request's identifier, sequence and data, type 129."""
    msg = bytearray(request)
    msg[0] = ICMP6_ECHO_REPLY
    msg[ICMP6_OFF_CSUM:ICMP6_OFF_CSUM + 2] = _ZERO16
    return _frame(eth_dst, eth_src, src, dst, PROTO_ICMP6, msg, ICMP6_OFF_CSUM)


def icmp6_error(eth_dst: bytes, eth_src: bytes, src: bytes, icmp_type: int, code: int,
                original: bytes | bytearray | memoryview, word: int = 0) -> bytes:
    """An ICMPv6 error (RFC 4443 §3) quoting the offending packet (its IPv6 header on), back
    to its source: as much of it as fits in the minimum MTU, 1280 bytes (§2.4(c)). `word` is
    the 32-bit field after the checksum (the MTU of a Packet Too Big, the pointer of a
    Parameter Problem, else unused, zero)."""
    quote = bytes(original[:ICMP6_ERROR_MAX - IP6_HDR - 8])
    dst = quote[IP6_OFF_SRC:IP6_OFF_SRC + 16]
    msg = bytearray(concat(ICMP6_HDR.pack(icmp_type, code, 0, word), quote))
    return _frame(eth_dst, eth_src, src, dst, PROTO_ICMP6, msg, ICMP6_OFF_CSUM)


def tcp_rst6(eth_dst: bytes, eth_src: bytes, src: bytes, dst: bytes, sport: int, dport: int,
             seg_seq: int, seg_ack: int, flags: int, seg_len: int) -> bytes:
    """A reset for an incoming segment, as emunet.packets.tcp_rst (RFC 9293 §3.10.7.1: with
    ACK, seq = SEG.ACK; else seq 0 and ACK of SEG.SEQ + SEG.LEN), over IPv6."""
    seg = rst_segment(sport, dport, seg_seq, seg_ack, flags, seg_len)
    return _frame(eth_dst, eth_src, src, dst, PROTO_TCP, seg, TCP_OFF_CSUM)
