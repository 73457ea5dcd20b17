"""NodePort plumbing on the host side: the outside client's address, the agent's eth0 socket,
and the node kernel's ingress drop. (The NAT itself is pure: emunet/datapath/nodeport.py.)

How a node port reaches the agent, with ip_forward=0 and no iptables (kube-proxy would use
iptables/nftables DNAT, Cilium a BPF program at tc ingress on the node's device):

- the agent opens an AF_PACKET socket on the node's underlay eth0 with a classic BPF filter
  (SO_ATTACH_FILTER) that accepts only unfragmented IPv4 TCP/UDP for the node's own address with
  a destination port in the node port range (30000-32767), so the VXLAN traffic and everything
  else stay with the kernel;
- a tc `clsact` ingress filter (u32, the port range as a few value/mask blocks) on eth0 takes
  those same packets away before the node's IP stack sees them, so the node kernel never answers
  with a RST or an ICMP port unreachable. Kernels without act_gact (this project's VM) cannot
  `action drop`: the filter redirects (act_mirred) to `npdrop`, an ifb device kept down, and a
  redirect to a down device is a drop (counted as overlimits in `tc -s filter show`).
  Packet taps run before tc ingress in the receive path (__netif_receive_skb_core delivers to
  ptype_all first), which is why tcpdump sees packets a tc ingress filter drops: the agent gets
  its copy, the kernel does not. ARP and ping to the node address stay the kernel's.

Linux's ephemeral ports (32768-60999) lie above the node port range, so the node's own
connections (the agents' VXLAN sockets) never collide with it, as Kubernetes intends.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
import subprocess

from emunet.host.manifest import HostError
from emunet.model import NODE_PORT_RANGE

ETH_P_IP = 0x0800
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
_INSN = struct.Struct("HBBI")  # struct sock_filter (linux/filter.h)


def outside_ip(underlay_cidr: str) -> str:
    """The outside client's underlay address: the last host of the underlay network."""
    return str(ipaddress.IPv4Network(underlay_cidr).broadcast_address - 1)


def bpf_program(node_ip: str) -> list[tuple[int, int, int, int]]:
    """cBPF: accept IPv4 TCP/UDP to node_ip, not a fragment, dst port in the node port range."""
    lo, hi = NODE_PORT_RANGE
    ip = int(ipaddress.IPv4Address(node_ip))
    return [
        (0x28, 0, 0, 12),          # 0  ldh [12]              ethertype
        (0x15, 0, 12, ETH_P_IP),   # 1  jeq #0x800    else drop
        (0x20, 0, 0, 30),          # 2  ld [30]               IPv4 destination
        (0x15, 0, 10, ip),         # 3  jeq #node_ip  else drop
        (0x30, 0, 0, 23),          # 4  ldb [23]              protocol
        (0x15, 1, 0, 6),           # 5  jeq #TCP      -> 7
        (0x15, 0, 7, 17),          # 6  jeq #UDP      else drop
        (0x28, 0, 0, 20),          # 7  ldh [20]              flags + fragment offset
        (0x45, 5, 0, 0x1FFF),      # 8  jset #0x1fff  (a non-first fragment) -> drop
        (0xB1, 0, 0, 14),          # 9  ldxb 4*([14]&0xf)     IPv4 header length
        (0x48, 0, 0, 16),          # 10 ldh [x+16]            L4 destination port
        (0x35, 0, 2, lo),          # 11 jge #lo       else drop
        (0x25, 1, 0, hi),          # 12 jgt #hi       -> drop
        (0x06, 0, 0, 0x40000),     # 13 ret #262144           accept the whole frame
        (0x06, 0, 0, 0),           # 14 ret #0                drop
    ]


def bpf_matches(prog: list[tuple[int, int, int, int]], frame: bytes) -> bool:
    """Run the program above on a frame (an interpreter for its opcodes, for unit tests)."""
    a = x = pc = 0
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        if code == 0x28:
            a = int.from_bytes(frame[k:k + 2], "big")
        elif code == 0x20:
            a = int.from_bytes(frame[k:k + 4], "big")
        elif code == 0x30:
            a = frame[k]
        elif code == 0xB1:
            x = 4 * (frame[k] & 0xF)
        elif code == 0x48:
            a = int.from_bytes(frame[x + k:x + k + 2], "big")
        elif code == 0x06:
            return k > 0
        else:
            taken = {0x15: a == k, 0x45: bool(a & k), 0x35: a >= k, 0x25: a > k}[code]
            pc += jt if taken else jf


def underlay_socket(node_ip: str, ifname: str = "eth0") -> socket.socket:
    """The agent's AF_PACKET socket on eth0 (call inside the node namespace): filtered before
    it is bound, so no unfiltered frame is ever queued on it."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        prog = bpf_program(node_ip)
        buf = ctypes.create_string_buffer(b"".join(_INSN.pack(*i) for i in prog))
        fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))  # struct sock_fprog
        s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        s.setsockopt(263, 23, 1)  # SOL_PACKET, PACKET_IGNORE_OUTGOING: not our own replies
        # ETH_P_ALL, not ETH_P_IP: only "all protocol" taps (ptype_all) are served before tc
        # ingress; a per-protocol handler would run after the drop and never see the packet
        s.bind((ifname, ETH_P_ALL))
    except OSError:
        s.close()
        raise
    s.setblocking(False)
    return s


DROP_DEV = "npdrop"  # an ifb device that stays down: redirecting to it drops


def port_blocks(lo: int, hi: int) -> list[tuple[int, int]]:
    """[lo, hi] as aligned (value, mask) blocks, the shape u32 matches (a CIDR split)."""
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, 0xFFFF & ~(size - 1)))
        lo += size
    return out


def ingress_drop_commands(netns: str, node_ip: str, ifname: str = "eth0") -> list[list[str]]:
    """ip/tc commands that keep node port packets from the node's own IP stack (see above)."""
    lo, hi = NODE_PORT_RANGE
    tc = ["tc", "-n", netns]
    cmds = [["ip", "-n", netns, "link", "add", DROP_DEV, "type", "ifb"],
            [*tc, "qdisc", "add", "dev", ifname, "clsact"]]
    for proto in (6, 17):
        for value, mask in port_blocks(lo, hi):
            cmds.append([*tc, "filter", "add", "dev", ifname, "ingress", "protocol", "ip",
                         "pref", "1", "u32", "match", "ip", "dst", f"{node_ip}/32",
                         "match", "ip", "protocol", str(proto), "0xff",
                         "match", "ip", "dport", str(value), hex(mask),
                         "action", "mirred", "egress", "redirect", "dev", DROP_DEV])
    return cmds


def install_ingress_drop(netns: str, node_ip: str) -> None:
    for cmd in ingress_drop_commands(netns, node_ip):
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise HostError(f"{' '.join(cmd)}: {r.stderr.strip()}")
