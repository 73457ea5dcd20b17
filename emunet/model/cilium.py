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

import re2

NS_LABEL = "io.kubernetes.pod.namespace"
NS_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
CLUSTER_LABEL = "io.cilium.k8s.policy.cluster"
SA_LABEL = "io.cilium.k8s.policy.serviceaccount"
SOURCES = ("k8s", "any")  # label sources a pod's labels can come from (pkg/labels)
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # errors are reported to the user as located config errors


def compile_re2(pattern: str) -> re2._Regexp:
    """Compile with RE2 (raises `re2.error` with RE2's own message when it is not valid)."""
    return re2.compile(pattern, _RE2_OPTIONS)


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
