"""The node datapath: one frame in, a list of actions out. Pure (no sockets, clock or logging).

Stage order follows Cilium's bpf_lxc (DESIGN.md §3):

    from a pod:  validate source -> ARP responder -> TTL check -> conntrack
                 -> (new flow) service LB / DNAT / reject -> egress policy (source pod)
                    + ingress policy (if the destination is local) -> route
                 -> deliver | VXLAN encap
    from VXLAN:  VXLAN header + VNI -> peer check -> conntrack (reverse NAT)
                 -> (new flow) ingress policy -> deliver

Policy (emunet.policy) is decided once per connection, after DNAT (on the backend pod IP and
targetPort, as Kubernetes specifies); conntrack then lets the rest of the connection and its
replies through on both nodes. A denied connection is dropped silently (no RST, no ICMP).

Routing mimics k3s + Flannel: the node is the pods' gateway (a frame sent to the gateway MAC is
routed: TTL-1, MACs rewritten), frames sent straight to a local pod's MAC are bridged as cni0
would, and other nodes' pod subnets go through flannel.1-style VXLAN (inner MACs are VTEPs).
"""

from __future__ import annotations

import random
from collections import Counter

from emunet import packets as pk
from emunet.datapath import ctscrub
from emunet.datapath.actions import Action, Drop, Encap, Send
from emunet.datapath.affinity import Affinity
from emunet.datapath.conntrack import Conn, Conntrack, Rewrite
from emunet.datapath.ipv6 import IPv6
from emunet.datapath.ipv6pkt import ETHERTYPE_IPV6
from emunet.datapath.nodeport import Neighbours
from emunet.datapath.reasons import DropReason
from emunet.datapath.tables import LocalPod, NodeTables
from emunet.packets import (
    ETH_DST,
    ETH_LEN,
    ETH_MACS,
    ETH_SRC,
    ETH_TYPE,
    ETHERTYPE_ARP,
    ETHERTYPE_IP,
    IP_CSUM,
    IP_DST,
    IP_SRC,
    IP_TTL,
    KEY_DPORT,
    KEY_DST,
    KEY_SPORT,
    KEY_SRC,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    TCP_OFF_FLAGS,
    TTL_DEC_DELTA,
    U16,
    apply_delta,
    parse_ipv4,
    tuple_key,
)

_ICMP_ERRORS = (pk.ICMP_UNREACH, pk.ICMP_TIME_EXCEEDED, 4, 5, 12)  # RFC 792 error types
_DROP_KEYS = {r: "drop:" + r.name for r in DropReason}  # counter names (Enum.name is slow)
_BEHIND_MACS = slice(ETH_MACS.stop, None)  # ethertype onwards: what VXLAN encap keeps


class Datapath(IPv6):
    """One node's pipeline. `rng` picks service backends (inject a seeded one in tests).

    The entry points for pod frames and VXLAN datagrams (`process`, `process_underlay`) are
    FastPath's (emunet.datapath.fastpath): established packets take their connection's
    precomputed hop, the rest the full pipeline here (`_from_pod`, `_from_overlay`);
    `fastpath=False` runs every packet through the pipeline (the differential tests and
    `scripts/bench pipeline` compare the two). ClusterIP DNAT is inherited from Services
    (emunet.datapath.services); ARP replies, REJECT, gateway pings and ICMP error NAT from
    Replies (emunet.datapath.replies); node ports on eth0 (`process_nodeport`, and the replies
    going back out) from NodePort (emunet.datapath.nodeport); IPv6 frames from IPv6
    (emunet.datapath.ipv6, ipv6replies), entered by one ethertype test IPv4 never reaches.
    """

    def __init__(self, tables: NodeTables, rng: random.Random, fastpath: bool = True) -> None:
        self.tables = tables
        self.rng = rng
        self.fastpath = fastpath
        self.route_gen = 0  # the routing inputs' generation, which fast path hops compare to
        self.slow_tos = -1  # no TOS byte keeps packets off the fast path (see FastPath)
        self.ct = Conntrack()
        self.affinity = Affinity()  # sessionAffinity: ClientIP
        self.frags: dict[bytes, tuple[Rewrite | None, float]] = {}  # emunet.datapath.frags
        # NodePort clients on the underlay: IP -> reply MACs (client's + our eth0's), learned
        # from their frames (emunet.datapath.nodeport), as the node's neighbour table would
        self.neigh = Neighbours()
        self._c: Counter[str] = Counter()
        self._v: list[Action] = []  # allow verdicts of the packet in hand (policy events)
        # the connection the packet in hand opens, confirmed when it leaves (`_verdicts`)
        self._new: tuple[Conn, int] | None = None

    # ---- control ------------------------------------------------------------------------------

    def update(self, tables: NodeTables, now: float | None = None) -> None:
        """Swap in new tables; conntrack is kept so established flows survive.

        Like kube-proxy (pkg/proxy/conntrack), UDP flows to a backend that is no longer a ready
        endpoint of its Service are forgotten, so the client's next datagram is re-balanced.
        With `now`, a changed policy is applied to the connections already tracked (`police`).
        """
        old, self.tables = self.tables, tables
        if route_inputs(tables) != route_inputs(old):
            self.route_gen += 1  # every fast path hop is stale: the pipeline decides anew
        if now is not None and tables.policy != old.policy:
            self.police(now)
        for conn in self.ct.conns():
            if conn.backend is None or conn.proto != PROTO_UDP:
                continue
            target = tables.services.get(
                (PROTO_UDP, conn.orig[1], U16.unpack(conn.orig[3])[0]))
            if target is None or conn.backend not in target.backends:
                self.ct.remove(conn)

    def police(self, now: float) -> int:
        """Apply the policy in force to the tracked connections (emunet.datapath.ctscrub)."""
        n = ctscrub.police(self.ct, self.tables.policy, now)
        self._c["ct_policy_cut"] += n
        return n

    def expire(self, now: float) -> int:
        self.affinity.expire(now)
        self.expire_frags(now)
        return self.ct.expire(now)

    @property
    def counters(self) -> dict[str, int]:
        return {**self._c, "ct_entries": len(self.ct)}

    def _drop(self, reason: DropReason, detail: str = "", before: Action | None = None
              ) -> list[Action]:
        """Every drop of every stage goes through here, so each is counted once, under its
        reason (`drop:<NAME>`). `before`: what precedes the Drop (the answer sent back, a RST
        or an ICMP error, or the denying policy verdict); the Drop is always last."""
        self._c[_DROP_KEYS[reason]] += 1
        if before is None:
            return [Drop(reason, detail)]
        return [before, Drop(reason, detail)]

    # ---- from a pod veth ----------------------------------------------------------------------

    def _from_pod(self, frame: bytes, in_port: str, now: float) -> list[Action]:
        """The full pipeline for a frame from a pod veth (the fast path's fallback)."""
        t = self.tables
        pod = t.pods_by_port.get(in_port)
        if pod is None:
            if in_port == t.host_port and in_port:
                return self.process_host(frame, now)
            return self._drop(DropReason.INVALID_SOURCE, f"unknown port {in_port}")
        if len(frame) < ETH_LEN:
            return self._drop(DropReason.INVALID_PACKET, "short Ethernet frame")
        if frame[ETH_SRC] != pod.mac:
            return self._drop(DropReason.INVALID_SOURCE, f"src MAC on {in_port}")
        etype = frame[ETH_TYPE]
        if etype == ETHERTYPE_ARP:
            return self._arp(frame, pod)
        if etype != ETHERTYPE_IP:
            if etype == ETHERTYPE_IPV6:  # dual-stack: IPv4 frames never get here
                return self._from_pod6(frame, pod, now)
            return self._drop(DropReason.UNSUPPORTED_L3, f"ethertype 0x{etype.hex()}")
        f = bytearray(frame)
        parsed = parse_ipv4(f)
        if parsed is None:
            return self._drop(DropReason.INVALID_PACKET, "bad IPv4 header")
        l4, end, proto, frag = parsed
        if f[IP_SRC] != pod.ip:
            return self._drop(DropReason.INVALID_SOURCE, f"src IP {pk.ip_str(f[IP_SRC])}")
        dmac = bytes(f[ETH_DST])
        bridged = None
        if dmac != t.gateway_mac:
            bridged = t.pods_by_mac.get(dmac)
            if bridged is None:
                return self._drop(DropReason.NO_ROUTE, f"dst MAC {dmac.hex(':')}")
        elif f[IP_TTL] <= 1 and f[IP_DST] != t.gateway_ip:  # routed, no TTL left: RFC 792
            err = pk.icmp_error(pod.mac, t.gateway_mac, t.gateway_ip, pk.ICMP_TIME_EXCEEDED, 0,
                                f[ETH_LEN:end])
            return self._drop(DropReason.TTL_EXCEEDED, "ICMP time exceeded sent",
                              Send(in_port, err))
        out = self._track(f, l4, end, proto, frag, now, pod)
        if out is None and self.neigh and (reply := self.nodeport_reply(f, now)) is not None:
            return self._verdicts(reply, now)  # a NodePort reply, un-NAT'ed
        if out is None and bridged is not None:  # cni0 bridging: MACs and TTL untouched
            self._c["forwarded"] += 1
            out = [Send(bridged.port, bytes(f))]
        return self._verdicts(out if out is not None else self._route(f), now)

    def _verdicts(self, out: list[Action], now: float) -> list[Action]:
        """The end of every path a packet takes after conntrack: confirm the connection it
        opens if it leaves (Linux confirms at the last hook, __nf_conntrack_confirm: a packet
        dropped later leaves no entry), and prefix the policy verdicts taken for it (events
        for observability)."""
        if self._new is not None:
            conn, flags = self._new
            self._new = None
            if not out or type(out[-1]) is not Drop:
                self.ct.confirm(conn, now, flags)
        if self._v:
            out = [*self._v, *out]
            self._v = []
        return out

    # ---- conntrack, services -------------------------------------------------------------------

    def _track(self, f: bytearray, l4: int, end: int, proto: int, frag: bool, now: float,
               pod: LocalPod | None) -> list[Action] | None:
        """Conntrack + NAT. None: carry on to routing (f rewritten); else the final actions.

        `pod` is the sending local pod (None for frames from the overlay: no service LB there,
        the client's node already did it, as kube-proxy does on the client's node).
        """
        if frag:  # tracked by IP id (emunet.datapath.frags), so DNAT applies to each
            return self._fragment(f, l4, end, proto, now, pod)
        if proto == PROTO_ICMP and f[l4] in _ICMP_ERRORS:
            return self._icmp_error(f, l4, end)
        key = tuple_key(f, l4, proto)
        if key is None:
            if proto not in (PROTO_ICMP, PROTO_TCP, PROTO_UDP) and \
                    bytes(f[IP_DST]) in self.tables.cluster_ips:
                return self._drop(DropReason.UNSUPPORTED_L4, f"IP proto {proto} to a ClusterIP")
            return self._policy(f, proto, 0, pod)  # other ICMP types: routed untracked
        flags = f[l4 + TCP_OFF_FLAGS] if proto == PROTO_TCP else 0
        if self.ct.established(key, f, l4, end, proto, flags, now):
            return None  # the fast path: one lookup, the precomputed rewrite
        t = self.tables
        dst = bytes(f[IP_DST])
        if pod is not None and dst in t.cluster_ips:
            return self._service(f, l4, end, proto, key, flags, now, pod)
        if dst == t.gateway_ip:
            return self._to_gateway(f, l4, end, proto, pod)
        ports = (key[KEY_SPORT], key[KEY_DPORT])
        orig = (key[KEY_SRC], key[KEY_DST], *ports)
        reply = (orig[1], orig[0], ports[1], ports[0]) if proto != PROTO_ICMP else \
            (orig[1], orig[0], ports[0], ports[1])
        denied = self._policy(f, proto, U16.unpack(ports[1])[0], pod)  # ICMP echo: port 0
        if denied is not None:
            return denied
        proxy = self._l7_redirect(proto)
        if proxy is None:
            self._track_routed(f, l4, end, proto, orig, reply, flags, now, pod is not None)
            return None
        return self._to_proxy(f, l4, end, proto, orig, reply, proxy, flags, now)

    def _policy(self, f: bytearray, proto: int, dport: int, pod: LocalPod | None
                ) -> list[Action] | None:
        return self._check(bytes(f[IP_SRC]), bytes(f[IP_DST]), proto, dport, pod is not None)

    def _check(self, src: bytes, dst: bytes, proto: int, dport: int, local_src: bool
               ) -> list[Action] | None:
        """Egress policy of a sending local pod, then ingress policy of a receiving local pod,
        for a new flow. None: allowed (allow verdicts queued); else the silent drop."""
        pol = self.tables.policy
        if not pol.active:
            return None
        for v in (pol.egress(src, dst, proto, dport) if local_src else None,
                  pol.ingress(src, dst, proto, dport)):
            if v is None:
                continue
            if not v.allowed:
                return self._drop(DropReason.POLICY_DENIED, v.describe(), v)
            self._c["policy_allowed"] += 1
            self._v.append(v)
        return None

    # ---- routing ------------------------------------------------------------------------------

    def _route(self, f: bytearray) -> list[Action]:
        """A routed hop: TTL-1, then a local veth or the owning node's VXLAN endpoint."""
        t = self.tables
        f[IP_TTL] -= 1
        U16.pack_into(f, IP_CSUM, apply_delta(U16.unpack_from(f, IP_CSUM)[0], TTL_DEC_DELTA))
        dst = bytes(f[IP_DST])
        lp = t.pods_by_ip.get(dst)
        if lp is not None:
            f[ETH_MACS] = lp.routed_macs
            self._c["forwarded"] += 1
            return [Send(lp.port, bytes(f))]
        if dst == t.underlay_ip and t.host_port:  # this node's own stack (a local delivery)
            f[ETH_MACS] = t.host_macs
            self._c["to_host"] += 1
            return [Send(t.host_port, bytes(f))]
        d = int.from_bytes(dst, "big")
        if d & t.local_mask == t.local_net:
            return self._drop(DropReason.NO_ROUTE, f"no pod {pk.ip_str(dst)} on {t.node}")
        r = t.remote_for(d) or t.node_ips.get(dst)
        if r is None:
            return self._drop(DropReason.NO_ROUTE, f"{pk.ip_str(dst)} outside the cluster")
        self._c["encap"] += 1
        return [Encap(r.underlay_ip, t.vxlan_port, r.encap_prefix + f[_BEHIND_MACS])]

    # ---- from the overlay ---------------------------------------------------------------------

    def _from_overlay(self, payload: bytes, src_ip: str, now: float) -> list[Action]:
        """A VXLAN datagram from a peer: validate (RFC 7348 §5), decap, deliver to a local pod
        (the full pipeline, the fast path's fallback)."""
        t = self.tables
        if len(payload) < pk.VXLAN.size + ETH_LEN + 20:
            return self._drop(DropReason.INVALID_PACKET, "short VXLAN datagram")
        flags, vni = pk.VXLAN.unpack_from(payload)
        if not flags & pk.VXLAN_FLAG_I:
            return self._drop(DropReason.INVALID_VNI, "VXLAN I flag not set")
        if int.from_bytes(vni, "big") != t.vni:
            return self._drop(DropReason.INVALID_VNI, f"VNI {int.from_bytes(vni, 'big')}")
        peer = t.remotes_by_underlay.get(src_ip)
        if peer is None:
            if t.remotes_by_underlay6:  # an IPv6 peer: flannel-v6's tunnel (emunet.datapath.ipv6)
                return self._from_overlay6(payload, src_ip, now)
            return self._drop(DropReason.INVALID_SOURCE, f"VXLAN from unknown {src_ip}")
        f = bytearray(payload[pk.VXLAN.size:])
        if f[ETH_DST] != t.vtep_mac:  # flannel.1 would see PACKET_OTHERHOST and drop it
            return self._drop(DropReason.INVALID_PACKET, "inner dst MAC is not our VTEP")
        if f[ETH_TYPE] != ETHERTYPE_IP:
            return self._drop(DropReason.UNSUPPORTED_L3,
                              f"inner ethertype 0x{f[ETH_TYPE].hex()}")
        parsed = parse_ipv4(f)
        if parsed is None:
            return self._drop(DropReason.INVALID_PACKET, "bad inner IPv4 header")
        l4, end, proto, frag = parsed
        if int.from_bytes(f[IP_SRC], "big") & peer.mask != peer.net and \
                f[IP_SRC] != peer.underlay_ip_b:  # its pods, or its own stack (process_host)
            return self._drop(DropReason.INVALID_SOURCE,
                              f"inner src {pk.ip_str(f[IP_SRC])} not in {peer.name}'s subnet")
        if f[IP_TTL] <= 1 or f[IP_DST] == t.gateway_ip:  # time exceeded, cni0's ping (replies)
            if (mine := self._overlay_to_node(f, l4, end, proto, frag, peer)) is not None:
                return mine
        out = self._track(f, l4, end, proto, frag, now, None)
        if out is not None:
            return self._verdicts(out, now)
        if self.neigh and (reply := self.nodeport_reply(f, now)) is not None:
            return self._verdicts(reply, now)  # a remote backend's NodePort reply
        if bytes(f[IP_DST]) not in t.pods_by_ip and f[IP_DST] != t.underlay_ip:
            return self._verdicts(self._drop(DropReason.NO_ROUTE, f"no pod "
                                             f"{pk.ip_str(f[IP_DST])} on {t.node}"), now)
        self._c["decap"] += 1
        return self._verdicts(self._route(f), now)



def route_inputs(t: NodeTables) -> tuple:
    """Everything in the tables an established packet's forwarding depends on (the source
    checks, bridging, routing, encap, decap): when it changes, fast path hops are stale.
    Services and policy are not in it: they decide new connections (see fastpath's doc)."""
    return (t.node, t.gateway_ip, t.gateway_mac, t.vtep_mac, t.vni, t.vxlan_port, t.local_net,
            t.local_mask, t.pods_by_port, t.pods_by_ip, t.pods_by_mac, t.remotes,
            t.remotes_by_underlay, t.underlay_ip, t.host_port, t.host_macs, t.node_ips)
