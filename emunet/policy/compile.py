"""Compile the cluster's NetworkPolicies into one node's `NodePolicy`. Pure.

Identities: one number per distinct (namespace, pod labels, namespace labels), shared by every
node (all nodes compile the same state, so they agree), as Cilium allocates them. Then, for each
local pod and direction, every policy that selects the pod for that direction isolates it
(NetworkPolicy API: "a pod is isolated for ingress if any policy selects it and has Ingress in
policyTypes"), and each rule grants (peer, protocol, port range) entries. Policies are
additive: the union of all grants is allowed, so order never matters for the answer (only for
which rule is named in the verdict: the first in policy key order).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from emunet.model import Pod
from emunet.model.netpol import EGRESS, INGRESS, NetworkPolicy, Peer, PolicyPort, Rule
from emunet.packets import PROTO_TCP, PROTO_UDP, ip_bytes
from emunet.policy.verdict import (
    ANY_PEER,
    ANY_PROTO,
    FIRST_IDENTITY,
    HOST,
    PORT_MAX,
    CidrGrant,
    DirectionBuilder,
    NodePolicy,
    PodPolicy,
    RuleRef,
)
from emunet.state.cluster import ClusterState, PodState, resolve_target_port

PROTO_SCTP = 132
PROTOS = {"TCP": PROTO_TCP, "UDP": PROTO_UDP, "SCTP": PROTO_SCTP}

IdentityKey = tuple[str, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def pod_addrs(ps: PodState) -> list[bytes]:
    """A pod's addresses as the datapath keys them: IPv4, then IPv6 when dual-stack (both
    carry the pod's one identity and policy, as Cilium gives an endpoint's IPs one identity)."""
    return [ip_bytes(ps.ip), ipaddress.IPv6Address(ps.ip6).packed] if ps.ip6 \
        else [ip_bytes(ps.ip)]


def identity_key(state: ClusterState, ps: PodState) -> IdentityKey:
    ns = state.namespaces.get(ps.pod.namespace)
    ns_labels = ns.labels if ns is not None else {}
    return (ps.pod.namespace, tuple(sorted(ps.pod.labels.items())),
            tuple(sorted(ns_labels.items())))


def allocate_identities(state: ClusterState,
                        keys: dict[tuple[str, str], IdentityKey] | None = None
                        ) -> dict[IdentityKey, int]:
    """Deterministic: the same state gives every node the same numbers. `keys`: each pod's
    identity_key, when the caller has them already."""
    if keys is None:
        keys = {ps.key: identity_key(state, ps) for ps in state.pods.values()}
    return {k: FIRST_IDENTITY + i for i, k in enumerate(sorted(set(keys.values())))}


def pod_identities(state: ClusterState) -> dict[tuple[str, str], int]:
    """Pod key -> its numeric identity (allocate_identities, per pod)."""
    keys = {ps.key: identity_key(state, ps) for ps in state.pods.values()}
    ids = allocate_identities(state, keys)
    return {k: ids[ik] for k, ik in keys.items()}


@dataclass
class _Memo:
    """One node's last compile, for reuse pod by pod (issue 17: every publish recompiled every
    local pod's policy; at 2,000 pods that was most of an agent's reload)."""

    ids: dict[IdentityKey, int]
    ns_labels: dict[str, dict[str, str]]
    # pod key -> (its Pod, its identity, the policies that select it, its compiled policy)
    pods: dict[tuple[str, str], tuple[Pod, int, tuple[NetworkPolicy, ...], PodPolicy]] = \
        field(default_factory=dict)


# node -> its last compile in this process (an agent or L7 proxy compiles one node). The
# answer is the same with or without it (tests/unit/test_policy_memo.py): a pod's policy is
# reused only when everything it was compiled from is equal.
_MEMO: dict[str, _Memo] = {}


def forget() -> None:
    """Drop the compile memo (tests; the answer never depends on it)."""
    _MEMO.clear()
    _SORTED_LABELS.clear()


# id(Pod) -> (the Pod, its sorted labels): identity keys of the last compile's pods (a Pod is
# frozen and replaced on every change, so the same object has the same labels)
_SORTED_LABELS: dict[int, tuple[Pod, tuple[tuple[str, str], ...]]] = {}


def _identity_keys(state: ClusterState) -> dict[tuple[str, str], IdentityKey]:
    """identity_key of every pod, the pods' sorted labels reused from the last compile."""
    global _SORTED_LABELS
    ns_labels = {n: tuple(sorted(ns.labels.items())) for n, ns in state.namespaces.items()}
    memo, fresh = _SORTED_LABELS, {}
    out: dict[tuple[str, str], IdentityKey] = {}
    for key, ps in state.pods.items():
        pod = ps.pod
        hit = memo.get(id(pod))
        if hit is None or hit[0] is not pod:
            hit = (pod, tuple(sorted(pod.labels.items())))
        fresh[id(pod)] = hit
        out[key] = (pod.namespace, hit[1], ns_labels.get(pod.namespace, ()))
    _SORTED_LABELS = fresh
    return out


def _volatile(pol: NetworkPolicy) -> bool:
    """A policy whose grants depend on other pods' addresses or ports, not only on their
    identities: ipBlock peers (every pod address inside the block) and egress named ports
    (resolved on each destination pod). A pod it selects is compiled every time."""
    return any(peer.ip_block is not None for r in (*pol.ingress, *pol.egress)
               for peer in r.peers) or any(isinstance(pp.port, str)
                                           for r in pol.egress for pp in r.ports)


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is y or x == y for x, y in zip(a, b, strict=True))


def compile_node(state: ClusterState, node: str,
                 policies: list[NetworkPolicy] | None = None) -> NodePolicy:
    """The NodePolicy for `node` from the state's policies (or `policies`, for tests).

    A local pod's policy depends on the pod (namespace, labels, ports), the policies that
    select it, the identity numbers and the namespaces' labels (selector peers select
    identities); when all of these equal the last compile's, that pod's policy is reused.
    CiliumNetworkPolicies and `policies` compile every pod."""
    keys = _identity_keys(state)
    ids = allocate_identities(state, keys)
    out = NodePolicy()
    pod_ident: dict[tuple[str, str], int] = {}
    for key, ps in state.pods.items():
        ident = pod_ident[key] = ids[keys[key]]
        for a in pod_addrs(ps):
            out.identities[a] = ident
    for n in state.nodes:
        out.identities[ip_bytes(n.gateway_ip)] = HOST
        if n.gateway_ip6:
            out.identities[ipaddress.IPv6Address(n.gateway_ip6).packed] = HOST
    for ik, ident in ids.items():
        out.identity_labels[ident] = f"{ik[0]}:" + ",".join(f"{k}={v}" for k, v in ik[1])
    pols = sorted(state.policies.values() if policies is None else policies,
                  key=lambda p: p.key)
    index = _PolicyIndex(pols)
    memoize = policies is None and not state.cilium_policies
    ns_labels = {n: ns.labels for n, ns in state.namespaces.items()}
    memo = _MEMO.get(node) if memoize else None
    if memo is not None and (memo.ids != ids or memo.ns_labels != ns_labels):
        memo = None
    fresh = _Memo(ids, ns_labels)
    members: Members | None = None
    for key, ps in state.pods.items():
        if ps.node != node:
            continue
        ident = pod_ident[key]
        sel = index.selecting(ps)
        hit = memo.pods.get(key) if memo is not None else None
        if hit is not None and (hit[0] is ps.pod or hit[0] == ps.pod) and hit[1] == ident \
                and _same(hit[2], sel) and not any(_volatile(p) for p in sel):
            pp = hit[3]
        else:
            if members is None:
                members = _members(ids, keys, state)
            pp = _compile_pod(state, ps, ident, sel, members, pod_ident,
                              cilium=policies is None)
        fresh.pods[key] = (ps.pod, ident, sel, pp)
        for a in pod_addrs(ps):
            out.pods[a] = pp
    if memoize:
        _MEMO[node] = fresh
    out.active = any(pp.ingress.isolated or pp.egress.isolated for pp in out.pods.values())
    return out


class _PolicyIndex:
    """The policies of each namespace by their podSelector's first matchLabels pair (a pod
    can only be selected by those of its own labels' pairs), the rest (empty or expression
    selectors) always tried: 100 policies x 100 local pods were 10,000 selector matches per
    compile."""

    def __init__(self, pols: list[NetworkPolicy]) -> None:
        self.order = {pol.key: i for i, pol in enumerate(pols)}  # key order, as compiled
        self.by_pair: dict[tuple[str, str, str], list[NetworkPolicy]] = {}
        self.rest: dict[str, list[NetworkPolicy]] = {}
        for pol in pols:
            ml = pol.pod_selector.match_labels
            if ml:
                self.by_pair.setdefault((pol.namespace, *ml[0]), []).append(pol)
            else:
                self.rest.setdefault(pol.namespace, []).append(pol)

    def selecting(self, ps: PodState) -> tuple[NetworkPolicy, ...]:
        """The policies that select `ps`, in key order."""
        ns, labels = ps.pod.namespace, ps.pod.labels
        cands = list(self.rest.get(ns, ()))
        for k, v in labels.items():
            cands += self.by_pair.get((ns, k, v), ())
        if len(cands) > 1:
            cands.sort(key=lambda p: self.order[p.key])
        return tuple(p for p in cands if p.pod_selector.matches(labels))


def _compile_pod(state: ClusterState, ps: PodState, ident: int, sel: tuple[NetworkPolicy, ...],
                 members: Members, pod_ident: dict[tuple[str, str], int],
                 cilium: bool) -> PodPolicy:
    """One local pod's policy from the NetworkPolicies that select it (`sel`, in key order)
    and, with `cilium`, the CiliumNetworkPolicies."""
    ing, egr = DirectionBuilder(), DirectionBuilder()
    for pol in sel:
        if INGRESS in pol.policy_types:
            ing.isolate(pol.ref)
            for i, rule in enumerate(pol.ingress):
                _ingress_rule(state, ing, pol, i, rule, ps, members)
        if EGRESS in pol.policy_types:
            egr.isolate(pol.ref)
            for i, rule in enumerate(pol.egress):
                _egress_rule(state, egr, pol, i, rule, members)
    if cilium:  # CiliumNetworkPolicies feed the same builders (emunet.l7)
        from emunet.policy.cilium import add_grants

        add_grants(state, ps, ing, egr, pod_ident)
    return PodPolicy(f"{ps.pod.namespace}/{ps.pod.name}", ident, ing.build(), egr.build())


Members = dict[int, list[PodState]]  # identity -> the pods that carry it


def _members(ids: dict[IdentityKey, int], keys: dict[tuple[str, str], IdentityKey],
             state: ClusterState) -> Members:
    m: Members = {}
    for ps in state.pods.values():
        m.setdefault(ids[keys[ps.key]], []).append(ps)
    return m


def _selected(state: ClusterState, pol: NetworkPolicy, peer: Peer, members: Members
              ) -> list[int]:
    """The identities a selector peer selects (label-based, so IP churn cannot matter)."""
    out = []
    for ident, pods in members.items():
        ps = pods[0]  # every pod of an identity has the same namespace and labels
        ns = state.namespaces.get(ps.pod.namespace)
        if peer.selects(pol.namespace, ps.pod.namespace, ps.pod.labels,
                        ns.labels if ns is not None else {}):
            out.append(ident)
    return out


def _cidr_parts(peer: Peer) -> tuple[Network, list[Network]]:
    """An ipBlock's cidr and excepts, IPv4 or IPv6 (an except is of its cidr's family)."""
    assert peer.ip_block is not None
    return (ipaddress.ip_network(peer.ip_block.cidr, strict=False),
            [ipaddress.ip_network(e, strict=False) for e in peer.ip_block.except_])


def _block_addrs(ps: PodState, net: Network, excepts: list[Network]) -> list[bytes]:
    """The pod's addresses of `net`'s family inside the block (cidr minus except)."""
    ip = ps.ip6 if net.version == 6 else ps.ip
    if not ip:
        return []
    a = ipaddress.ip_address(ip)
    if a not in net or any(a in e for e in excepts):
        return []
    return [a.packed]


def _port_ranges(pp: PolicyPort, pod: PodState | None) -> list[tuple[int, int, int]]:
    """(proto, lo, hi) for one ports entry; a named port resolves on `pod` (the destination),
    and resolves to nothing when the destination has no such containerPort."""
    proto = PROTOS[pp.protocol]
    if pp.port is None:
        return [(proto, 0, PORT_MAX)]
    if isinstance(pp.port, str):
        if pod is None:
            return []
        n = resolve_target_port(pod.pod, pp.port, pp.protocol)
        return [] if n is None else [(proto, n, n)]
    return [(proto, pp.port, pp.end_port or pp.port)]


def _ingress_rule(state: ClusterState, b: DirectionBuilder, pol: NetworkPolicy, i: int,
                  rule: Rule, me: PodState, members: Members) -> None:
    ref = RuleRef(pol.ref, i)
    # named ports resolve on the destination: this pod (NetworkPolicyPort docs)
    ranges = [r for pp in rule.ports for r in _port_ranges(pp, me)] if rule.ports \
        else [(ANY_PROTO, 0, PORT_MAX)]
    if rule.ports and not ranges:
        return  # only names this pod does not have: the rule allows nothing
    keys: list[int | bytes] = []
    if not rule.peers:
        keys.append(ANY_PEER)
    for peer in rule.peers:
        if peer.ip_block is None:
            keys.extend(_selected(state, pol, peer, members))
            continue
        net, excepts = _cidr_parts(peer)
        keys.extend(a for ps in state.pods.values() for a in _block_addrs(ps, net, excepts))
        for proto, lo, hi in ranges:
            b.grant_cidr(_cidr_grant(net, excepts, proto, lo, hi, ref))
    for key in keys:
        for proto, lo, hi in ranges:
            b.grant(key, proto, lo, hi, ref)


def _egress_rule(state: ClusterState, b: DirectionBuilder, pol: NetworkPolicy, i: int,
                 rule: Rule, members: Members) -> None:
    ref = RuleRef(pol.ref, i)
    numeric = [pp for pp in rule.ports if not isinstance(pp.port, str)]
    named = [pp for pp in rule.ports if isinstance(pp.port, str)]
    ranges = [r for pp in numeric for r in _port_ranges(pp, None)] if rule.ports \
        else [(ANY_PROTO, 0, PORT_MAX)]
    # destination pods of this rule, for named ports (resolved on each destination pod)
    dest_pods: list[PodState] = []
    keys: list[int | bytes] = []
    if not rule.peers:
        keys.append(ANY_PEER)
        dest_pods = list(state.pods.values())
    for peer in rule.peers:
        if peer.ip_block is None:
            sel = _selected(state, pol, peer, members)
            keys.extend(sel)
            dest_pods.extend(ps for ident in sel for ps in members[ident])
            continue
        net, excepts = _cidr_parts(peer)
        for ps in state.pods.values():
            addrs = _block_addrs(ps, net, excepts)
            keys.extend(addrs)
            if addrs:
                dest_pods.append(ps)
        for proto, lo, hi in ranges:
            b.grant_cidr(_cidr_grant(net, excepts, proto, lo, hi, ref))
    for key in keys:
        for proto, lo, hi in ranges:
            b.grant(key, proto, lo, hi, ref)
    for pp in named:
        for ps in dest_pods:
            for proto, lo, _ in _port_ranges(pp, ps):
                for a in pod_addrs(ps):
                    b.grant_named(a, proto, lo, ref)


def _cidr_grant(net: Network, excepts: list[Network], proto: int, lo: int, hi: int,
                ref: RuleRef) -> CidrGrant:
    return CidrGrant(int(net.network_address), int(net.netmask),
                     tuple((int(e.network_address), int(e.netmask)) for e in excepts
                           if e.version == net.version),
                     proto, lo, hi, ref, net.version == 6)
