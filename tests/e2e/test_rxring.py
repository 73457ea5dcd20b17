"""The agent's PACKET_MMAP receive ring (emunet.agent.rxring) against the real kernel, on a veth
pair in a namespace of the test's own: frames come out whole and in order with the
virtio_net_hdr recv() would give, one too big for a slot comes through the copy path in its
turn, and a ring the reader does not empty drops the excess and says so."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import pytest

from emunet.agent.rxring import SLOT, RxRing
from emunet.host.netns import socket_in_netns

SOL_PACKET, PACKET_VNET_HDR = 263, 15


@pytest.fixture
def veth(unique_prefix) -> Iterator[str]:
    ns = unique_prefix("emrr")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"], check=True)
        for cmd in (["link", "add", "va", "mtu", "9000", "type", "veth", "peer", "name", "vb",
                     "mtu", "9000"], ["link", "set", "va", "up"], ["link", "set", "vb", "up"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def _frame(i: int, size: int) -> bytes:
    head = bytes.fromhex("0a580a2a0101" "0a580a2a0103" "88b5")  # local experimental type
    return head + i.to_bytes(4, "big") + bytes((i + k) % 251 for k in range(size - 18))


def _pair(ns: str, slots: int) -> tuple[socket.socket, RxRing]:
    tx = socket_in_netns(ns, socket.AF_PACKET, socket.SOCK_RAW, 0)
    tx.bind(("va", 0))
    rx = socket_in_netns(ns, socket.AF_PACKET, socket.SOCK_RAW, 0)
    rx.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    ring = RxRing(rx, slots)  # before the bind, as the agent does
    rx.bind(("vb", 0x0003))
    rx.setblocking(False)
    return tx, ring


def test_frames_come_out_whole_in_order_big_ones_through_the_copy_path(veth):
    tx, ring = _pair(veth, 16)
    try:
        sizes = [60, 1514, 3 * SLOT, 200, 8000, 64]  # two bigger than a slot
        sent = [_frame(i, n) for i, n in enumerate(sizes)]
        for f in sent:
            tx.send(f)
        got: list[bytes] = []
        n = ring.read(lambda data, name, now: got.append(data), 64, "vb", 0.0)
        assert n == len(sent)
        assert [g[10:] for g in got] == sent  # the frames, behind a 10-byte virtio_net_hdr
        assert all(g[:10] == bytes(10) for g in got)  # nothing to offload on a raw send
        assert ring.read(lambda *a: got.append(a[0]), 64, "vb", 0.0) == 0  # emptied
        assert ring.truncated == 0 and ring.dropped() == 0
    finally:
        ring.close()
        ring.sock.close()
        tx.close()


def test_a_full_ring_drops_the_excess_and_counts_it(veth):
    tx, ring = _pair(veth, 8)
    try:
        for i in range(12):
            tx.send(_frame(i, 100))
        got: list[bytes] = []
        assert ring.read(lambda data, name, now: got.append(data), 64, "vb", 0.0) == 8
        assert [g[24:28] for g in got] == [i.to_bytes(4, "big") for i in range(8)]
        assert ring.dropped() == 4 and ring.dropped() == 0  # read and reset
        tx.send(_frame(99, 100))  # the slots went back to the kernel: room again
        assert ring.read(lambda data, name, now: got.append(data), 64, "vb", 0.0) == 1
        assert got[-1][24:28] == (99).to_bytes(4, "big")
    finally:
        ring.close()
        ring.sock.close()
        tx.close()
