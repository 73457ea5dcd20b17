"""The compiled policy a node's datapath consults, and the verdict it reports. Pure.

Cilium's model (bpf/lib/policy.h): every IP maps to a numeric *identity* (one per distinct set of
pod labels + namespace labels); each local endpoint has, per direction, a map keyed by
(peer identity, protocol, port). The datapath does a few dict lookups per NEW connection and
conntrack lets the rest of the connection (and its replies) through, so per-packet cost does not
grow with the number of policies.

How a lookup works (`DirectionPolicy.lookup`): the keys tried are the peer's identity, the
peer's own IP (ipBlock rules folded per pod IP at compile time) and ANY_PEER (rules with no
peers), each with the packet's protocol and ANY_PROTO (rules with no ports); the value is a
`PortMap` of disjoint port ranges. Then egress named ports, resolved on the destination pod
(`named`), and for addresses that belong to no pod (WORLD) the ipBlock list.

How L7 plugs in (CiliumNetworkPolicy, emunet.policy L7 engine): a grant's `RuleRef.l7` is an
opaque payload (e.g. the HTTP rules of a toPorts entry). The L7 compiler adds grants with
`DirectionBuilder.grant(key, proto, lo, hi, RuleRef(..., l7=rules))` next to the L3/L4 ones; a
`Verdict` whose `rule.l7` is not None means "allowed, but redirect this connection to the node's
L7 proxy for `Verdict.pod` / `Verdict.dport` and apply `rule.l7` per request". Where an L3/L4
grant and an L7 grant cover the same port, the L3/L4 one wins (it allows more), as in Cilium.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

HOST = 1  # Cilium reserved:host: the node itself (gateway IPs); always allowed, as in K8s
WORLD = 2  # Cilium reserved:world: any address that is no pod's
FIRST_IDENTITY = 256  # first label-derived identity, as in Cilium
ANY_PEER = 0  # grant key of a rule without peers (every source / destination)
ANY_PROTO = 0  # grant key of a rule without ports (every protocol, every port)
PORT_MAX = 65535

PeerKey = int | bytes  # an identity, ANY_PEER, or a pod IP, 4 or 16 bytes (ipBlock per pod)


@dataclass(frozen=True, slots=True)
class RuleRef:
    """The rule that allowed a connection: policy ("namespace/name"), kind, rule index."""

    policy: str
    rule: int
    kind: str = "NetworkPolicy"
    l7: object | None = None  # L7 payload (see module doc); None: plain L3/L4 allow


@dataclass(frozen=True, slots=True)
class Verdict:
    """A policy decision for one new connection, as an action event for observability.

    `pod` is the local pod whose policy decided (the source for egress, the destination for
    ingress). Allowed: `rule` names the allowing rule. Denied: `rule` is None and `policies`
    lists the policies that isolate `pod` in this direction (none of them allowed it).
    """

    direction: str  # "ingress" | "egress"
    allowed: bool
    pod: str
    src: bytes
    dst: bytes
    proto: int
    dport: int
    rule: RuleRef | None = None
    policies: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.allowed and self.rule is not None:
            return (f"{self.direction} allowed by {self.rule.kind} {self.rule.policy} rule "
                    f"{self.rule.rule}")
        return f"{self.direction} denied: {self.pod} is isolated by {', '.join(self.policies)}"


class PortMap:
    """Disjoint, sorted port ranges -> the first rule that granted each (bisect lookup)."""

    __slots__ = ("starts", "ends", "refs")

    def __init__(self, grants: Iterable[tuple[int, int, RuleRef]]) -> None:
        grants = list(grants)
        points = sorted({lo for lo, _, _ in grants} | {hi + 1 for _, hi, _ in grants})
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.refs: list[RuleRef] = []
        for a, b in zip(points, points[1:], strict=False):
            ref = next((r for lo, hi, r in grants if lo <= a and b - 1 <= hi), None)
            if ref is None:
                continue
            if self.refs and self.refs[-1] == ref and self.ends[-1] == a - 1:
                self.ends[-1] = b - 1  # merge runs granted by the same rule
            else:
                self.starts.append(a)
                self.ends.append(b - 1)
                self.refs.append(ref)

    def lookup(self, port: int) -> RuleRef | None:
        i = bisect.bisect_right(self.starts, port) - 1
        if i >= 0 and port <= self.ends[i]:
            return self.refs[i]
        return None

    def __len__(self) -> int:
        return len(self.starts)

    def __eq__(self, other: object) -> bool:
        # by value, so two compiles of the same policy compare equal (the datapath skips
        # re-policing its connections when a reload left the policy as it was)
        if not isinstance(other, PortMap):
            return NotImplemented
        return (self.starts, self.ends, self.refs) == (other.starts, other.ends, other.refs)

    __hash__ = None  # type: ignore[assignment]  # mutable lists inside: not hashable


@dataclass(frozen=True, slots=True)
class CidrGrant:
    """An ipBlock (cidr minus except) for one protocol and port range, for WORLD peers.
    An IPv6 block (`v6`) matches IPv6 addresses only, an IPv4 one IPv4 only (the
    NetworkPolicy API: 0.0.0.0/0 is not ::/0); DirectionPolicy keeps them apart."""

    net: int
    mask: int
    excepts: tuple[tuple[int, int], ...]
    proto: int
    lo: int
    hi: int
    ref: RuleRef
    v6: bool = False

    def matches(self, ip: int, proto: int, port: int) -> bool:
        return (ip & self.mask == self.net and (self.proto == ANY_PROTO or self.proto == proto)
                and self.lo <= port <= self.hi
                and not any(ip & m == n for n, m in self.excepts))


@dataclass(slots=True)
class DirectionPolicy:
    """One local pod's policy for one direction (see the module doc for the lookup order)."""

    isolated: bool = False
    policies: tuple[str, ...] = ()  # the policies that isolate the pod in this direction
    peers: dict[tuple[PeerKey, int], PortMap] = field(default_factory=dict)
    named: dict[tuple[bytes, int, int], RuleRef] = field(default_factory=dict)
    cidrs: tuple[CidrGrant, ...] = ()
    cidrs6: tuple[CidrGrant, ...] = ()  # the IPv6 ipBlocks (dual-stack)

    def lookup(self, identity: int, ip: bytes, proto: int, port: int) -> RuleRef | None:
        peers = self.peers
        for key in (identity, ip, ANY_PEER):
            for p in (proto, ANY_PROTO):
                m = peers.get((key, p))
                if m is not None:
                    ref = m.lookup(port)
                    if ref is not None:
                        return ref
        ref = self.named.get((ip, proto, port))
        if ref is not None or identity != WORLD:
            return ref
        cidrs = self.cidrs if len(ip) == 4 else self.cidrs6
        if not cidrs:
            return None
        addr = int.from_bytes(ip, "big")
        for c in cidrs:
            if c.matches(addr, proto, port):
                return c.ref
        return None


class DirectionBuilder:
    """Collects grants for one direction of one pod, then freezes them into a DirectionPolicy.

    The L3/L4 compiler and the L7 (CiliumNetworkPolicy) compiler both feed the same builder.
    """

    def __init__(self) -> None:
        self.policies: list[str] = []
        self.grants: dict[tuple[PeerKey, int], list[tuple[int, int, RuleRef]]] = {}
        self.named: dict[tuple[bytes, int, int], RuleRef] = {}
        self.cidrs: list[CidrGrant] = []

    def isolate(self, policy: str) -> None:
        if policy not in self.policies:
            self.policies.append(policy)

    def grant(self, key: PeerKey, proto: int, lo: int, hi: int, ref: RuleRef) -> None:
        self.grants.setdefault((key, proto), []).append((lo, hi, ref))

    def grant_named(self, ip: bytes, proto: int, port: int, ref: RuleRef) -> None:
        self.named.setdefault((ip, proto, port), ref)

    def grant_cidr(self, c: CidrGrant) -> None:
        self.cidrs.append(c)

    def build(self) -> DirectionPolicy:
        if not self.policies:
            return DirectionPolicy()  # not isolated: everything is allowed, no lookups
        # an L3/L4 grant beats an L7 one on the same port: sort plain grants first
        peers = {k: PortMap(sorted(v, key=lambda g: g[2].l7 is not None))
                 for k, v in self.grants.items()}
        return DirectionPolicy(True, tuple(self.policies), peers, dict(self.named),
                               tuple(c for c in self.cidrs if not c.v6),
                               tuple(c for c in self.cidrs if c.v6))


@dataclass(slots=True)
class PodPolicy:
    """A local pod's compiled policy: its identity and both directions."""

    name: str  # namespace/name
    identity: int
    ingress: DirectionPolicy = field(default_factory=DirectionPolicy)
    egress: DirectionPolicy = field(default_factory=DirectionPolicy)


@dataclass
class NodePolicy:
    """Everything one node's datapath needs for policy: identities of all IPs, local pods.

    `identities` holds every pod IP of the cluster (and the node gateways as HOST), so a
    remote peer is known before it can send; an IP not in it is WORLD.
    """

    identities: dict[bytes, int] = field(default_factory=dict)
    identity_labels: dict[int, str] = field(default_factory=dict)  # for display
    pods: dict[bytes, PodPolicy] = field(default_factory=dict)  # local pods by IP
    active: bool = False  # some local pod is isolated: new flows need a policy lookup

    def egress(self, src: bytes, dst: bytes, proto: int, dport: int) -> Verdict | None:
        """The verdict for a new connection leaving local pod `src`; None: not isolated."""
        pp = self.pods.get(src)
        if pp is None or not pp.egress.isolated:
            return None
        ident = self.identities.get(dst, WORLD)
        if ident == HOST:
            return None
        ref = pp.egress.lookup(ident, dst, proto, dport)
        return Verdict("egress", ref is not None, pp.name, src, dst, proto, dport, ref,
                       () if ref is not None else pp.egress.policies)

    def ingress(self, src: bytes, dst: bytes, proto: int, dport: int) -> Verdict | None:
        """The verdict for a new connection arriving at local pod `dst`; None: not isolated."""
        pp = self.pods.get(dst)
        if pp is None or not pp.ingress.isolated:
            return None
        ident = self.identities.get(src, WORLD)
        if ident == HOST:
            return None
        ref = pp.ingress.lookup(ident, src, proto, dport)
        return Verdict("ingress", ref is not None, pp.name, src, dst, proto, dport, ref,
                       () if ref is not None else pp.ingress.policies)
