"""NodePort plumbing on the host side: the outside client's addresses, the agent's eth0 socket,
and the node kernel's ingress drop. (The NAT itself is pure: emunet/datapath/nodeport.py.)

How a node port reaches the agent, with ip_forward=0 and no iptables (kube-proxy would use
iptables/nftables DNAT, Cilium a BPF program at tc ingress on the node's device):

- the agent opens an AF_PACKET socket on the node's underlay eth0 with a classic BPF filter
  (SO_ATTACH_FILTER) that accepts only unfragmented IPv4 TCP/UDP for the node's own address with
  a destination port in the node port range (30000-32767), and in a dual-stack cluster IPv6
  TCP/UDP (no extension header) for the node's IPv6 underlay address, so the VXLAN traffic,
  ICMPv6 and Neighbour Discovery and everything else stay with the kernel;
- a tc `clsact` ingress filter (u32, the port range as a few value/mask blocks) on eth0 takes
  those same packets away before the node's IP stack sees them, so the node kernel never answers
  with a RST or an ICMP port unreachable. Kernels without act_gact (this project's VM) cannot
  `action drop`: the filter redirects (act_mirred) to `npdrop`, an ifb device kept down, and a
  redirect to a down device is a drop (counted as overlimits in `tc -s filter show`).
  Packet taps run before tc ingress in the receive path (__netif_receive_skb_core delivers to
  ptype_all first), which is why tcpdump sees packets a tc ingress filter drops: the agent gets
  its copy, the kernel does not. ARP, NDP and ping to the node address stay the kernel's.

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
ETH_P_IPV6 = 0x86DD
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
_INSN = struct.Struct("HBBI")  # struct sock_filter (linux/filter.h)


def outside_ip(underlay_cidr: str) -> str:
    """The outside client's underlay address: the last host of the underlay network."""
    return str(ipaddress.IPv4Network(underlay_cidr).broadcast_address - 1)


def outside_ip6(underlay_cidr6: str) -> str:
    """The outside client's IPv6 underlay address (dual-stack): `<range>::fe`, the twin of
    IPv4's .254 (nodes count up from ::b), or the range's last address but one when it is too
    small to hold ::fe."""
    net = ipaddress.IPv6Network(underlay_cidr6)
    ip = net.network_address + 0xFE
    return str(ip if ip in net and ip != net.broadcast_address else net.broadcast_address - 1)


def bpf_program(node_ip: str, node_ip6: str | None = None) -> list[tuple[int, int, int, int]]:
    """cBPF: accept IPv4 TCP/UDP to node_ip, not a fragment, and (dual-stack) IPv6 TCP/UDP to
    node_ip6 right behind the fixed header (no extension header: a fragment or anything else
    stays the kernel's, as do ICMPv6 and Neighbour Discovery), dst port in the node port
    range."""
    lo, hi = NODE_PORT_RANGE
    ip = int(ipaddress.IPv4Address(node_ip))
    # (code, jump-if-true label, jump-if-false label, k); label None: the next instruction
    prog: list[tuple[str | None, int, str | None, str | None, int]] = [
        (None, 0x28, None, None, 12),          # ldh [12]              ethertype
        (None, 0x15, None, "v6", ETH_P_IP),    # jeq #0x800   else the IPv6 test
        (None, 0x20, None, None, 30),          # ld [30]               IPv4 destination
        (None, 0x15, None, "drop", ip),        # jeq #node_ip
        (None, 0x30, None, None, 23),          # ldb [23]              protocol
        (None, 0x15, "frag", None, 6),         # jeq #TCP
        (None, 0x15, None, "drop", 17),        # jeq #UDP
        ("frag", 0x28, None, None, 20),        # ldh [20]              flags + fragment offset
        (None, 0x45, "drop", None, 0x1FFF),    # jset #0x1fff: a non-first fragment
        (None, 0xB1, None, None, 14),          # ldxb 4*([14]&0xf)     IPv4 header length
        (None, 0x48, None, None, 16),          # ldh [x+16]            L4 destination port
        ("port", 0x35, None, "drop", lo),      # jge #lo
        (None, 0x25, "drop", None, hi),        # jgt #hi
        (None, 0x06, None, None, 0x40000),     # ret #262144           accept the whole frame
    ]
    if node_ip6:
        words = struct.unpack("!4I", ipaddress.IPv6Address(node_ip6).packed)
        prog += [
            ("v6", 0x15, None, "drop", ETH_P_IPV6),  # jeq #0x86dd (A: the ethertype)
            (None, 0x30, None, None, 20),            # ldb [20]            next header
            (None, 0x15, "dst6", None, 6),           # jeq #TCP
            (None, 0x15, None, "drop", 17),          # jeq #UDP
        ]
        for i, w in enumerate(words):                # ld [38+4i]; jeq      IPv6 destination
            prog += [("dst6" if i == 0 else None, 0x20, None, None, 38 + 4 * i),
                     (None, 0x15, None, "drop", w)]
        prog += [(None, 0x28, None, None, 56),       # ldh [56]            L4 destination port
                 (None, 0x35, None, "drop", lo), (None, 0x25, "drop", None, hi),
                 (None, 0x06, None, None, 0x40000)]
    prog.append(("drop", 0x06, None, None, 0))       # ret #0              drop
    where = {label: i for i, (label, *_rest) in enumerate(prog) if label}
    where.setdefault("v6", where["drop"])  # IPv4 only: not IPv4 is dropped
    return [(code, where[jt] - i - 1 if jt else 0, where[jf] - i - 1 if jf else 0, k)
            for i, (_label, code, jt, jf, k) in enumerate(prog)]


def bpf_matches(prog: list[tuple[int, int, int, int]], frame: bytes) -> bool:
    """Run the program above on a frame (an interpreter for its opcodes, for unit tests)."""
    # the kernel's checker (bpf_check_classic): jumps go forward, 8-bit offsets, in the program
    assert all(0 <= jt < 256 and 0 <= jf < 256 and i + 1 + max(jt, jf) < len(prog)
               for i, (code, jt, jf, _) in enumerate(prog) if code & 0x07 == 0x05), \
        "invalid cBPF jump"  # BPF_JMP class
    assert prog[-1][0] == 0x06, "a cBPF program ends in a return"
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


def underlay_socket(node_ip: str, ifname: str = "eth0", node_ip6: str | None = None
                    ) -> socket.socket:
    """The agent's AF_PACKET socket on eth0 (call inside the node namespace): filtered before
    it is bound, so no unfiltered frame is ever queued on it (`node_ip6`: dual-stack, IPv6
    node ports too)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        prog = bpf_program(node_ip, node_ip6)
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


def ingress_drop_commands(netns: str, node_ip: str, ifname: str = "eth0",
                          node_ip6: str | None = None) -> list[list[str]]:
    """ip/tc commands that keep node port packets from the node's own IP stack (see above);
    `node_ip6`: also IPv6 TCP/UDP to it (u32's `ip6` offsets: the next header field and a
    destination port right behind the fixed 40-byte header), its own preference, as tc keeps
    one filter list per (preference, protocol)."""
    lo, hi = NODE_PORT_RANGE
    tc = ["tc", "-n", netns]
    cmds = [["ip", "-n", netns, "link", "add", DROP_DEV, "type", "ifb"],
            [*tc, "qdisc", "add", "dev", ifname, "clsact"]]
    families = [("ip", "1", f"{node_ip}/32")]
    if node_ip6:
        families.append(("ip6", "2", f"{node_ip6}/128"))
    for match, pref, dst in families:
        for proto in (6, 17):
            for value, mask in port_blocks(lo, hi):
                cmds.append([*tc, "filter", "add", "dev", ifname, "ingress", "protocol",
                             "ip" if match == "ip" else "ipv6", "pref", pref, "u32",
                             "match", match, "dst", dst,
                             "match", match, "protocol", str(proto), "0xff",
                             "match", match, "dport", str(value), hex(mask),
                             "action", "mirred", "egress", "redirect", "dev", DROP_DEV])
    return cmds


def install_ingress_drop(netns: str, node_ip: str, node_ip6: str | None = None) -> None:
    for cmd in ingress_drop_commands(netns, node_ip, node_ip6=node_ip6):
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise HostError(f"{' '.join(cmd)}: {r.stderr.strip()}")
