"""Which addresses conntrack must forget when pods come and go. Pure.

An IP is a pod's identity to every node's conntrack: a connection tracked for 10.42.1.7 keeps
passing, and keeps its NAT, for whoever holds 10.42.1.7 next. So when a pod is removed, or its
IP now belongs to another pod (another name, or the same name re-created: another uid), every
entry naming that IP goes, on every node (Cilium scrubs an endpoint's IPs from its CT maps
when the endpoint goes; kube-proxy clears UDP entries of removed endpoints). The agent calls
`stale_ips` on each reload and when it loads a snapshot written under an older state
(emunet.agent.ctstore), then `Conntrack.flush_ips`.

A policy change is the other reason to revisit what is tracked: `police` (Datapath.update).
"""

from __future__ import annotations

import socket

from emunet.datapath import cttcp
from emunet.datapath.conntrack import Conntrack
from emunet.datapath.ipv6pkt import KEY6_DST, KEY6_LEN, KEY6_SRC
from emunet.packets import KEY_DST, KEY_SRC, U16
from emunet.policy.verdict import NodePolicy
from emunet.state.cluster import ClusterState


def pod_owners(st: ClusterState) -> dict[str, str]:
    """Pod IP -> who holds it: "namespace/name@creation time" (the creation time is what the
    API server's uid derives from, so a re-created pod of the same name is another owner)."""
    out = {}
    for (ns, name), p in st.pods.items():
        who = f"{ns}/{name}@{st.created.get(f'Pod/{ns}/{name}', '')}"
        if p.ip:
            out[p.ip] = who
        if p.ip6:  # dual-stack: the pod's IPv6 address is scrubbed the same way
            out[p.ip6] = who
    return out


def stale_ips(old: dict[str, str], new: dict[str, str]) -> frozenset[bytes]:
    """The IPs (packed, as conntrack keys hold them) `old` gave to a pod that `new` no longer
    gives to that same pod: removed, or now another pod's."""
    return frozenset(socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
                     for ip, who in old.items() if not _same(who, new.get(ip)))


def _same(a: str, b: str | None) -> bool:
    """The same pod: the same name and, when both states know it, the same creation time (a
    state planned by the CLI has none until the supervisor's first publish stamps it)."""
    if b is None:
        return False
    name_a, _, born_a = a.rpartition("@")
    name_b, _, born_b = b.rpartition("@")
    return name_a == name_b and (born_a == born_b or not born_a or not born_b)


def police(ct: Conntrack, pol: NodePolicy, now: float) -> int:
    """Apply the policy in force to every tracked connection, as Cilium does (bpf_lxc looks
    policy up for every packet that is not a reply, so a new policy cuts an established
    connection it denies; Kubernetes leaves this open). A denied connection is
    `Conntrack.cut`: its tuples stay, so its packets, in either direction, are policed as new
    ones (and dropped) rather than picked up as a new, unpoliced flow; a cut one the policy
    allows again is forgotten (its next packet is picked up anew). The check is the one the
    connection's first packet passed: after NAT (the reply tuple mirrored), on the Service's
    targetPort. Returns how many connections were cut."""
    n = 0
    for conn in ct.conns():
        rk = conn.reply_key
        src, dst = (rk[KEY_DST], rk[KEY_SRC]) if len(rk) != KEY6_LEN else \
            (rk[KEY6_DST], rk[KEY6_SRC])
        dport = conn.backend[1] if conn.backend else U16.unpack(conn.orig[3])[0]
        denied = pol.active and any(
            v is not None and not v.allowed
            for v in (pol.egress(src, dst, conn.proto, dport),
                      pol.ingress(src, dst, conn.proto, dport)))
        if denied and conn.state != cttcp.CUT:
            ct.cut(conn, now)
            n += 1
        elif not denied and conn.state == cttcp.CUT:
            ct.remove(conn)
    return n
