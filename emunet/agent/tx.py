"""The node agent's transmit side: carrying out a Datapath's actions on the agent's sockets.

A mixin of `emunet.agent.Agent` (its methods use the agent's sockets and offload state, so
the per-packet calls stay plain method calls): Send to a pod's AF_PACKET socket (a TCP super-frame
whole, with a GSO virtio-net header), Encap to a peer VTEP over a connected UDP socket (a
super-frame cut into standard VXLAN datagrams and sent with UDP GSO), NodePort replies on
eth0, and the link shaper (`emunet link set`) in front of the underlay when one is set.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import TYPE_CHECKING

from emunet.datapath import Drop, Encap, Send, gso
from emunet.datapath.netem import link_shape
from emunet.datapath.nodeport import UNDERLAY_PORT
from emunet.policy.verdict import Verdict

if TYPE_CHECKING:
    from emunet.datapath.netem import UnderlayShaper
    from emunet.state.cluster import ClusterState

SO_NO_CHECK = 11  # zero outer UDP checksum, as Linux's vxlan driver sends (RFC 7348 §5)
SOL_UDP, UDP_SEGMENT, UDP_GRO = 17, 103, 104  # UDP GSO (Linux >= 4.18) and GRO (>= 5.0)
U16N = struct.Struct("=H")
SOCK_BUF = 4 << 20


class Transmit:
    """The send half of the agent (see the module docstring)."""

    ports: dict[str, socket.socket]
    peer_socks: dict[tuple[str, int, bool], socket.socket]
    eth0: socket.socket | None
    shaper: UnderlayShaper
    _state: ClusterState
    node: str
    gso_size: int
    big: int
    tx_errors: int
    gso_stats: dict[str, int]

    @staticmethod
    def _bufs(s: socket.socket) -> None:
        for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # *BUFFORCE
            try:
                s.setsockopt(socket.SOL_SOCKET, force, SOCK_BUF)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, opt, SOCK_BUF)

    def _shape(self) -> None:
        """While this node's link is impaired, underlay sends go through the shaper; else the
        class's `_act` (an instance attribute shadows it): no cost when nothing is set."""
        if self.shaper.configure(link_shape(self._state.links.get(self.node))):
            self._act = self._act_shaped  # type: ignore[method-assign]
        else:
            self.__dict__.pop("_act", None)

    def _act_shaped(self, actions: list) -> None:
        rest = self.shaper.take(actions, self.gso_size, self.big, time.monotonic())
        if rest:
            Transmit._act(self, rest)

    def _peer(self, ip: str, port: int, checksum: bool = False) -> socket.socket:
        """A UDP socket connected to one peer VTEP: send() skips the per-datagram address
        parse and route lookup of sendto(). Its source port is ephemeral, which RFC 7348 §5
        allows (it recommends a hashed source port; receivers key on the destination port)."""
        s = self.peer_socks.get((ip, port, checksum))
        if s is None:
            me = self._state.node(self.node)
            if ":" in ip:  # flannel-v6: IPv6 outer, UDP checksums always (see Agent)
                s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                local = me.underlay_ip6
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                local = me.underlay_ip
                if not checksum:  # Linux refuses UDP GSO without checksums: its own socket
                    s.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
            self._bufs(s)
            s.bind((local, 0))
            s.connect((ip, port))
            s.setblocking(False)
            self.peer_socks[(ip, port, checksum)] = s
        return s

    def _act(self, actions: list) -> None:
        for a in actions:
            try:
                if type(a) is Send:
                    s = self.ports.get(a.port)
                    if s is None:
                        if a.port == UNDERLAY_PORT and self.eth0 is not None:  # NodePort
                            if self.gso_size and len(a.frame) > self.big:  # the wire: MSS
                                for seg in gso.segment_tcp(a.frame, 0, self.gso_size):
                                    self.eth0.send(gso.VNET_NONE + seg)
                            else:
                                self.eth0.send(gso.VNET_NONE + a.frame)
                        continue
                    if self.gso_size and len(a.frame) > self.big:
                        self._send_super(s, a.frame)
                    else:
                        s.send(gso.VNET_NONE + a.frame)
                elif type(a) is Encap:
                    if self.gso_size and len(a.payload) > self.big + 8:
                        self._encap_super(a)
                        continue
                    s = self.peer_socks.get((a.dst_ip, a.dst_port, False)) or self._peer(
                        a.dst_ip, a.dst_port)
                    s.send(a.payload)
                elif type(a) is not Drop and type(a) is not Verdict:
                    raise TypeError(f"unknown action {a!r}")
            except (BlockingIOError, OSError):
                self.tx_errors += 1  # a full queue or a vanished veth: the frame is lost

    def _send_super(self, s: socket.socket, frame: bytes) -> None:
        """A TCP super-frame to a pod, whole: a GSO vnet header and CHECKSUM_PARTIAL (the
        pseudo-header sum over the frame's final, NAT'ed addresses); the pod's kernel takes it
        as one 64 KB receive, as it would from a virtio NIC."""
        mv = memoryview(frame)
        if frame[12] == 0x86:  # IPv6 (0x86DD): TCP right behind the fixed header
            s.sendmsg((gso.vnet_tcp6(frame, 14, self.gso_size), mv[:54 + 16],
                       gso.partial_csum6(frame, 14), mv[54 + 18:]))
            return
        l4 = 14 + (frame[14] & 0xF) * 4
        s.sendmsg((gso.vnet_tcp4(frame, 14, self.gso_size), mv[:l4 + 16],
                   gso.partial_csum(frame, 14), mv[l4 + 18:]))

    def _encap_super(self, a: Encap) -> None:
        """A TCP super-frame (IPv4 or IPv6 inside) to another node: cut into MSS-sized inner
        frames (standard VXLAN datagrams, complete checksums), sent with UDP GSO: one sendmsg
        per up to 64 datagrams, which the kernel splits into separate datagrams before the
        wire."""
        parts = gso.segment_tcp_iov(a.payload, 8, self.gso_size)
        self.gso_stats["gso_segments"] += len(parts)
        s = self.peer_socks.get((a.dst_ip, a.dst_port, True)) or self._peer(
            a.dst_ip, a.dst_port, True)
        sizes = [len(h) + len(p) for h, p in parts]
        for r in gso.gso_ranges(sizes):
            try:  # scatter-gather: headers and payload views, never joined in Python
                if len(r) == 1:
                    s.sendmsg(parts[r.start])
                else:
                    s.sendmsg([x for i in r for x in parts[i]],
                              ((SOL_UDP, UDP_SEGMENT, U16N.pack(sizes[r.start])),))
            except OSError:
                self.tx_errors += 1
