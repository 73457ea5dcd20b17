"""The kernel features emunet's datapath and kernel-mode nodes use, probed one by one in a
throwaway network namespace (`unshare -n`, gone with the process), with no timing in them: run
inside the VM by tests/vm/story.sh to say what a distribution kernel (Debian 12's 6.1) has.
Prints one line per feature (ok / MISSING and the error) and exits 1 if one the agents' datapath
needs is missing (netem and nftables serve only kernel-mode nodes, which say so themselves).

    unshare -n python3 tests/vm/kernel_features.py
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys

SOL_UDP, UDP_SEGMENT, UDP_GRO = 17, 103, 104
SOL_PACKET, PACKET_VNET_HDR = 263, 15
ETH_P_ALL = 3


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=30)


def udp_gso() -> None:
    """A 3-segment UDP GSO send over loopback arrives as 3 datagrams (Linux >= 4.18)."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    tx.sendmsg([b"x" * 3000], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", 1000))])
    sizes = [len(rx.recv(65536)) for _ in range(3)]
    assert sizes == [1000, 1000, 1000], sizes


def udp_gro() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(SOL_UDP, UDP_GRO, 1)
    assert s.getsockopt(SOL_UDP, UDP_GRO) == 1


def packet_vnet_hdr() -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.bind(("lo", 0))


def veth_offloads() -> None:
    """A veth pair whose GRO, TSO and checksum offloads ethtool can switch (as host.netlink)."""
    sh("ip", "link", "add", "kf0", "type", "veth", "peer", "name", "kf1")
    sh("ip", "link", "set", "kf0", "up")
    sh("ip", "link", "set", "kf1", "up")
    sh("ethtool", "-K", "kf0", "gro", "on", "tso", "on", "tx-checksumming", "on")
    sh("ethtool", "-K", "kf1", "gro", "off", "tso", "off", "tx-checksumming", "off")
    out = subprocess.run(["ethtool", "-k", "kf0"], capture_output=True, text=True).stdout
    assert "generic-receive-offload: on" in out, out


def vxlan() -> None:
    sh("ip", "link", "add", "kfvx", "type", "vxlan", "id", "1", "dstport", "8472", "nolearning")


def netem() -> None:
    sh("ip", "link", "add", "kfn0", "type", "veth", "peer", "name", "kfn1")
    sh("tc", "qdisc", "add", "dev", "kfn0", "root", "handle", "1:", "netem", "delay", "1ms",
       "loss", "1%")
    sh("tc", "qdisc", "add", "dev", "kfn0", "parent", "1:", "handle", "2:", "tbf", "rate",
       "10mbit", "burst", "32kbit", "latency", "50ms")


def nftables() -> None:
    """A kube-proxy-style DNAT ruleset like emunet.host.kernelnode's (nat, fib, masquerade)."""
    rules = "\n".join((
        "table ip kf {",
        "  chain pre { type nat hook prerouting priority dstnat;",
        "    ip daddr 10.43.0.10 tcp dport 53 dnat to 10.42.1.2:53; }",
        "  chain post { type nat hook postrouting priority srcnat;",
        "    ip saddr 10.42.0.0/16 ip daddr != 10.42.0.0/16 masquerade; }",
        "  chain in { type filter hook prerouting priority 0;",
        "    fib daddr type local tcp dport 30000-32767 accept; }",
        "}", ""))
    subprocess.run(["nft", "-f", "-"], input=rules, check=True, capture_output=True, text=True,
                   timeout=30)


OPTIONAL = {"netem + tbf qdiscs", "nftables nat/fib/masquerade"}


def main() -> int:
    missing = 0
    for name, probe in (("UDP GSO (UDP_SEGMENT)", udp_gso), ("UDP GRO (UDP_GRO)", udp_gro),
                        ("AF_PACKET + PACKET_VNET_HDR", packet_vnet_hdr),
                        ("veth offloads (gro/tso/csum via ethtool)", veth_offloads),
                        ("vxlan links", vxlan), ("netem + tbf qdiscs", netem),
                        ("nftables nat/fib/masquerade", nftables)):
        try:
            probe()
            print(f"ok       {name}")
        except (OSError, AssertionError, subprocess.SubprocessError) as e:
            err = getattr(e, "stderr", "") or e
            print(f"MISSING  {name}: {str(err).strip()}"
                  + (" (kernel-mode nodes only)" if name in OPTIONAL else ""))
            missing += name not in OPTIONAL
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
