"""IP fragments of tracked flows: DNAT (and reverse NAT) for every fragment. Pure.

A pod's kernel fragments a UDP datagram larger than its MTU (no DF on big UDP). Linux
defragments before conntrack (nf_defrag_ipv4), so NAT applies to the whole datagram. emunet
tracks fragments by IP identification instead, as Cilium does without defrag
(bpf/lib/ipv4.h, ipv4_handle_fragmentation: a map of (src, dst, proto, id) -> ports, filled
by the first fragment): the first fragment (offset 0) carries the L4 header and goes through
conntrack as an unfragmented packet would (Service DNAT, policy); its rewrite is remembered
under (src, dst, proto, IP id), and every later fragment of that datagram gets the same
address rewrite (its ports and L4 checksum are in the first fragment: RFC 791, RFC 768, the
checksum covers the whole datagram, so the first fragment's incremental update holds for it).
Both directions: a backend's big reply is un-NAT'ed fragment by fragment too.

A datagram without DF that is larger than the pod MTU where the node forwards it (a NodePort
client on the underlay, whose MTU is larger) is cut into fragments of at most the MTU, as
Linux's ip_forward -> ip_fragment (ip_do_fragment's slow path) does: `split`.

Bounded and timed: at most FRAG_MAX datagrams in flight, each forgotten FRAG_TIMEOUT after its
first fragment (net.ipv4.ipfrag_time) or at its last fragment. A later fragment whose first
one was not seen (reordered, or lost) cannot be load-balanced: to a ClusterIP it is dropped
(FRAG_NOT_SUPPORTED), as before; elsewhere it is routed by address under port-less rules.
Linux would hold it until the datagram is whole (nf_defrag reassembles out of order); emunet
keeps no reassembly buffer, and the senders it meets (Linux) emit fragments in order, first
to last (ip_do_fragment, ip6_fragment), over links that do not reorder (veth, VXLAN).

IPv6 (RFC 8200 §4.5): the source alone fragments, behind a Fragment header (next header 44:
the upper layer's next header, the offset in 8-byte units, M, a 32-bit identification). The
same tracking (`_fragment6`), with the upper-layer header after the Fragment header: the
first fragment goes through conntrack as the whole datagram would, the later ones get its
address rewrite (IPv6 has no header checksum; ports and the upper-layer checksum are in the
first). Their key is (src, dst, identification): RFC 8200 identifies a datagram by those
three, and the Fragment headers of its fragments may carry different next headers (only the
first fragment's counts). 36 bytes, never equal to an IPv4 key (11), in the one table. A
fragment that is also the last (offset 0, M clear: an atomic fragment, RFC 6946) is tracked
as the whole packet it is and leaves no entry.

Fragments to a node port arriving on eth0 (both families) use the same table:
emunet.datapath.nodeport and nodeport6 (`_nodeport_fragment`).
"""

from __future__ import annotations

from emunet.datapath.actions import Action
from emunet.datapath.fastpath import FastPath
from emunet.datapath.ipv6pkt import IP6_DST, IP6_SRC, tuple_key6
from emunet.datapath.reasons import DropReason
from emunet.datapath.tables import LocalPod
from emunet.packets import (
    ETH_LEN,
    IP_DST,
    IP_FRAG,
    IP_SRC,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    U16,
    checksum,
    tuple_key,
)

FRAG_TIMEOUT = 30.0  # seconds, net.ipv4.ipfrag_time
FRAG_MAX = 4096  # datagrams in flight per node
_MF = 0x2000  # RFC 791: More Fragments
_OFFSET = 0x1FFF
_IP_ID = slice(ETH_LEN + 4, ETH_LEN + 6)
_M6 = 1  # RFC 8200 §4.5: the M flag, the low bit of the offset word
_OFFSET6 = 0xFFF8  # the fragment offset (8-byte units) in the word's top 13 bits
_L4_MIN = {PROTO_TCP: 20, PROTO_UDP: 8}  # the upper-layer header a first fragment must hold


def frag_header6(f: bytes | bytearray, fh: int, end: int) -> tuple[int, int, bool, bytes] | None:
    """The IPv6 Fragment header at `fh` (RFC 8200 §4.5): (next header, offset in bytes, M,
    the datagram's key: source, destination, identification); None when it is cut short."""
    if fh + 8 > end:
        return None
    word = U16.unpack_from(f, fh + 2)[0]
    return (f[fh], word & _OFFSET6, bool(word & _M6),
            b"".join((f[IP6_SRC], f[IP6_DST], f[fh + 4:fh + 8])))


def first_with_ports(f: bytes | bytearray, l4: int, end: int, proto: int, offset: int) -> bool:
    """A first fragment (offset 0) of TCP or UDP holding the whole upper-layer header: the one
    conntrack can decide, as it would the whole datagram."""
    return offset == 0 and (proto == PROTO_TCP or proto == PROTO_UDP) and \
        l4 + _L4_MIN[proto] <= end


class Fragments(FastPath):
    """Methods of Datapath for IPv4 fragments (see module doc)."""

    def _fragment(self, f: bytearray, l4: int, end: int, proto: int, now: float,
                  pod: LocalPod | None) -> list[Action] | None:
        """A fragment: None to carry on to routing (f rewritten), else the final actions."""
        word = U16.unpack_from(f, IP_FRAG)[0]
        fkey = b"".join((f[IP_SRC], f[IP_DST], bytes((proto,)), f[_IP_ID]))
        if word & _OFFSET == 0 and proto != PROTO_ICMP and end - l4 >= 8:
            key = tuple_key(f, l4, proto)
            if key is not None:
                return self._first_fragment(f, l4, end, proto, now, pod, key, fkey)
        if self._later_fragment(f, fkey, not word & _MF, False, now):
            return None
        if bytes(f[IP_DST]) in self.tables.cluster_ips:
            return self._drop(DropReason.FRAG_NOT_SUPPORTED,
                              "fragment to a ClusterIP before its first fragment")
        return self._policy(f, proto, 0, pod)  # no ports seen: only port-less rules

    def _first_fragment(self, f: bytearray, l4: int, end: int, proto: int, now: float,
                        pod: LocalPod | None, key: bytes, fkey: bytes) -> list[Action] | None:
        out = self._track(f, l4, end, proto, False, now, pod)
        if out is not None:
            return out  # rejected or denied: its other fragments meet no entry
        self._remember_frag(fkey, key, now)
        return None

    def _remember_frag(self, fkey: bytes, key: bytes, now: float) -> None:
        """Keep the rewrite the first fragment (conntrack key `key`, as received) just got,
        for the later fragments of its datagram (`fkey`): its connection's, in the direction
        it took, or the new connection's it opens (confirmed when it leaves)."""
        hit = self.ct.table.get(key)
        if hit is not None:
            conn, is_reply = hit
            rw = conn.rev if is_reply else conn.fwd
        elif self._new is not None:
            rw = self._new[0].fwd
        else:
            rw = None  # routed untracked: the other fragments follow it untouched
        if len(self.frags) >= FRAG_MAX:
            self.expire_frags(now)
            if len(self.frags) >= FRAG_MAX:
                del self.frags[next(iter(self.frags))]  # the oldest datagram in flight
        self.frags[fkey] = (rw, now + FRAG_TIMEOUT)

    def _later_fragment(self, f: bytearray, fkey: bytes, last: bool, v6: bool,
                        now: float) -> bool:
        """A fragment behind its datagram's first: True when that first was seen (f gets its
        address rewrite; the entry goes with the datagram's last fragment), False if not."""
        hit = self.frags.get(fkey)
        if hit is None or hit[1] <= now:
            return False
        rw = hit[0]
        if rw is not None:
            if v6:  # no header checksum (RFC 8200 §3): the addresses alone
                if rw.src is not None:
                    f[IP6_SRC] = rw.src
                if rw.dst is not None:
                    f[IP6_DST] = rw.dst
            else:
                rw.apply(f, ETH_LEN, 0, PROTO_ICMP, 0)  # addresses and IP checksum only
        if last:
            del self.frags[fkey]
        return True

    # ---- IPv6 ---------------------------------------------------------------------------------

    def _track6(self, f: bytearray, l4: int, end: int, nh: int, now: float,
                pod: LocalPod | None) -> list[Action] | None:
        raise NotImplementedError  # emunet.datapath.ipv6

    def _fragment6(self, f: bytearray, fh: int, end: int, now: float,
                   pod: LocalPod | None) -> list[Action] | None:
        """An IPv6 packet with a Fragment header at `fh` (IPv4's `_fragment`): None to carry
        on to routing (f rewritten), else the final actions."""
        parsed = frag_header6(f, fh, end)
        if parsed is None:
            return self._drop(DropReason.INVALID_PACKET, "short IPv6 Fragment header")
        nh, offset, more, fkey = parsed
        l4 = fh + 8
        if first_with_ports(f, l4, end, nh, offset):
            key = tuple_key6(f, l4, nh)
            out = self._track6(f, l4, end, nh, now, pod)
            if out is None and more and key is not None:
                self._remember_frag(fkey, key, now)
            return out  # rejected or denied: its other fragments meet no entry
        if self._later_fragment(f, fkey, not more, True, now):
            return None
        dst = bytes(f[IP6_DST])
        if dst in self.tables.cluster_ips:
            return self._drop(DropReason.FRAG_NOT_SUPPORTED,
                              "IPv6 fragment to a ClusterIP before its first fragment")
        return self._check(bytes(f[IP6_SRC]), dst, nh, 0, pod is not None)  # port-less rules

    def expire_frags(self, now: float) -> None:
        if self.frags:
            self.frags = {k: v for k, v in self.frags.items() if v[1] > now}


def _copied_options(opts: bytes) -> bytes:
    """The IPv4 options every fragment repeats: those with the copied flag (RFC 791 §3.1,
    the type's top bit), padded with End of Option List to a 4-byte boundary."""
    keep, i = [], 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:  # End of Option List
            break
        if kind == 1:  # No Operation: one byte, not copied
            i += 1
            continue
        size = opts[i + 1] if i + 1 < len(opts) else 0
        if size < 2:
            break  # malformed: nothing more can be read
        if kind & 0x80:
            keep.append(opts[i:i + size])
        i += size
    size = sum(len(o) for o in keep)
    keep.append(bytes(-size % 4))
    return b"".join(keep)


def split(data: bytes, ip: int, mtu: int) -> list[bytes]:
    """RFC 791 §3.2 fragmentation of the IPv4 packet at data[ip:] (data[:ip], its MAC or VXLAN
    header, kept in front of each) into fragments of at most `mtu` bytes: each carries a
    multiple of 8 payload bytes but the last, the packet's identification, MF on all but the
    last, the copied options after the first, and its own header checksum. The L4 header and
    checksum stay in the first fragment, valid for the whole datagram. A packet that is itself
    a fragment (a client's, forwarded to a smaller MTU) is cut the same way, RFC 791's
    "fragmenting a fragment": offsets count on from its own, and its last piece keeps its MF."""
    ihl = (data[ip] & 0xF) * 4
    end = ip + U16.unpack_from(data, ip + 2)[0]
    word = U16.unpack_from(data, ip + 6)[0]
    base, last_mf = (word & _OFFSET) << 3, word & _MF
    head, first = data[:ip], data[ip:ip + ihl]
    later = b"".join((first[:20], _copied_options(first[20:]))) if ihl > 20 else first
    out = []
    off, payload = 0, ip + ihl
    while payload + off < end:
        hdr = bytearray(first if off == 0 else later)
        room = (mtu - len(hdr)) & ~7
        chunk = data[payload + off:min(end, payload + off + room)]
        more = payload + off + len(chunk) < end
        hdr[0] = 0x40 | (len(hdr) >> 2)
        U16.pack_into(hdr, 2, len(hdr) + len(chunk))
        U16.pack_into(hdr, 6, (_MF if more else last_mf) | ((base + off) >> 3))
        U16.pack_into(hdr, 10, 0)
        U16.pack_into(hdr, 10, checksum(hdr))
        out.append(b"".join((head, hdr, chunk)))
        off += len(chunk)
    return out
