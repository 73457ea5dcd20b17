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
"""

from __future__ import annotations

from emunet.datapath.actions import Action
from emunet.datapath.fastpath import FastPath
from emunet.datapath.reasons import DropReason
from emunet.datapath.tables import LocalPod
from emunet.packets import (
    ETH_LEN,
    IP_DST,
    IP_FRAG,
    IP_SRC,
    PROTO_ICMP,
    U16,
    checksum,
    tuple_key,
)

FRAG_TIMEOUT = 30.0  # seconds, net.ipv4.ipfrag_time
FRAG_MAX = 4096  # datagrams in flight per node
_MF = 0x2000  # RFC 791: More Fragments
_OFFSET = 0x1FFF
_IP_ID = slice(ETH_LEN + 4, ETH_LEN + 6)


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
        hit = self.frags.get(fkey)
        if hit is None or hit[1] <= now:
            if bytes(f[IP_DST]) in self.tables.cluster_ips:
                return self._drop(DropReason.FRAG_NOT_SUPPORTED,
                                  "fragment to a ClusterIP before its first fragment")
            return self._policy(f, proto, 0, pod)  # no ports seen: only port-less rules
        rw = hit[0]
        if rw is not None:
            rw.apply(f, ETH_LEN, l4, PROTO_ICMP, end)  # addresses and IP checksum only
        if not word & _MF:
            del self.frags[fkey]  # the last fragment
        return None

    def _first_fragment(self, f: bytearray, l4: int, end: int, proto: int, now: float,
                        pod: LocalPod | None, key: bytes, fkey: bytes) -> list[Action] | None:
        out = self._track(f, l4, end, proto, False, now, pod)
        if out is not None:
            return out  # rejected or denied: its other fragments meet no entry
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
        return None

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
    """RFC 791 §3.2 fragmentation of the unfragmented IPv4 packet at data[ip:] (data[:ip], its
    MAC or VXLAN header, kept in front of each) into fragments of at most `mtu` bytes: each
    carries a multiple of 8 payload bytes but the last, the packet's identification, MF on all
    but the last, the copied options after the first, and its own header checksum. The L4
    header and checksum stay in the first fragment, valid for the whole datagram."""
    ihl = (data[ip] & 0xF) * 4
    end = ip + U16.unpack_from(data, ip + 2)[0]
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
        U16.pack_into(hdr, 6, (_MF if more else 0) | (off >> 3))
        U16.pack_into(hdr, 10, 0)
        U16.pack_into(hdr, 10, checksum(hdr))
        out.append(b"".join((head, hdr, chunk)))
        off += len(chunk)
    return out
