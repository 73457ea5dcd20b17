"""Service load balancing on the client's node: kube-proxy's DNAT to a ready endpoint (or its
REJECT), Linux NAT's choice of another source port when a reply tuple is taken, and Cilium's
redirect of a new flow to its L7 proxy. Pure. A mixin, like emunet.datapath.replies: Datapath
inherits these methods, and the pipeline's own stages (policy, drops) are its methods.
"""

from __future__ import annotations

from emunet.datapath.actions import Action
from emunet.datapath.conntrack import CLASH, OK, Conn
from emunet.datapath.reasons import DropReason
from emunet.datapath.replies import Replies
from emunet.datapath.tables import LocalPod, ServiceTarget
from emunet.packets import (
    ETH_LEN,
    KEY_DPORT,
    KEY_DST,
    KEY_SPORT,
    KEY_SRC,
    PROTO_ICMP,
    PROTO_ICMP6,
    PROTO_TCP,
    U16,
)

NAT_TRIES = 128  # nf_nat_l4proto_unique_tuple's attempts before it gives up


class Services(Replies):
    """Methods of Datapath for ClusterIP traffic from a local pod (see module doc)."""

    def _remap(self, proto: int, orig: tuple[bytes, bytes, bytes, bytes],
               reply: tuple[bytes, bytes, bytes, bytes], service: str,
               backend: tuple[bytes, int] | None, now: float) -> Conn | None:
        """The reply tuple is taken (the client's port already used to reach the same backend
        directly, or through the Service): pick another source port, as Linux's NAT does for
        every connection (nf_nat_core.c get_unique_tuple, nf_nat_used_tuple, then
        nf_nat_l4proto_unique_tuple: a random port of the same class, below 512, below 1024
        or above). The replies get the client's own port back (reverse NAT)."""
        sport = U16.unpack(orig[2])[0]
        lo, hi = (1, 511) if sport < 512 else (600, 1023) if sport < 1024 else (1024, 65535)
        for _ in range(NAT_TRIES):
            conn = Conn(proto, orig, (*reply[:3], U16.pack(self.rng.randint(lo, hi))),
                        service, backend)
            if self.ct.admit(conn, now) == OK:
                self._c["nat_port_remapped"] += 1
                return conn
        return None

    def _l7_redirect(self, proto: int) -> int | None:
        """Cilium's proxy redirect (emunet.l7): the proxy port when the ingress verdict just
        taken for this new TCP flow carries HTTP rules. Only the destination port changes (the
        proxy knows the client by its address); conntrack restores it on the replies."""
        if proto != PROTO_TCP:
            return None
        for v in self._v:
            rule = getattr(v, "rule", None)
            if getattr(v, "direction", "") == "ingress" and rule is not None \
                    and rule.l7 is not None:
                return rule.l7.proxy_port  # type: ignore[attr-defined]
        return None

    def _service(self, f: bytearray, l4: int, end: int, proto: int, key: bytes, flags: int,
                 now: float, pod: LocalPod) -> list[Action] | None:
        """kube-proxy on the client's node: DNAT to a random ready endpoint, or reject."""
        t = self.tables
        cip, dport = key[KEY_DST], U16.unpack(key[KEY_DPORT])[0]
        svc_name = t.cluster_ips[cip]
        if proto == PROTO_ICMP:  # kube-proxy (iptables mode) never answers pings to a VIP
            return self._drop(DropReason.UNSUPPORTED_L4, f"ICMP to ClusterIP of {svc_name}")
        target = t.services.get((proto, cip, dport))
        if target is None or not target.backends:
            why = f"{svc_name}: " + ("no ready endpoints" if target else f"no port {dport}")
            return self._reject(f, l4, end, proto, pod, why)
        return self._dnat(f, l4, end, proto, flags, now, target, svc_name, key[KEY_SRC], cip,
                          key[KEY_SPORT], key[KEY_DPORT], t.gateway_ip, False)

    def _dnat(self, f: bytearray, l4: int, end: int, proto: int, flags: int, now: float,
              target: ServiceTarget, svc_name: str, src: bytes, cip: bytes, sport: bytes,
              dport: bytes, gateway: bytes, v6: bool) -> list[Action] | None:
        """A new connection to a ClusterIP with ready endpoints, either family: pick one
        (ClientIP affinity per family: each client address is its own key), police the
        backend, track, DNAT. `gateway`: the family's gateway address, the hairpin's SNAT."""
        bip, bport = self.affinity.pick(target, src, now, self.rng)
        # Hairpin (the client is the backend): masquerade to the gateway so the reply comes
        # back through us, as kube-proxy's KUBE-MARK-MASQ does for hairpin traffic.
        reply_dst = gateway if bip == src else src
        if bip != src:  # a pod reaching itself through its Service is never policed
            denied = self._check(src, bip, proto, bport, True)
            if denied is not None:
                return denied
        proxy = self._l7_redirect(proto)  # a local backend behind L7 policy: via its proxy
        reply = (bip, reply_dst, U16.pack(bport if proxy is None else proxy), sport)
        conn = Conn(proto, (src, cip, sport, dport), reply, target.name, (bip, bport))
        verdict = self.ct.admit(conn, now)
        if verdict == CLASH and self.ct.lookup(conn.orig_key, now) is None:
            remapped = self._remap(proto, conn.orig, reply, target.name, (bip, bport), now)
            if remapped is None:
                return self._drop(DropReason.CT_INVALID, f"NAT tuple clash for {target.name}")
            conn = remapped
        elif verdict == CLASH:
            return self._drop(DropReason.CT_INVALID, f"a connection cut by policy ({svc_name})")
        elif verdict != OK:
            return self._drop(DropReason.CT_INVALID, f"conntrack table full ({svc_name})")
        self._new = (conn, flags)
        self._c["dnat"] += 1
        assert conn.fwd is not None
        conn.fwd.apply(f, ETH_LEN, l4, proto, end)
        return None

    def _track_routed(self, f: bytearray, l4: int, end: int, proto: int,
                      orig: tuple[bytes, bytes, bytes, bytes],
                      reply: tuple[bytes, bytes, bytes, bytes], flags: int, now: float,
                      local: bool) -> None:
        """A new routed connection (no Service), either family: tracked. When its reply
        tuple is taken and it comes from a local pod, nf_nat's null binding remaps its source
        port (`_remap`); a clash otherwise, or a full table, lets the packet go on untracked."""
        conn = Conn(proto, orig, reply)
        verdict = self.ct.admit(conn, now)
        if verdict == CLASH and local and proto not in (PROTO_ICMP, PROTO_ICMP6) and \
                self.ct.lookup(conn.orig_key, now) is None:
            remapped = self._remap(proto, orig, reply, "", None, now)
            if remapped is not None:
                self._new = (remapped, flags)
                assert remapped.fwd is not None
                remapped.fwd.apply(f, ETH_LEN, l4, proto, end)
        elif verdict == OK:
            self._new = (conn, flags)

    def _to_proxy(self, f: bytearray, l4: int, end: int, proto: int,
                  orig: tuple[bytes, bytes, bytes, bytes],
                  reply: tuple[bytes, bytes, bytes, bytes], proxy: int, flags: int,
                  now: float) -> list[Action] | None:
        """A new routed connection that L7 policy redirects (either family): tracked with the
        proxy's port as the reply's source, the packet's destination port rewritten to it."""
        conn = Conn(proto, orig, (reply[0], reply[1], U16.pack(proxy), reply[3]))
        if self.ct.admit(conn, now) != OK or conn.fwd is None:  # never bypass the proxy
            return self._drop(DropReason.CT_INVALID, "L7 redirect tuple clash")
        self._new = (conn, flags)
        conn.fwd.apply(f, ETH_LEN, l4, proto, end)
        return None

