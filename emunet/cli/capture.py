"""`emunet capture POINT -w FILE.pcap`: a pcap of what passes one point of the journey.

The points are listed in `emunet capture --help` (emunet.cli.parser.CAPTURE_POINTS). An
AF_PACKET socket per interface is created inside the right namespace (a socket keeps the
namespace it was made in); Scapy's PcapWriter writes the file (LINKTYPE_ETHERNET).
"""

from __future__ import annotations

import argparse
import selectors
import socket
import time
from pathlib import Path

from emunet import naming
from emunet.cli.common import CLIError, load_state, need_root
from emunet.host.netns import socket_in_netns

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8


def interfaces(point: str, namespace: str | None) -> tuple[str, list[str], str]:
    """(netns, interfaces, description) for a capture point."""
    state = load_state()
    parts = point.split("/")
    if parts[0] == "node" and len(parts) in (2, 3):
        try:
            node = state.node(parts[1])
        except Exception:
            raise CLIError(f"no node {parts[1]!r} (see `emunet get nodes`)", code=2) from None
        if len(parts) == 2:
            return node.netns, [naming.UNDERLAY_IFNAME], f"{node.name} underlay eth0"
        if parts[2] != "veths":
            raise CLIError(f"capture point {point!r}: use node/NAME or node/NAME/veths", code=2)
        veths = sorted(p.host_ifname for p in state.pods.values() if p.node == node.name)
        return node.netns, veths, f"{node.name} pod veths ({len(veths)})"
    ns, _, name = point.rpartition("/")
    ns = ns or namespace or "default"
    pod = state.pods.get((ns, name))
    if pod is None:
        raise CLIError(f"capture point {point!r}: no pod {name!r} in namespace {ns}, and not "
                        "node/NAME[/veths]", code=2)
    return pod.netns, [naming.POD_IFNAME], f"{ns}/{name} eth0"


def capture(netns: str, ifaces: list[str], path: Path, count: int | None,
            duration: float | None) -> int:
    """Capture until `count` packets or `duration` seconds (or Ctrl-C); returns packets."""
    sel = selectors.DefaultSelector()
    socks = []
    try:
        for ifname in ifaces:
            s = socket_in_netns(netns, socket.AF_PACKET, socket.SOCK_RAW, 0)
            socks.append(s)
            try:
                s.bind((ifname, ETH_P_ALL))
            except OSError as e:
                raise CLIError(f"cannot capture on {ifname} in {netns}: {e.strerror}") from None
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        n = 0
        end = time.monotonic() + duration if duration else None
        from scapy.utils import PcapWriter  # ~0.5 s to import: only `capture` needs it

        with PcapWriter(str(path), linktype=1, sync=True) as w:
            w.write_header(None)  # even an empty capture is a valid pcap (LINKTYPE_ETHERNET)
            try:
                while count is None or n < count:
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    for key, _ in sel.select(left if left is not None else 1.0):
                        try:
                            data = key.fileobj.recv(65535)  # type: ignore[union-attr]
                        except BlockingIOError:
                            continue
                        t = time.time()
                        w.write_packet(data, sec=int(t), usec=int((t % 1) * 1e6),
                                       caplen=len(data), wirelen=len(data))
                        n += 1
                        if count is not None and n >= count:
                            break
            except KeyboardInterrupt:
                pass
        return n
    finally:
        for s in socks:
            s.close()


def cmd_capture(a: argparse.Namespace) -> int:
    need_root("capture opens packet sockets in the cluster's namespaces")
    netns, ifaces, what = interfaces(a.point, a.namespace)
    if not ifaces:
        raise CLIError(f"nothing to capture at {a.point}: no interfaces")
    if a.count is None and a.duration is None:
        print("capturing until Ctrl-C (use -c N or --duration S to stop by itself)", flush=True)
    n = capture(netns, ifaces, Path(a.write), a.count, a.duration)
    print(f"{n} packets from {what} written to {a.write}")
    if a.point.startswith("node/"):
        print(f"VXLAN is on UDP 8472: tshark -r {a.write} -d udp.port==8472,vxlan")
    return 0
