"""Compile the cluster's CiliumNetworkPolicies into the same per-pod tables as NetworkPolicy. Pure.

`add_grants` is called by `emunet.policy.compile` for each local pod with the pod's ingress and
egress `DirectionBuilder`s: a CNP that selects the pod and has ingress (egress) rules isolates it
in that direction (Cilium's default mode: "if any rule selects an endpoint and the rule has an
ingress section, the endpoint goes into default deny at ingress"), and every rule grants
(peer identity | ANY_PEER, protocol, port range). A toPorts entry with HTTP rules grants with
`RuleRef.l7` set to the `L7Port` of that (pod, port): the datapath then redirects the new
connection to the node's L7 proxy on `L7Port.proxy_port`, and the proxy applies the HTTP rules
per request. Every L7 grant of one (pod, port) carries the same `L7Port` (all its HTTP rules,
from every policy), so whichever grant the lookup finds, the proxy decides on the full set.

Proxy ports: the i-th L7 port of a pod (ascending) is redirected to PROXY_PORT_BASE + i (15001,
15002, ...): the agent and the proxy derive the same numbers from the same state.
"""

from __future__ import annotations

from dataclasses import dataclass

from emunet.model import cilium as cnp
from emunet.model.cilium import PROXY_PORT_BASE, PROXY_PORT_MAX
from emunet.packets import PROTO_TCP, PROTO_UDP, ip_bytes
from emunet.policy.verdict import (
    ANY_PEER,
    ANY_PROTO,
    PORT_MAX,
    WORLD,
    DirectionBuilder,
    NodePolicy,
    RuleRef,
)
from emunet.state.cluster import ClusterState, PodState, resolve_target_port

KIND = "CiliumNetworkPolicy"
PROTO_SCTP = 132
_PROTOS = {"TCP": (PROTO_TCP,), "UDP": (PROTO_UDP,), "SCTP": (PROTO_SCTP,),
           "ANY": (PROTO_TCP, PROTO_UDP, PROTO_SCTP)}


@dataclass(frozen=True)
class L7Entry:
    """One rule's HTTP rules for one (pod, port): who it applies to and what it allows."""

    policy: str  # namespace/name
    rule: int  # index in spec.ingress
    peers: frozenset[int] | None  # identities; None: every peer (no fromEndpoints)
    http: tuple[cnp.HTTPRule, ...]


@dataclass(frozen=True)
class L7Port:
    """Everything the proxy needs for one redirected (pod, port)."""

    pod: str  # namespace/name
    pod_ip: str
    port: int
    proxy_port: int
    entries: tuple[L7Entry, ...]

    def decide(self, identity: int, method: str, path: str, host: str,
               headers: dict[str, list[str]]) -> L7Entry | None:
        """The first entry that applies to `identity` and whose HTTP rules match; None: deny.
        An entry with no HTTP rules (`http: []`) allows every request, as in Cilium."""
        for e in self.entries:
            if e.peers is not None and identity not in e.peers:
                continue
            if not e.http or any(r.matches(method, path, host, headers) for r in e.http):
                return e
        return None


def cilium_policies(state: ClusterState) -> list[cnp.CiliumPolicy]:
    """The state's CNPs (parsed and validated on apply), in key order."""
    return sorted(state.cilium_policies.values(), key=lambda p: p.key)


def cilium_labels(state: ClusterState, ps: PodState) -> dict[str, str]:
    ns = state.namespaces.get(ps.pod.namespace)
    return cnp.pod_labels(ps.pod.namespace, ps.pod.labels, ns.labels if ns else {})


def _peer_identities(state: ClusterState, selectors: tuple[cnp.EndpointSelector, ...],
                     identity_of: dict[tuple[str, str], int]) -> frozenset[int]:
    out = set()
    for ps in state.pods.values():
        labels = cilium_labels(state, ps)
        if any(s.matches(labels) for s in selectors):
            out.add(identity_of[ps.key])
    return frozenset(out)


def _ports(pr: cnp.PortRule, dest: PodState | None) -> list[tuple[int, int, int]]:
    """(proto, lo, hi) of a toPorts entry; named ports resolve on `dest` (None: unresolvable)."""
    out = []
    for pp in pr.ports:
        protos = _PROTOS[pp.protocol]
        if isinstance(pp.port, str):
            for proto_name, proto in (("TCP", PROTO_TCP), ("UDP", PROTO_UDP),
                                      ("SCTP", PROTO_SCTP)):
                if proto in protos and dest is not None:
                    n = resolve_target_port(dest.pod, pp.port, proto_name)
                    if n is not None:
                        out.append((proto, n, n))
            continue
        lo, hi = (0, PORT_MAX) if pp.port == 0 else (pp.port, pp.end_port or pp.port)
        out.extend((proto, lo, hi) for proto in protos)
    return out


def l7_ports(state: ClusterState, ps: PodState,
             identity_of: dict[tuple[str, str], int]) -> dict[int, L7Port]:
    """The pod's redirected ports (ingress HTTP rules), each with its proxy port."""
    found: dict[int, list[L7Entry]] = {}
    labels = cilium_labels(state, ps)
    for pol in cilium_policies(state):
        if pol.ingress is None or not pol.endpoint_selector.matches(labels):
            continue
        for rule in pol.ingress:
            peers = None if rule.peers is None else \
                _peer_identities(state, rule.peers, identity_of)
            for pr in rule.to_ports:
                if pr.http is None:
                    continue
                for _, port, _ in _ports(pr, ps):
                    found.setdefault(port, []).append(
                        L7Entry(pol.key, rule.index, peers, pr.http))
    name = f"{ps.pod.namespace}/{ps.pod.name}"
    ports = sorted(found)[:PROXY_PORT_MAX - PROXY_PORT_BASE + 1]
    return {port: L7Port(name, ps.ip, port, PROXY_PORT_BASE + i, tuple(found[port]))
            for i, port in enumerate(ports)}


def add_grants(state: ClusterState, ps: PodState, ingress: DirectionBuilder,
               egress: DirectionBuilder, identity_of: dict[tuple[str, str], int]) -> None:
    """Feed every CNP that selects local pod `ps` into its direction builders."""
    labels = cilium_labels(state, ps)
    redirects = l7_ports(state, ps, identity_of)
    for pol in cilium_policies(state):
        if not pol.endpoint_selector.matches(labels):
            continue
        if pol.ingress is not None:
            ingress.isolate(pol.key)
            for rule in pol.ingress:
                _grant(state, ingress, pol, rule, ps, redirects, identity_of)
        if pol.egress is not None:
            egress.isolate(pol.key)
            for rule in pol.egress:
                _grant(state, egress, pol, rule, None, {}, identity_of)


def _grant(state: ClusterState, b: DirectionBuilder, pol: cnp.CiliumPolicy, rule: cnp.Rule,
           dest: PodState | None, redirects: dict[int, L7Port],
           identity_of: dict[tuple[str, str], int]) -> None:
    if rule.empty:
        return  # `- {}`: isolates, allows nothing
    keys: list[int] = [ANY_PEER] if rule.peers is None else \
        sorted(_peer_identities(state, rule.peers, identity_of))
    plain = RuleRef(pol.key, rule.index, "CiliumNetworkPolicy")
    if not rule.to_ports:
        for key in keys:
            b.grant(key, ANY_PROTO, 0, PORT_MAX, plain)
        return
    for pr in rule.to_ports:
        if dest is None and any(isinstance(pp.port, str) for pp in pr.ports):
            _grant_named_egress(state, b, pr, rule, keys, plain, identity_of)
        for proto, lo, hi in _ports(pr, dest):
            ref = plain
            if pr.http is not None and lo in redirects:
                ref = RuleRef(pol.key, rule.index, "CiliumNetworkPolicy", redirects[lo])
            for key in keys:
                b.grant(key, proto, lo, hi, ref)


def _grant_named_egress(state: ClusterState, b: DirectionBuilder, pr: cnp.PortRule,
                        rule: cnp.Rule, keys: list[int], ref: RuleRef,
                        identity_of: dict[tuple[str, str], int]) -> None:
    """Egress named ports resolve on each destination pod the rule selects."""
    for ps in state.pods.values():
        if ANY_PEER not in keys and identity_of[ps.key] not in keys:
            continue
        named = cnp.PortRule(tuple(pp for pp in pr.ports if isinstance(pp.port, str)))
        for proto, port, _ in _ports(named, ps):
            b.grant_named(ip_bytes(ps.ip), proto, port, ref)


def decide(node: NodePolicy, l7: L7Port | None, pod_ip: bytes, src_ip: bytes, port: int,
           method: str, path: str, host: str, headers: dict[str, list[str]]
           ) -> tuple[bool, str, int | None]:
    """The proxy's verdict for one request: (allowed, policy, rule index).

    A plain L3/L4 grant for this source and port (a NetworkPolicy, or a CNP rule without HTTP
    rules) allows every request, as Cilium merges an L4-only allow into the port's L7 policy as
    "allow all"; otherwise the HTTP rules of `l7` that apply to the source decide.
    """
    pp = node.pods.get(pod_ip)
    if pp is None or not pp.ingress.isolated:
        return True, "", None  # no ingress policy at all (any more)
    identity = node.identities.get(src_ip, WORLD)
    peers = pp.ingress.peers
    for key in (identity, src_ip, ANY_PEER):
        for proto in (PROTO_TCP, ANY_PROTO):
            m = peers.get((key, proto))
            ref = m.lookup(port) if m is not None else None
            if ref is not None and ref.l7 is None:
                return True, ref.policy, ref.rule
    if l7 is not None:
        entry = l7.decide(identity, method, path, host, headers)
        if entry is not None:
            return True, entry.policy, entry.rule
    return False, "", None
