"""The CiliumNetworkPolicy model (the subset emunet enforces) and its label selectors. Pure.

A `CiliumPolicy` is what `emunet.config.cilium` builds from a `cilium.io/v2` document. Its
selectors speak Cilium's label language: a key may carry a source prefix (`k8s:app`,
`any:app`, or none = any source) and every pod also carries Cilium's derived labels
`io.kubernetes.pod.namespace`, `io.cilium.k8s.namespace.labels.<key>` (one per namespace label),
`io.cilium.k8s.policy.cluster` and `io.cilium.k8s.policy.serviceaccount`
(pkg/k8s/apis/cilium.io/const.go). As Cilium's parser does (pkg/k8s/apis/cilium.io/utils), the
policy's namespace is injected into its endpointSelector, and into every peer selector that does
not name a namespace itself, so `fromEndpoints: [{}]` means "every pod in this namespace".

HTTP rules (`toPorts[].rules.http[]`) are regular expressions that Cilium hands to Envoy as
`safe_regex` header matchers on `:method`, `:path` and `:authority` (pkg/envoy/policy: getHTTPRule):
Google RE2 syntax, matched against the WHOLE value (Envoy's RegexMatcher: "the regex is matched
against the full string, not as a partial match"). `:path` is the request-target as sent, query
string included. emunet uses the same engine (google-re2), so a pattern means here exactly what
it means in a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NS_LABEL = "io.kubernetes.pod.namespace"
NS_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
CLUSTER_LABEL = "io.cilium.k8s.policy.cluster"
SA_LABEL = "io.cilium.k8s.policy.serviceaccount"
PROXY_PORT_BASE = 15001  # the i-th L7 port of a pod (ascending) is redirected to 15001 + i
PROXY_PORT_MAX = 15063  # at most 63 L7 ports per pod; containerPorts here are reserved
SOURCES = ("k8s", "any")  # label sources a pod's labels can come from (pkg/labels)
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")



def compile_re2(pattern: str) -> Any:
    """Compile with RE2 (raises `re2.error` with RE2's own message when it is not valid).

    re2 is imported here, on the first HTTP rule compiled: a node agent or proxy whose state has
    no L7 rule never loads it."""
    import re2

    options = re2.Options()
    options.log_errors = False  # errors are reported to the user as located config errors
    return re2.compile(pattern, options)


def split_key(key: str) -> tuple[str, str]:
    """`k8s:app` -> ("k8s", "app"); `app` -> ("any", "app") (pkg/labels: ParseSelectLabel)."""
    source, colon, name = key.partition(":")
    return (source, name) if colon else ("any", key)


@dataclass(frozen=True)
class Requirement:
    key: str  # without source prefix
    operator: str  # In | NotIn | Exists | DoesNotExist
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        have = self.key in labels
        if self.operator == "In":
            return have and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not have or labels[self.key] not in self.values
        if self.operator == "Exists":
            return have
        return not have


@dataclass(frozen=True)
class EndpointSelector:
    """matchLabels and matchExpressions as one AND-ed list of requirements."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def names_namespace(self) -> bool:
        return any(r.key == NS_LABEL for r in self.requirements)

    def in_namespace(self, namespace: str) -> EndpointSelector:
        """This selector restricted to `namespace` unless it already names one (Cilium's
        namespace injection for namespaced policies)."""
        if self.names_namespace():
            return self
        return EndpointSelector((*self.requirements, Requirement(NS_LABEL, "In", (namespace,))))


@dataclass(frozen=True)
class HTTPRule:
    """One `rules.http[]` entry; empty fields match anything. Header entries are `Name` (must
    be present) or `Name: value` (must be present with exactly that value), as in Cilium."""

    method: str = ""
    path: str = ""
    host: str = ""
    headers: tuple[tuple[str, str | None], ...] = ()
    _compiled: tuple = field(default=(), compare=False, repr=False)

    def compiled(self) -> tuple:
        if not self._compiled:
            object.__setattr__(self, "_compiled", tuple(
                compile_re2(p) if p else None for p in (self.method, self.path, self.host)))
        return self._compiled

    def matches(self, method: str, path: str, host: str,
                headers: dict[str, list[str]]) -> bool:
        """`headers` maps lower-cased names to their values in arrival order."""
        m, p, h = self.compiled()
        if m is not None and m.fullmatch(method) is None:
            return False
        if p is not None and p.fullmatch(path) is None:
            return False
        if h is not None and h.fullmatch(host) is None:
            return False
        for name, value in self.headers:
            values = headers.get(name.lower())
            if not values or (value is not None and value not in values):
                return False
        return True


@dataclass(frozen=True)
class PortProtocol:
    port: int | str  # a number (0: every port) or a containerPort name
    protocol: str = "ANY"  # TCP | UDP | SCTP | ANY
    end_port: int | None = None


@dataclass(frozen=True)
class PortRule:
    """One `toPorts[]` entry: the ports, and HTTP rules (None: L4 only, any request)."""

    ports: tuple[PortProtocol, ...] = ()
    http: tuple[HTTPRule, ...] | None = None


@dataclass(frozen=True)
class Rule:
    """One ingress or egress rule. `peers` None: no L3 selector given (every peer, Cilium's
    L3 wildcard when toPorts is set); `to_ports` empty: every port."""

    peers: tuple[EndpointSelector, ...] | None = None
    to_ports: tuple[PortRule, ...] = ()
    index: int = 0  # position in spec.ingress / spec.egress, for events

    @property
    def empty(self) -> bool:
        """`- {}`: selects the endpoint for the direction and allows nothing."""
        return self.peers is None and not self.to_ports


@dataclass(frozen=True)
class CiliumPolicy:
    namespace: str
    name: str
    endpoint_selector: EndpointSelector  # namespace already injected
    ingress: tuple[Rule, ...] | None = None  # None: the policy does not apply at ingress
    egress: tuple[Rule, ...] | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def pod_labels(namespace: str, labels: dict[str, str],
               namespace_labels: dict[str, str]) -> dict[str, str]:
    """A pod's labels as Cilium sees them (source prefixes dropped: all come from k8s)."""
    out = dict(labels)
    out[NS_LABEL] = namespace
    for k, v in namespace_labels.items():
        out[NS_LABELS_PREFIX + k] = v
    out.setdefault(CLUSTER_LABEL, "default")
    out.setdefault(SA_LABEL, "default")
    return out


# ---- JSON round trip (state.json) -------------------------------------------------------------
# The state carries parsed policies, as it carries parsed NetworkPolicies, so the agents and
# proxies read them without the config parser (and without YAML).

def _selector_to(s: EndpointSelector) -> list[list[Any]]:
    return [[r.key, r.operator, list(r.values)] for r in s.requirements]


def _selector_from(d: list[list[Any]]) -> EndpointSelector:
    return EndpointSelector(tuple(Requirement(k, op, tuple(v)) for k, op, v in d))


def _rules_to(rules: tuple[Rule, ...] | None) -> list[dict[str, Any]] | None:
    if rules is None:
        return None
    return [{"peers": None if r.peers is None else [_selector_to(s) for s in r.peers],
             "to_ports": [{"ports": [[pp.port, pp.protocol, pp.end_port] for pp in pr.ports],
                           "http": None if pr.http is None else [
                               [h.method, h.path, h.host, [list(kv) for kv in h.headers]]
                               for h in pr.http]}
                          for pr in r.to_ports],
             "index": r.index} for r in rules]


def _rules_from(d: list[dict[str, Any]] | None) -> tuple[Rule, ...] | None:
    if d is None:
        return None
    return tuple(Rule(
        peers=None if r["peers"] is None else tuple(_selector_from(s) for s in r["peers"]),
        to_ports=tuple(PortRule(
            ports=tuple(PortProtocol(port, proto, end) for port, proto, end in pr["ports"]),
            http=None if pr["http"] is None else tuple(
                HTTPRule(m, p, h, tuple((k, v) for k, v in hs)) for m, p, h, hs in pr["http"]))
            for pr in r["to_ports"]),
        index=r["index"]) for r in d)


def to_dict(p: CiliumPolicy) -> dict[str, Any]:
    return {"namespace": p.namespace, "name": p.name,
            "endpoint_selector": _selector_to(p.endpoint_selector),
            "ingress": _rules_to(p.ingress), "egress": _rules_to(p.egress)}


def from_dict(d: dict[str, Any]) -> CiliumPolicy:
    return CiliumPolicy(d["namespace"], d["name"], _selector_from(d["endpoint_selector"]),
                        _rules_from(d["ingress"]), _rules_from(d["egress"]))
