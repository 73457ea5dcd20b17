"""A pod veth's frames through a PACKET_MMAP receive ring (TPACKET_V2), so that reading a frame
costs no syscall (issue 16 §4; `scripts/bench rxring`: 0.23-0.27x the cost of recv()).

recv() until EAGAIN costs two syscalls for a wake-up with one frame (request/response, ping)
and n + 1 for n. With a ring, the kernel copies each frame into the next free slot and sets the
slot's status word; the agent copies it out and hands the slot back by zeroing that word, and
the batch ends at the first slot still the kernel's: no failing syscall either. Layout of a
slot (linux/if_packet.h, Documentation/networking/packet_mmap.rst): a `tpacket2_hdr`, then at
`tp_mac - 10` the `virtio_net_hdr` PACKET_VNET_HDR asks for, then the frame; so a slot's bytes
from there on are exactly what recv() returns and one frame handler serves both.

What does not fit a slot (a TSO super-frame from the pod, up to 64 KB) is not truncated:
PACKET_COPY_THRESH makes the kernel put the whole packet on the socket's queue as well and
mark the slot TP_STATUS_COPY, and the agent reads it with recv() in its turn (af_packet.c
tpacket_rcv). TPACKET_V3 is not used: it hands the reader whole blocks, when full or when their
retire timer fires (>= 1 ms), which would add a millisecond to a lone request.

The cost is memory: `SLOTS` x `SLOT` bytes per pod socket, mapped into the agent (it counts
in its RSS), and a pod that outruns the agent by more than `SLOTS` frames loses the excess
(the socket buffer it replaces holds SOCK_BUF bytes). Counted in `ring_dropped`.
"""

from __future__ import annotations

import mmap
import socket
import struct
from collections.abc import Callable

SOL_PACKET = 263
PACKET_VERSION, PACKET_RX_RING, PACKET_COPY_THRESH = 10, 5, 7
PACKET_STATISTICS = 6
TPACKET_V2 = 1
TP_STATUS_USER, TP_STATUS_COPY = 1, 2
SLOT = 2048  # a 1500-byte frame with its headers; a jumbo frame takes the copy path
SLOTS = 64  # 128 KB a pod socket: 256 MB for 2,000 pods (issue 17's 1.5 GB budget)
VNET_LEN = 10  # struct virtio_net_hdr, right before the frame
_HDR2 = struct.Struct("IIIHH")  # tpacket2_hdr: tp_status, tp_len, tp_snaplen, tp_mac, tp_net
_FREE = b"\0\0\0\0"


class RxRing:
    """The ring of one bound AF_PACKET socket (PACKET_VNET_HDR already set on it)."""

    def __init__(self, s: socket.socket, slots: int = SLOTS) -> None:
        s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        s.setsockopt(SOL_PACKET, PACKET_COPY_THRESH, 1)
        # struct tpacket_req: block size, blocks, frame size, frames (one block of them all)
        s.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack("IIII", SLOT * slots, 1, SLOT,
                                                             slots))
        self.sock, self.slots = s, slots
        self.map = mmap.mmap(s.fileno(), SLOT * slots)
        self.pos = 0
        self.truncated = 0

    def read(self, handle: Callable[[bytes, str, float], None], limit: int, name: str,
             now: float) -> int:
        """Hand up to `limit` frames (virtio_net_hdr + frame, as recv returns them) to
        `handle(data, name, now)`; returns how many slots were taken."""
        ring, unpack, recv, pos, slots = self.map, _HDR2.unpack_from, self.sock.recv, \
            self.pos, self.slots
        n = 0
        for n in range(limit):
            off = pos * SLOT
            status, length, snap, mac, _net = unpack(ring, off)
            if not status & TP_STATUS_USER:
                self.pos = pos
                return n
            if status & TP_STATUS_COPY:  # too big for a slot: the whole one is queued
                ring[off:off + 4] = _FREE
                pos = (pos + 1) % slots
                try:
                    data = recv(65536 + 64)
                except OSError:  # gone already (or the veth went: the caller finds out)
                    continue
                handle(data, name, now)
                continue
            data = ring[off + mac - VNET_LEN:off + mac + snap]
            ring[off:off + 4] = _FREE
            pos = (pos + 1) % slots
            if snap < length:  # cut and not copied (the queue was full): not a frame
                self.truncated += 1
                continue
            handle(data, name, now)
        self.pos = pos
        return limit

    def dropped(self) -> int:
        """Frames the kernel found no free slot for since the last call (PACKET_STATISTICS:
        struct tpacket_stats, read and reset)."""
        try:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return 0
        return struct.unpack("II", raw)[1]

    def close(self) -> None:
        self.map.close()
