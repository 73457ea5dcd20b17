"""The IPv6 half of the node pipeline (dual-stack, issue 19). Pure.

The same stages as IPv4's (emunet.datapath.pipeline), entered from one early ethertype test
(0x86DD) that IPv4 frames never reach: they branch off where IPv4's pipeline would drop a
non-IPv4 frame (`_from_pod`) or fails its IPv4 peer lookup (`_from_overlay`), so an IPv4
frame pays nothing for IPv6.

    from a pod:  ND / link-scope multicast -> validate source -> hop limit -> conntrack
                 -> (new flow) Service DNAT / REJECT -> egress + ingress policy -> route
                 -> deliver (hop limit - 1) | flannel-v6 VXLAN encap (IPv6 outer)
    from VXLAN (an IPv6 peer address): inner dst MAC = our v6 VTEP, an IPv6 frame from the
                 peer's IPv6 pod subnet -> conntrack (reverse NAT) -> ingress policy -> deliver

IPv6 has no header checksum (RFC 8200 §3): a routed hop only decrements the hop limit, and NAT
changes the upper-layer checksum alone, incrementally (RFC 1624) over the pseudo-header
(`ctconn.Rewrite._apply6`). Conntrack keys are 37 bytes (`ipv6pkt.tuple_key6`), never equal
to a 13-byte IPv4 key, in the one table. Established packets of an assured connection take
the fast path's IPv6 hops (emunet.datapath.fastpath `Hop6`), learnt from this pipeline.
Extension headers are not walked: a fragment (the source fragments, RFC 8200 §4.5) or any
other next header is routed untracked under port-less policy, and dropped to a ClusterIP.
"""

from __future__ import annotations

from emunet.datapath.actions import Action, Encap, Send
from emunet.datapath.ipv6pkt import (
    ETHERTYPE_IPV6,
    IP6_DST,
    IP6_HLIM,
    IP6_SRC,
    KEY6_DPORT,
    KEY6_DST,
    KEY6_SPORT,
    KEY6_SRC,
    MLD_TYPES,
    ND_REDIRECT,
    ND_RS,
    NH_FRAGMENT,
    NH_HOPOPTS,
    PROTO_ICMP6,
    ip6_str,
    link_local,
    parse_ipv6,
    tuple_key6,
)
from emunet.datapath.ipv6replies import Replies6
from emunet.datapath.reasons import DropReason
from emunet.datapath.tables import LocalPod
from emunet.packets import (
    ETH_DST,
    ETH_MACS,
    ETH_TYPE,
    PROTO_TCP,
    PROTO_UDP,
    TCP_OFF_FLAGS,
    U16,
    VXLAN,
)

_BEHIND_MACS = slice(ETH_MACS.stop, None)
_TRACKED = (PROTO_TCP, PROTO_UDP, PROTO_ICMP6)


class IPv6(Replies6):
    """Methods of Datapath for IPv6 frames (see the module doc)."""

    def _from_pod6(self, frame: bytes, pod: LocalPod, now: float) -> list[Action]:
        """An IPv6 frame from a local pod (its source MAC already checked)."""
        t = self.tables
        if not t.gateway_ip6:  # an IPv4-only node: as before dual-stack
            return self._drop(DropReason.UNSUPPORTED_L3, "ethertype 0x86dd")
        f = bytearray(frame)
        parsed = parse_ipv6(f)
        if parsed is None:
            return self._drop(DropReason.INVALID_PACKET, "bad IPv6 header")
        l4, end, nh = parsed
        if f[IP6_DST.start] == 0xFF:  # multicast: link-scope control only (module doc)
            if f[IP6_DST.start + 1] & 0xF != 2:
                return self._drop(DropReason.NO_ROUTE, f"multicast {ip6_str(f[IP6_DST])}")
            return self._nd(f, l4, end, nh, pod)
        if nh == NH_HOPOPTS or (nh == PROTO_ICMP6 and (ND_RS <= f[l4] <= ND_REDIRECT
                                                        or f[l4] in MLD_TYPES)):
            return self._nd(f, l4, end, nh, pod)  # unicast ND: a NUD probe of the gateway
        src = bytes(f[IP6_SRC])
        if src != pod.ip6 or not pod.ip6:
            if link_local(src) and f[IP6_DST] == t.gateway_ip6:
                return self._to_gateway6(f, l4, end, nh, pod)  # on-link, never routed
            return self._drop(DropReason.INVALID_SOURCE, f"src IP {ip6_str(src)}")
        dmac = bytes(f[ETH_DST])
        bridged = None
        if dmac != t.gateway_mac:
            bridged = t.pods_by_mac.get(dmac)
            if bridged is None:
                return self._drop(DropReason.NO_ROUTE, f"dst MAC {dmac.hex(':')}")
        elif f[IP6_HLIM] <= 1 and f[IP6_DST] != t.gateway_ip6:  # RFC 4443 §3.3
            err = self._time_exceeded6(f, l4, end, nh)
            if err is None:
                return self._drop(DropReason.TTL_EXCEEDED, "hop limit exceeded (no ICMPv6)")
            return self._drop(DropReason.TTL_EXCEEDED, "ICMPv6 time exceeded sent",
                              Send(pod.port, b"".join((pod.mac, t.gateway_mac, err[12:]))))
        out = self._track6(f, l4, end, nh, now, pod)
        if out is None and self.neigh and (reply := self.nodeport_reply6(f, now)) is not None:
            return self._verdicts(reply, now)  # a NodePort reply, un-NAT'ed (nodeport6)
        if out is None and bridged is not None:  # cni0 bridging: MACs and hop limit untouched
            self._c["forwarded"] += 1
            out = [Send(bridged.port, bytes(f))]
        return self._verdicts(out if out is not None else self._route6(f), now)

    def _track6(self, f: bytearray, l4: int, end: int, nh: int, now: float,
                pod: LocalPod | None) -> list[Action] | None:
        """Conntrack + NAT for IPv6 (IPv4's `_track`). None: carry on to routing."""
        t = self.tables
        src, dst = bytes(f[IP6_SRC]), bytes(f[IP6_DST])
        if nh not in _TRACKED:
            if dst in t.cluster_ips:
                if nh == NH_FRAGMENT:
                    return self._drop(DropReason.FRAG_NOT_SUPPORTED,
                                      "IPv6 fragment to a ClusterIP")
                return self._drop(DropReason.UNSUPPORTED_L4, f"next header {nh} to a ClusterIP")
            return self._check(src, dst, nh, 0, pod is not None)  # untracked, port-less rules
        if nh == PROTO_ICMP6 and f[l4] < 128:
            return self._icmp6_error(f, l4, end)
        key = tuple_key6(f, l4, nh)
        if key is None:  # other ICMPv6 informational messages: routed untracked
            if dst in t.cluster_ips:
                return self._drop(DropReason.UNSUPPORTED_L4, "ICMPv6 to a ClusterIP")
            return self._check(src, dst, nh, 0, pod is not None)
        flags = f[l4 + TCP_OFF_FLAGS] if nh == PROTO_TCP else 0
        if self.ct.established(key, f, l4, end, nh, flags, now):
            return None
        if pod is not None and dst in t.cluster_ips:
            return self._service6(f, l4, end, nh, key, flags, now, pod)
        if dst == t.gateway_ip6:
            return self._to_gateway6(f, l4, end, nh, pod)
        ports = (key[KEY6_SPORT], key[KEY6_DPORT])
        orig = (key[KEY6_SRC], key[KEY6_DST], *ports)
        reply = (orig[1], orig[0], ports[1], ports[0]) if nh != PROTO_ICMP6 else \
            (orig[1], orig[0], ports[0], ports[1])
        denied = self._check(src, dst, nh, U16.unpack(ports[1])[0], pod is not None)
        if denied is not None:
            return denied
        proxy = self._l7_redirect(nh)  # a local pod behind L7 policy: via its proxy
        if proxy is not None:
            return self._to_proxy(f, l4, end, nh, orig, reply, proxy, flags, now)
        self._track_routed(f, l4, end, nh, orig, reply, flags, now, pod is not None)
        return None

    def _service6(self, f: bytearray, l4: int, end: int, nh: int, key: bytes, flags: int,
                  now: float, pod: LocalPod) -> list[Action] | None:
        """kube-proxy for an IPv6 ClusterIP (IPv4's `Services._service`): DNAT to a random
        ready IPv6 endpoint (ClientIP affinity per family: the client's IPv6 address is its
        own key), or REJECT."""
        t = self.tables
        cip, dport = key[KEY6_DST], U16.unpack(key[KEY6_DPORT])[0]
        svc_name = t.cluster_ips[cip]
        if nh == PROTO_ICMP6:  # kube-proxy never answers pings to a VIP
            return self._drop(DropReason.UNSUPPORTED_L4, f"ICMPv6 to ClusterIP of {svc_name}")
        target = t.services.get((nh, cip, dport))
        if target is None or not target.backends:
            why = f"{svc_name}: " + ("no ready endpoints" if target else f"no port {dport}")
            return self._reject6(f, l4, end, nh, pod, why)
        return self._dnat(f, l4, end, nh, flags, now, target, svc_name, key[KEY6_SRC], cip,
                          key[KEY6_SPORT], key[KEY6_DPORT], t.gateway_ip6, True)

    def _route6(self, f: bytearray) -> list[Action]:
        """A routed hop: hop limit - 1 (no checksum covers it), then a local veth or the owning
        node's flannel-v6 VTEP (IPv6 outer header to its underlay_ip6)."""
        t = self.tables
        f[IP6_HLIM] -= 1
        dst = bytes(f[IP6_DST])
        lp = t.pods_by_ip6.get(dst)
        if lp is not None:
            f[ETH_MACS] = lp.routed_macs
            self._c["forwarded"] += 1
            return [Send(lp.port, bytes(f))]
        d = int.from_bytes(dst, "big")
        if d & t.local_mask6 == t.local_net6:
            return self._drop(DropReason.NO_ROUTE, f"no pod {ip6_str(dst)} on {t.node}")
        r = t.remote_for6(d)
        if r is None:
            return self._drop(DropReason.NO_ROUTE, f"{ip6_str(dst)} outside the cluster")
        if not r.underlay_ip6 or not r.encap_prefix6:
            return self._drop(DropReason.NO_ROUTE, f"{r.name} has no IPv6 underlay or VTEP")
        self._c["encap"] += 1
        return [Encap(r.underlay_ip6, t.vxlan_port, b"".join((r.encap_prefix6, f[_BEHIND_MACS])))]

    def _from_overlay6(self, payload: bytes, src_ip: str, now: float) -> list[Action]:
        """A VXLAN datagram from a peer's IPv6 underlay address (flannel-v6: VXLAN header and
        VNI already checked by `_from_overlay`): decap an IPv6 frame, deliver it."""
        t = self.tables
        peer = t.remotes_by_underlay6.get(src_ip)
        if peer is None:
            return self._drop(DropReason.INVALID_SOURCE, f"VXLAN from unknown {src_ip}")
        f = bytearray(payload[VXLAN.size:])
        if not t.vtep_mac6 or f[ETH_DST] != t.vtep_mac6:  # flannel-v6.1: PACKET_OTHERHOST
            return self._drop(DropReason.INVALID_PACKET, "inner dst MAC is not our v6 VTEP")
        if f[ETH_TYPE] != ETHERTYPE_IPV6:  # flannel-v6.1 routes IPv6 only
            return self._drop(DropReason.UNSUPPORTED_L3, f"inner ethertype 0x{f[ETH_TYPE].hex()}"
                              " over an IPv6 underlay")
        parsed = parse_ipv6(f)
        if parsed is None:
            return self._drop(DropReason.INVALID_PACKET, "bad inner IPv6 header")
        l4, end, nh = parsed
        if int.from_bytes(f[IP6_SRC], "big") & peer.mask6 != peer.net6:
            return self._drop(DropReason.INVALID_SOURCE, f"inner src {ip6_str(f[IP6_SRC])} not "
                              f"in {peer.name}'s subnet")
        if f[IP6_HLIM] <= 1 or f[IP6_DST] == t.gateway_ip6:
            if (mine := self._overlay_to_node6(f, l4, end, nh, peer)) is not None:
                return mine
        out = self._track6(f, l4, end, nh, now, None)
        if out is not None:
            return self._verdicts(out, now)
        if self.neigh and (reply := self.nodeport_reply6(f, now)) is not None:
            return self._verdicts(reply, now)  # a remote backend's NodePort reply
        if bytes(f[IP6_DST]) not in t.pods_by_ip6:
            return self._verdicts(self._drop(DropReason.NO_ROUTE, f"no pod "
                                             f"{ip6_str(f[IP6_DST])} on {t.node}"), now)
        self._c["decap"] += 1
        return self._verdicts(self._route6(f), now)

