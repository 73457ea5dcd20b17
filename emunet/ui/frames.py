"""A trace's recorded headers as Scapy packets: decoded per hop for the page, and as a pcap.

The agents record each traced packet's headers (`observe.record.headers`: MACs, IPs, TTL, TOS,
ports, TCP flags, ICMP type/id, the payload's length; the VXLAN outer IPs, port and VNI), not
its bytes, so the frames here are rebuilt from those fields with Scapy and then decoded by it:
every recorded field is exact; checksums are Scapy's (recomputed), the payload is that many
zero bytes, TCP sequence numbers and options are Scapy's defaults and the outer Ethernet
header of VXLAN (not recorded) is left zero. Scapy is
imported on first use: it takes half a second.
"""

from __future__ import annotations

import io
from typing import Any

NOT_RECORDED = ("Rebuilt from the datapath's records: the header fields shown are the recorded "
                "ones; checksums are recomputed, TCP sequence numbers and options, payload "
                "bytes (zeroed) and the outer MACs are not recorded.")


def packet(inner: dict[str, Any], outer: dict[str, Any] | None = None) -> Any:
    """The Scapy packet for recorded headers `inner` (wrapped in VXLAN when `outer`)."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN
    from scapy.packet import Raw

    p = Ether(src=inner.get("smac") or "00:00:00:00:00:00",
              dst=inner.get("dmac") or "00:00:00:00:00:00")
    if "src" in inner:
        ip = IP(src=inner["src"], dst=inner["dst"], ttl=inner.get("ttl", 64),
                tos=inner.get("tos", 0))
        proto = inner.get("proto")
        if proto == "TCP":
            flags = "".join(f[0] for f in inner.get("flags", []) if f in
                            ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"))
            l4: Any = TCP(sport=inner.get("sport", 0), dport=inner.get("dport", 0),
                          flags=flags)
            payload = inner.get("payload", 0)
            p = p / ip / l4 / Raw(b"\0" * payload) if payload else p / ip / l4
        elif proto == "UDP":
            p = p / ip / UDP(sport=inner.get("sport", 0), dport=inner.get("dport", 0))
        elif proto == "ICMP":
            t, c = (inner.get("icmp") or [0, 0])[:2]
            p = p / ip / ICMP(type=t, code=c, id=inner.get("id", 0))
        else:
            p = p / ip
    if outer:
        vx = VXLAN(vni=outer.get("vni") or 0, flags=0x08)
        p = (Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00")
             / IP(src=outer.get("src") or "0.0.0.0", dst=outer.get("dst") or "0.0.0.0", ttl=64)
             / UDP(sport=outer.get("sport") or 8472, dport=outer.get("dport") or 8472)
             / vx / p)
    return p


def decode(headers: dict[str, Any]) -> dict[str, Any]:
    """A hop's headers decoded by Scapy: per layer its fields, and Scapy's `show` text."""
    p = packet(headers.get("inner") or {}, headers.get("outer"))
    p = p.__class__(bytes(p))  # dissect the built bytes: what a capture would show
    layers = []
    layer = p
    while layer is not None and layer.name != "NoPayload":
        if layer.name == "Raw":
            layers.append({"layer": "Raw", "fields": {"length": len(layer.load)}})
            break
        fields = {f.name: _jsonable(layer.getfieldval(f.name)) for f in layer.fields_desc}
        layers.append({"layer": layer.name, "fields": fields})
        layer = layer.payload if layer.payload else None
    return {"layers": layers, "show": p.show(dump=True), "note": NOT_RECORDED}


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)


def record_frames(rec: dict[str, Any]) -> list[Any]:
    """The frames one record saw: in (encapsulated if it came from the overlay) and out."""
    t = float(rec.get("time", 0.0))
    out = []
    if rec.get("pkt"):
        out.append(packet(rec["pkt"], rec.get("outer") if rec.get("from") == "overlay"
                          else None))
    if rec.get("pkt_out"):
        out.append(packet(rec["pkt_out"], rec.get("out_outer") if rec.get("to") == "overlay"
                          else None))
    for p in out:
        p.time = t
    return out


def pcap(records: list[dict[str, Any]]) -> bytes:
    """A pcap (LINKTYPE_ETHERNET) of the records' frames, in record order."""
    from scapy.utils import PcapWriter

    buf = io.BytesIO()
    w = PcapWriter(buf, linktype=1, sync=True)
    for rec in records:
        for p in record_frames(rec):
            w.write(p)
    w.flush()
    data = buf.getvalue()
    return data if data else _empty_pcap()


def _empty_pcap() -> bytes:
    import struct
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
