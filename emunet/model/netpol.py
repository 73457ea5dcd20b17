"""networking.k8s.io/v1 NetworkPolicy as frozen objects, with label-selector matching. Pure.

The shapes follow the API types (k8s.io/api/networking/v1/types.go) field by field; only
`emunet.config.netpol` builds them from YAML (with located errors), and `to_dict`/`from_dict`
carry them through `state.json`. Selector semantics are those of
apimachinery's `LabelSelectorAsSelector`: matchLabels and matchExpressions are ANDed, an empty
selector matches everything, and a NotIn/DoesNotExist requirement matches a missing key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from emunet.model import Loc

INGRESS, EGRESS = "Ingress", "Egress"
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class Requirement:
    """One matchExpressions entry: `key operator values`."""

    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        if self.operator == "In":
            return has and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not has or labels[self.key] not in self.values
        if self.operator == "Exists":
            return has
        return not has  # DoesNotExist


@dataclass(frozen=True)
class LabelSelector:
    """metav1.LabelSelector: every matchLabels pair and every expression must hold."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        return (all(labels.get(k) == v for k, v in self.match_labels)
                and all(r.matches(labels) for r in self.match_expressions))

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions


@dataclass(frozen=True)
class IPBlock:
    cidr: str
    except_: tuple[str, ...] = ()


@dataclass(frozen=True)
class Peer:
    """NetworkPolicyPeer: selectors (both given = AND) or an ipBlock, never both.

    podSelector alone selects pods in the policy's namespace; namespaceSelector alone selects
    every pod in the matching namespaces; both select matching pods in matching namespaces.
    """

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None

    def selects(self, policy_ns: str, ns: str, pod_labels: dict[str, str],
                ns_labels: dict[str, str]) -> bool:
        """Whether this peer selects a pod (ipBlock peers select by address, not here)."""
        if self.ip_block is not None:
            return False
        if self.namespace_selector is None:
            if ns != policy_ns:
                return False
        elif not self.namespace_selector.matches(ns_labels):
            return False
        return self.pod_selector is None or self.pod_selector.matches(pod_labels)


@dataclass(frozen=True)
class PolicyPort:
    """NetworkPolicyPort: port None = every port of `protocol`; a str port is a named port."""

    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class Rule:
    """An ingress (from) or egress (to) rule. No peers: every peer; no ports: every port."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector
    policy_types: tuple[str, ...]  # as defaulted by the API server (see config.netpol)
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    loc: Loc | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def infer_policy_types(has_egress_rules: bool) -> tuple[str, ...]:
    """The API server's default when spec.policyTypes is absent (networking/v1 defaults.go):
    always Ingress, plus Egress when the policy has at least one egress rule."""
    return (INGRESS, EGRESS) if has_egress_rules else (INGRESS,)


# ---- JSON round trip (state.json) -------------------------------------------------------------

def to_dict(p: NetworkPolicy) -> dict[str, Any]:
    return dataclasses.asdict(p)


def _selector(d: dict | None) -> LabelSelector | None:
    if d is None:
        return None
    return LabelSelector(tuple(tuple(kv) for kv in d["match_labels"]),  # type: ignore[misc]
                         tuple(Requirement(r["key"], r["operator"], tuple(r["values"]))
                               for r in d["match_expressions"]))


def _rule(d: dict) -> Rule:
    peers = tuple(Peer(_selector(p["pod_selector"]), _selector(p["namespace_selector"]),
                       IPBlock(p["ip_block"]["cidr"], tuple(p["ip_block"]["except_"]))
                       if p["ip_block"] else None) for p in d["peers"])
    return Rule(peers, tuple(PolicyPort(**pp) for pp in d["ports"]))


def from_dict(d: dict[str, Any]) -> NetworkPolicy:
    sel = _selector(d["pod_selector"])
    assert sel is not None
    return NetworkPolicy(d["namespace"], d["name"], sel, tuple(d["policy_types"]),
                         tuple(_rule(r) for r in d["ingress"]),
                         tuple(_rule(r) for r in d["egress"]),
                         Loc(**d["loc"]) if d.get("loc") else None)
