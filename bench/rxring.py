"""Issue 16 §4: reading a pod's frames with recv() (what the agent does) against a PACKET_MMAP
RX ring (TPACKET_V2), per frame and per wake-up, on a veth in a namespace of our own.

    sudo scripts/bench rxring

Without its ring, the agent reads a pod socket with recv() until EAGAIN (emunet.agent.rx): a
wake-up with one frame (request/response, ping) costs two syscalls, a burst of n costs n + 1.
A ring costs no syscall per frame: the kernel writes each frame into a shared slot and flips
its status word; the reader copies the frame out and hands the slot back. What the agent would
also need (not measured here, decided from the kernel's af_packet.c): GSO super-frames (up to
64 KB) do not fit a 2 KB slot, so they go to the socket queue instead (PACKET_COPY_THRESH,
TP_STATUS_COPY) and are read with recv() as today; TPACKET_V3 packs frames into blocks that
the reader sees only when a block is full or its retire timer fires (>= 1 ms), which would
add a millisecond to every request/response, so V2 it is; and every pod socket holds its ring
(`SLOTS` x 2 KB) in memory.
Each figure is the median of 5 alternating rounds of BURSTS bursts.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import socket
import statistics
import struct
import subprocess
import time

SOL_PACKET, PACKET_VERSION, PACKET_RX_RING, PACKET_VNET_HDR = 263, 10, 5, 15
TPACKET_V2, TP_STATUS_USER = 1, 1
SLOT, SLOTS = 2048, 256  # a slot holds an MTU frame with its headers; 512 KB a socket
HDR2 = struct.Struct("IIIHH")  # tpacket2_hdr: tp_status, tp_len, tp_snaplen, tp_mac, tp_net
BURSTS, ROUNDS = 400, 5
FRAME = bytes.fromhex("0a580a2a0101" "0a580a2a0103" "0800") + bytes(98)  # a 112-byte frame


def _recv_reader(s: socket.socket):
    recv = s.recv

    def read() -> int:
        n = 0
        while True:  # as the agent: until EAGAIN
            try:
                recv(65536 + 24)
            except BlockingIOError:
                return n
            n += 1
    return read


def _ring_reader(s: socket.socket, ring: mmap.mmap):
    unpack, pos = HDR2.unpack_from, [0]

    def read() -> int:
        n, i = 0, pos[0]
        while True:
            off = i * SLOT
            status, _len, snap, mac, _net = unpack(ring, off)
            if not status & TP_STATUS_USER:
                pos[0] = i
                return n
            ring[off + mac - 10:off + mac + snap]  # virtio_net_hdr + frame, copied out (bytes)
            ring[off:off + 4] = b"\0\0\0\0"  # the slot back to the kernel
            i = (i + 1) % SLOTS
            n += 1
    return read


def _socket(ring: bool) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    if ring:
        s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    if ring:
        s.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack("IIII", SLOT * SLOTS, 1, SLOT,
                                                             SLOTS))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind(("vb", 3))
    s.setblocking(False)
    return s


def _round(tx: socket.socket, read, burst: int) -> float:
    """µs of reading per frame, `BURSTS` wake-ups of `burst` frames each."""
    spent, got = 0.0, 0
    for _ in range(BURSTS):
        for _ in range(burst):
            tx.send(FRAME)
        t = time.perf_counter()
        got += read()
        spent += time.perf_counter() - t
    if got != BURSTS * burst:
        raise RuntimeError(f"read {got} of {BURSTS * burst} frames")
    return spent / got * 1e6


def main() -> int:
    ns = f"emrx{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        # no IPv6 on the veths: their router solicitations would be frames we did not send
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"], check=True)
        for cmd in (["link", "add", "va", "type", "veth", "peer", "name", "vb"],
                    ["link", "set", "va", "up"], ["link", "set", "vb", "up"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), "setns")
        tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        tx.bind(("va", 0))
        print(f"  reading a pod veth, µs per frame (median of {ROUNDS} rounds of {BURSTS} "
              f"wake-ups; ring: TPACKET_V2, {SLOTS} x {SLOT} B = {SLOTS * SLOT >> 10} KB)")
        print(f"  {'frames per wake-up':<20}{'recv()':>10}{'ring':>10}{'ring/recv':>11}")
        for burst in (1, 8, 64):
            figs: dict[str, list[float]] = {"recv": [], "ring": []}
            for _ in range(ROUNDS):
                for name in ("recv", "ring"):  # one socket at a time sees the frames
                    s = _socket(name == "ring")
                    ring = mmap.mmap(s.fileno(), SLOT * SLOTS) if name == "ring" else None
                    try:
                        read = _ring_reader(s, ring) if ring else _recv_reader(s)
                        figs[name].append(_round(tx, read, burst))
                    finally:
                        if ring is not None:
                            ring.close()
                        s.close()
            r, g = statistics.median(figs["recv"]), statistics.median(figs["ring"])
            print(f"  {burst:<20}{r:>10.2f}{g:>10.2f}{g / r:>10.2f}x")
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
