"""The node agent's receive side: reading frames and datagrams off the agent's sockets and
handing them to the Datapath, whose actions the transmit side (emunet.agent.tx) carries out.

A mixin of `emunet.agent.loop.Agent`, as Transmit is: a pod's AF_PACKET socket through its
PACKET_MMAP ring (emunet.agent.rxring) or with recv() until EAGAIN, each frame behind its
virtio_net_hdr (a TSO super-frame whole, a CHECKSUM_PARTIAL frame finished as a NIC would);
the VXLAN UDP sockets with UDP GRO (a train of datagrams of one sender, merged back into TCP
super-frames for the pod: emunet.datapath.gso); the node's eth0 for node ports. Each read
takes at most BATCH frames a socket per wake-up, so one busy pod cannot starve the others.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from emunet.agent.rxring import RxRing
from emunet.agent.tx import SOL_UDP, U16N, UDP_GRO
from emunet.datapath import gso
from emunet.packets import fill_l4_checksum

if TYPE_CHECKING:
    from emunet.observe.hook import ObservedDatapath

_GRO_CMSG_LEN = socket.CMSG_SPACE(4)
RECV_MAX = 65536 + 14 + gso.VNET_LEN  # a 64 KB GSO super-frame with its headers
BATCH = 64  # frames per socket per wakeup, so one busy pod cannot starve the others
_TCP_GSO = (gso.GSO_TCPV4, gso.GSO_TCPV6)  # TCP super-frames the pipeline takes whole


class Receive:
    """The receive half of the agent (see the module docstring)."""

    dp: ObservedDatapath
    udp: socket.socket
    eth0: socket.socket | None
    gso_size: int
    big: int
    csum_filled: int
    gso_stats: dict[str, int]
    _act: Callable[[list], None]  # Transmit's
    _lose_port: Callable[[str, OSError], None]  # the Agent's: a veth went away

    def _read_port(self, s: socket.socket, name: str, now: float) -> None:
        # recv(RECV_MAX) measured as fast as recv_into a reused buffer plus a copy (the
        # oversized bytes object is shrunk in place)
        recv, frame_in = s.recv, self._port_frame
        for _ in range(BATCH):
            try:
                data = recv(RECV_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # ENETDOWN/ENXIO: the pod's veth went away under us
                self._lose_port(name, e)
                return
            frame_in(data, name, now)

    def _read_ring(self, ring: RxRing, name: str, now: float) -> None:
        if ring.read(self._port_frame, BATCH, name, now) == 0:
            # woken with no frame in the ring: an error on the socket (the veth went away)
            try:
                ring.sock.recv(RECV_MAX, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                self._lose_port(name, e)

    def _port_frame(self, data: bytes, name: str, now: float) -> None:
        """One frame from a pod, behind its struct virtio_net_hdr (PACKET_VNET_HDR): flags,
        gso_type, ..., gso_size."""
        flags, gso_type = data[0], data[1]
        frame = data[gso.VNET_LEN:]
        if gso_type and len(frame) > self.big:
            if gso_type & ~gso.GSO_ECN not in _TCP_GSO:  # the veth only offloads TCP
                self.gso_stats["gso_dropped"] += 1
                return
            self.gso_stats["gso_rx"] += 1
            self.gso_size = U16N.unpack_from(data, 4)[0]  # gso_size
            try:
                self._act(self.dp.process(frame, name, now))
            finally:
                self.gso_size = 0
            return
        if flags & gso.VNET_F_NEEDS_CSUM:  # CHECKSUM_PARTIAL: finish it, as a NIC would
            buf = bytearray(frame)
            if fill_l4_checksum(buf):
                self.csum_filled += 1
            frame = bytes(buf)
        self._act(self.dp.process(frame, name, now))

    def _read_udp(self, now: float, sock: socket.socket | None = None) -> None:
        """VXLAN datagrams from the IPv4 socket, or `sock` (the IPv6 one: an address tuple of
        four, (host, port, flowinfo, scope_id), the host in the form the tables key by)."""
        recv = (sock or self.udp).recvmsg
        process, act = self.dp.process_underlay, self._act
        for _ in range(BATCH):
            try:
                data, anc, _flags, addr = recv(65535, _GRO_CMSG_LEN)
            except (BlockingIOError, InterruptedError):
                return
            src = addr[0]
            size = 0
            for level, kind, val in anc:
                if level == SOL_UDP and kind == UDP_GRO:
                    size = int.from_bytes(val[:4], sys.byteorder)
            if not size or size >= len(data):
                act(process(data, src, now))
                continue
            # a GRO train: datagrams of `size` bytes (the last may be shorter); consecutive
            # segments of one TCP flow become one super-frame for the pod (emunet.datapath.gso)
            grams = [data[i:i + size] for i in range(0, len(data), size)]
            for gram, gso_size in gso.coalesce_tcp(grams, 8):
                if gso_size:
                    self.gso_stats["gro_merged"] += 1
                    self.gso_size = gso_size
                    try:
                        act(process(gram, src, now))
                    finally:
                        self.gso_size = 0
                else:
                    act(process(gram, src, now))

    def _read_eth0(self, now: float) -> None:
        for _ in range(BATCH):
            try:
                data = self.eth0.recv(RECV_MAX)  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                return
            frame = data[gso.VNET_LEN:]
            if data[1] and len(frame) > self.big:  # a GRO-merged TCP train (vnet gso_type)
                if data[1] & ~gso.GSO_ECN not in _TCP_GSO:  # TCPv4, or TCPv6 (dual-stack)
                    self.gso_stats["gso_dropped"] += 1
                    continue
                self.gso_stats["eth0_gro_rx"] += 1
                self.gso_size = U16N.unpack_from(data, 4)[0]
                try:  # a super-frame: cut to MSS on the way, never "too big" (nodeport6)
                    self._act(self.dp.process_nodeport(frame, now, True))
                finally:
                    self.gso_size = 0
                continue
            self._act(self.dp.process_nodeport(frame, now))
