"""NodePort in the datapath: frames for a node port that arrive on the node's underlay eth0, and
frames from the node's own stack (its host port: `process_host`). Pure.

kube-proxy with `externalTrafficPolicy: Cluster` (the default): a connection to
<node IP>:<nodePort> is DNAT'ed to a ready endpoint of the Service, on any node, and SNAT'ed to
the node (masquerade), so the backend's replies come back through this node, which reverses both
translations and sends them out of eth0 to the client. Here the SNAT address is the node's pod
gateway (10.42.<n>.1): it lies in this node's pod subnet, so the replies of a backend on another
node come back over VXLAN like any pod traffic (Flannel masquerades to flannel.1's address for
the same reason). The client's MAC and ours are learned from its frame, as the node's
neighbour table would (`Neighbours`, `Datapath.neigh`); replies leave through
`NodePort._to_underlay`. The table is bounded as Linux's is (gc_thresh3: a hard cap, the
least recently seen entry goes first) and entries age out (`NEIGH_AGE`), so a flood of spoofed
sources cannot grow it; it is consulted only for a packet that conntrack's reverse NAT made a
NodePort reply (source = this node's underlay address, which no pod can send from), never for
pod traffic to an address that once was a client.

A node port without ready endpoints is rejected at once (TCP RST, ICMP port unreachable), as
kube-proxy's REJECT rule does for ClusterIPs; so is a port no Service owns, as the node's kernel
would (the agent's eth0 filter hands it every TCP/UDP packet in the node port range).
Node ports over IPv6, the NAT both families share (`_nodeport_dnat`) and what does not fit the
pod MTU (fragmentation needed / Packet Too Big) are emunet.datapath.nodeport6's.

A mixin, like emunet.datapath.replies: Datapath inherits these methods, so this module needs
nothing from the pipeline and the pipeline's own stages (policy, routing, drops) are called as
methods of the same object.
"""

from __future__ import annotations

from emunet import packets as pk
from emunet.datapath.actions import Action, Encap, Send
from emunet.datapath.frags import split
from emunet.datapath.ipv6pkt import ETHERTYPE_IPV6
from emunet.datapath.neigh import NEIGH_AGE, NEIGH_MAX, Neighbours
from emunet.datapath.nodeport6 import EPHEMERAL, SNAT_TRIES, UNDERLAY_PORT, NodePort6
from emunet.datapath.reasons import DropReason
from emunet.packets import (
    ETH_DST,
    ETH_LEN,
    ETH_MACS,
    ETH_SRC,
    ETH_TYPE,
    ETHERTYPE_IP,
    IP_CSUM,
    IP_DST,
    IP_FRAG,
    IP_SRC,
    IP_TTL,
    KEY_DPORT,
    KEY_SPORT,
    PROTO_TCP,
    PROTO_UDP,
    TCP_OFF_FLAGS,
    TTL_DEC_DELTA,
    U16,
    VXLAN,
    apply_delta,
    parse_ipv4,
    tuple_key,
)

# re-exported: the neighbour table and the SNAT constants live in neigh.py and nodeport6.py
__all__ = ["EPHEMERAL", "NEIGH_AGE", "NEIGH_MAX", "SNAT_TRIES", "UNDERLAY_PORT", "Neighbours",
           "NodePort"]
_DF = pk.IP_DF >> 8  # RFC 791 Don't Fragment, in the flags byte at IP_FRAG


class NodePort(NodePort6):
    """Methods of Datapath for node port traffic on the underlay (see module doc)."""

    def process_nodeport(self, frame: bytes, now: float, gso: bool = False) -> list[Action]:
        """A frame for a node port that arrived on this node's underlay eth0 (`gso`: a GSO
        super-frame, eth0's GRO merging a client's TCP segments: never too big to forward)."""
        return self._verdicts(self._from_underlay(frame, now, gso), now)

    def _from_underlay(self, frame: bytes, now: float, gso: bool) -> list[Action]:
        t = self.tables
        if len(frame) < ETH_LEN or frame[ETH_TYPE] != ETHERTYPE_IP:
            if len(frame) >= ETH_LEN and frame[ETH_TYPE] == ETHERTYPE_IPV6:
                return self._from_underlay6(frame, now, gso)  # emunet.datapath.nodeport6
            return self._drop(DropReason.UNSUPPORTED_L3, "not IP on eth0")
        f = bytearray(frame)
        parsed = parse_ipv4(f)
        if parsed is None:
            return self._drop(DropReason.INVALID_PACKET, "bad IPv4 header on eth0")
        l4, end, proto, frag = parsed
        if frag or proto not in (PROTO_TCP, PROTO_UDP) or f[IP_DST] != t.underlay_ip:
            return self._drop(DropReason.NO_ROUTE, "not for a node port of this node")
        if f[IP_TTL] <= 1:
            return self._drop(DropReason.TTL_EXCEEDED, "node port packet")
        src = bytes(f[IP_SRC])
        s = int.from_bytes(src, "big")
        if s & t.local_mask == t.local_net or t.remote_for(s) is not None:
            return self._drop(DropReason.INVALID_SOURCE, f"pod address {pk.ip_str(src)} on eth0")
        macs = b"".join((f[ETH_SRC], f[ETH_DST]))  # the replies': to the client, from us
        self.neigh.learn(src, macs, now)
        # larger than the pod MTU: with DF fragmentation needed, not forwarded (nodeport6);
        # without, forwarded in fragments (frags.split), as ip_forward does
        big = not gso and end - ETH_LEN > t.mtu
        quote = bytes(f[ETH_LEN:end]) if big and f[IP_FRAG] & _DF else None
        key = tuple_key(f, l4, proto)
        assert key is not None
        flags = f[l4 + TCP_OFF_FLAGS] if proto == PROTO_TCP else 0
        if self.ct.established(key, f, l4, end, proto, flags, now):
            # the client's next packets: NAT'ed, routed to the backend
            if quote is not None:
                return self._too_big(quote, macs, False)
            return self._fragmented(self._route(f)) if big else self._route(f)
        dport = U16.unpack(key[KEY_DPORT])[0]
        target = t.nodeports.get((proto, dport))
        if target is None or not target.backends:
            why = (f"{target.name}: no ready endpoints" if target else f"no Service has node "
                   f"port {dport}/{'TCP' if proto == PROTO_TCP else 'UDP'}")
            return self._nodeport_reject(f, l4, end, proto, why)
        if quote is not None:
            return self._too_big(quote, macs, False)
        out = self._nodeport_dnat(f, l4, end, proto, flags, now, target, src, t.underlay_ip,
                                  key[KEY_SPORT], key[KEY_DPORT], t.gateway_ip)
        if out is not None:
            return out
        return self._fragmented(self._route(f)) if big else self._route(f)

    def _fragmented(self, out: list[Action]) -> list[Action]:
        """A routed datagram above the pod MTU without DF, cut into fragments of the pod MTU
        (emunet.datapath.frags.split) for its veth or the tunnel (whose receiving node tracks
        them by IP id, frags.py)."""
        if len(out) != 1:
            return out
        a = out[0]
        mtu = self.tables.mtu
        if type(a) is Send:
            parts = split(a.frame, ETH_LEN, mtu)
            acts: list[Action] = [Send(a.port, p) for p in parts]
        elif type(a) is Encap:
            parts = split(a.payload, VXLAN.size + ETH_LEN, mtu)
            acts = [Encap(a.dst_ip, a.dst_port, p) for p in parts]
        else:
            return out
        self._c["ip_fragmented"] += 1
        self._c["ip_fragments_out"] += len(parts)
        return acts

    def nodeport_reply(self, f: bytearray, now: float) -> list[Action] | None:
        """A packet that conntrack's reverse NAT turned into a NodePort reply (from this node's
        underlay address, as no pod can send) goes out of eth0; None for anything else: also
        for the reply of a pod's own connection to <node IP>:<nodePort> (reverse-NAT'ed to the
        same source), which is routed back to the pod, never looked up among the clients."""
        t = self.tables
        if f[IP_SRC] != t.underlay_ip:
            return None
        d = int.from_bytes(f[IP_DST], "big")
        if d & t.local_mask == t.local_net or t.remote_for(d) is not None:
            return None
        macs = self.neigh.get(bytes(f[IP_DST]), now)
        if macs is None:  # aged out or evicted: Linux would resolve it again, emunet cannot
            return self._drop(DropReason.NO_ROUTE, f"no neighbour entry for NodePort client "
                              f"{pk.ip_str(f[IP_DST])}")
        return self._to_underlay(f, macs)

    def _to_underlay(self, f: bytearray, macs: bytes) -> list[Action]:
        """A NodePort reply, reverse-NAT'ed, out of the node's eth0 to the client: TTL-1 (RFC
        1624 update of the IPv4 checksum), the MACs learned from the client's frame."""
        f[IP_TTL] -= 1
        U16.pack_into(f, IP_CSUM, apply_delta(U16.unpack_from(f, IP_CSUM)[0], TTL_DEC_DELTA))
        f[ETH_MACS] = macs
        self._c["nodeport_out"] += 1
        return [Send(UNDERLAY_PORT, bytes(f))]

    def _nodeport_reject(self, f: bytearray, l4: int, end: int, proto: int,
                         why: str) -> list[Action]:
        """TCP RST / ICMP port unreachable from the node's address, back out of eth0."""
        # (client's MAC, ours): the reply's ETH_MACS, as learned from this very frame
        macs = b"".join((f[ETH_SRC], f[ETH_DST]))
        dst_mac, src_mac = macs[ETH_DST], macs[ETH_SRC]
        if proto == PROTO_TCP:
            sport, dport, seq, ack, off, flags, *_ = pk.TCP.unpack_from(f, l4)
            if flags & pk.TCP_RST:  # RFC 9293: never answer a reset with a reset
                return self._drop(DropReason.NO_ENDPOINTS, why)
            answer = pk.tcp_rst(dst_mac, src_mac, bytes(f[IP_DST]), bytes(f[IP_SRC]), dport,
                                sport, seq, ack, flags, end - l4 - (off >> 4) * 4)
        else:
            answer = pk.icmp_error(dst_mac, src_mac, bytes(f[IP_DST]), pk.ICMP_UNREACH,
                                   pk.UNREACH_PORT, f[ETH_LEN:end])
        return self._drop(DropReason.NO_ENDPOINTS, why, Send(UNDERLAY_PORT, answer))

    # ---- from the node's own stack ------------------------------------------------------------

    def process_host(self, frame: bytes, now: float) -> list[Action]:
        """A frame the node kernel sent out of its host port (naming.HOST_IFNAME): a listener
        of the node namespace answering a pod (the API server's replies), routed like a pod's
        packet but without Service LB (kube-proxy NATs the host's own traffic too, but nothing
        on the node talks to ClusterIPs here). Only the node's own address may send."""
        t = self.tables
        if len(frame) < ETH_LEN or frame[ETH_TYPE] != ETHERTYPE_IP:
            return self._drop(DropReason.UNSUPPORTED_L3, "non-IPv4 from the node's stack")
        f = bytearray(frame)
        parsed = parse_ipv4(f)
        if parsed is None:
            return self._drop(DropReason.INVALID_PACKET, "bad IPv4 header from the node")
        if f[IP_SRC] != t.underlay_ip or f[IP_DST] == t.underlay_ip:
            return self._drop(DropReason.INVALID_SOURCE,
                              f"src IP {pk.ip_str(f[IP_SRC])} from the node's stack")
        l4, end, proto, frag = parsed
        out = self._track(f, l4, end, proto, frag, now, None)
        return self._verdicts(out if out is not None else self._route(f), now)
