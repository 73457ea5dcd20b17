"""cilium.io/v2 CiliumNetworkPolicy documents to `model.cilium.CiliumPolicy`, with located errors.

The subset the story uses: `endpointSelector`, `ingress`/`egress` rules with `fromEndpoints` /
`toEndpoints` and `toPorts` (ports, and `rules.http` for ingress). Every other real Cilium field
is an error naming the field ("not supported by emunet"), never silently ignored: a policy that
is only partly enforced would be a hole. Checks follow Cilium's own sanitizer
(pkg/policy/api/rule_validation.go): ports are strings ("80", "0" = every port, or a port name),
protocols TCP/UDP/SCTP/ANY, HTTP regexes must compile (with RE2, the engine Envoy uses).

The parsed policies travel in the cluster state (`emunet.model.cilium.to_dict`), so config time
and run time can never disagree on what a policy means, and no node process parses YAML.
"""

from __future__ import annotations

from typing import Any

import re2

from emunet import model
from emunet.config import names
from emunet.config.errors import Collector, ConfigError
from emunet.config.fields import Obj, at
from emunet.config.yamlsrc import LDict, LList
from emunet.model import cilium as cnp
from emunet.model.cilium import PROXY_PORT_BASE, PROXY_PORT_MAX

API_VERSION = "cilium.io/v2"
KIND = "CiliumNetworkPolicy"
PROTOCOLS = ("TCP", "UDP", "SCTP", "ANY")
_SPEC_UNSUPPORTED = ("ingressDeny", "egressDeny", "nodeSelector", "enableDefaultDeny", "log")
_RULE_UNSUPPORTED = ("fromCIDR", "fromCIDRSet", "fromEntities", "fromRequires", "fromGroups",
                     "fromNodes", "toCIDR", "toCIDRSet", "toEntities", "toRequires",
                     "toGroups", "toNodes", "toServices", "toFQDNs", "icmps", "authentication")
_L7_UNSUPPORTED = ("kafka", "dns", "l7proto", "l7")
_HTTP_UNSUPPORTED = ("headerMatches",)


def parse(doc: Obj, namespace: str, name: str) -> cnp.CiliumPolicy | None:
    """The policy in `doc` (metadata already checked by the caller); None after errors."""
    before = len(doc.col.errors)
    if doc.has("specs"):
        doc.error("specs", "a list of specs is not supported", "write one policy per spec")
    spec = doc.map("spec", required=not doc.has("specs"))
    if spec is None:
        return None
    spec.check_fields(("endpointSelector", "ingress", "egress", "description", "labels",
                       *_SPEC_UNSUPPORTED), what="CiliumNetworkPolicy spec")
    for key in _SPEC_UNSUPPORTED:
        if spec.has(key):
            spec.error(key, f"{key} is not supported by emunet",
                       "emunet enforces endpointSelector, ingress and egress allow rules")
    if not spec.has("endpointSelector"):
        spec.col.error(spec.line, spec.sub("endpointSelector"), "required field is missing",
                       'add "endpointSelector: {}" to select every pod of the namespace')
    sel = _selector(spec, "endpointSelector")
    if sel is not None and sel.names_namespace() and not sel.matches(
            {cnp.NS_LABEL: namespace}) and len(doc.col.errors) == before:
        spec.error("endpointSelector", f"selects pods outside namespace {namespace}",
                   "a CiliumNetworkPolicy selects pods in its own namespace only")
    ingress = _rules(spec, "ingress", namespace, "from")
    egress = _rules(spec, "egress", namespace, "to")
    if len(doc.col.errors) > before or sel is None:
        return None
    return cnp.CiliumPolicy(namespace, name, sel.in_namespace(namespace), ingress, egress)


def _selector(parent: Obj, key: str) -> cnp.EndpointSelector | None:
    m = parent.map(key)
    return None if m is None else _selector_obj(m)


def _selector_obj(m: Obj) -> cnp.EndpointSelector | None:
    before = len(m.col.errors)
    m.check_fields(("matchLabels", "matchExpressions"), what="endpoint selector")
    reqs: list[cnp.Requirement] = []
    labels = m.map("matchLabels")
    if labels is not None:
        for k, v in labels.data.items():
            key = _label_key(labels, k)
            if not isinstance(v, str):
                labels.error(k, f"must be a string, got {v!r}", f'quote it: {k}: "{v}"')
            elif names.label_value(v):
                labels.error(k, f"value {v!r} {names.label_value(v)}")
            elif key is not None:
                reqs.append(cnp.Requirement(key, "In", (v,)))
    for e in m.objs("matchExpressions"):
        e.check_fields(("key", "operator", "values"), what="match expression")
        raw = e.str("key", required=True)
        key = _label_key(e, "key", raw) if raw is not None else None
        op = e.str("operator", required=True, choices=cnp.OPERATORS)
        values = e.str_list("values")
        if op in ("In", "NotIn") and not values:
            e.error("values", f"operator {op} needs at least one value")
        elif op in ("Exists", "DoesNotExist") and values:
            e.error("values", f"operator {op} takes no values", "remove values")
        if key is not None and op is not None:
            reqs.append(cnp.Requirement(key, op, tuple(values)))
    return None if len(m.col.errors) > before else cnp.EndpointSelector(tuple(reqs))


def _label_key(obj: Obj, field: str, raw: str | None = None) -> str | None:
    """A selector key without its source prefix; sources other than k8s/any are errors."""
    source, key = cnp.split_key(raw if raw is not None else field)
    if source not in cnp.SOURCES:
        obj.error(field, f"label source {source!r} is not supported",
                  "emunet pods carry k8s labels: write the key bare or with k8s: / any:")
        return None
    bad = names.label_key(key)
    if bad:
        obj.error(field, f"key {key!r} {bad}")
        return None
    return key


def _rules(spec: Obj, key: str, namespace: str,
           peer: str) -> tuple[cnp.Rule, ...] | None:
    """An ingress/egress list; None when absent or empty (the policy does not apply in that
    direction: Cilium's "if omitted or empty, this rule does not apply at ingress")."""
    items = spec.objs(key)
    if not items:
        return None
    peers_key = f"{peer}Endpoints"
    out = []
    for i, r in enumerate(items):
        unsupported = tuple(u for u in _RULE_UNSUPPORTED
                            if u.startswith(peer) or not u.startswith(("from", "to")))
        r.check_fields((peers_key, "toPorts", *unsupported), what=f"{key} rule")
        for u in unsupported:
            if r.has(u):
                r.error(u, f"{u} is not supported by emunet",
                        f"select peers with {peers_key} (labels)")
        # An empty or absent list is no L3 selector at all (Go: len(FromEndpoints) == 0).
        selectors = [_selector_obj(o) for o in r.objs(peers_key)]
        peers = tuple(s.in_namespace(namespace) for s in selectors if s is not None) \
            if selectors else None
        ports = tuple(p for p in (_port_rule(o, key) for o in r.objs("toPorts"))
                      if p is not None)
        out.append(cnp.Rule(peers, ports, i))
    return tuple(out)


def _port_rule(o: Obj, direction: str) -> cnp.PortRule | None:
    before = len(o.col.errors)
    o.check_fields(("ports", "rules", "originatingTLS", "terminatingTLS", "serverNames",
                    "listener"), what="toPorts entry")
    for k in ("originatingTLS", "terminatingTLS", "serverNames", "listener"):
        if o.has(k):
            o.error(k, f"{k} is not supported by emunet")
    ports = tuple(p for p in (_port(p) for p in o.objs("ports")) if p is not None)
    http = None
    rules = o.map("rules")
    if rules is not None:
        rules.check_fields(("http", *_L7_UNSUPPORTED), what="L7 rules")
        for k in _L7_UNSUPPORTED:
            if rules.has(k):
                rules.error(k, f"{k} rules are not supported by emunet", "use http rules")
        if rules.has("http") and direction == "egress":
            rules.error("http", "HTTP rules on egress are not supported by emunet yet",
                        "put the HTTP rules on the server's ingress policy")
        http = tuple(h for h in (_http(h) for h in rules.objs("http")) if h is not None)
        if len(o.col.errors) == before:
            if not ports:
                o.error("rules", "L7 rules need ports", 'add ports: [{port: "80", '
                        'protocol: TCP}]')
            for p in ports:
                if p.protocol != "TCP":
                    o.error("ports", f"HTTP rules need protocol TCP, not {p.protocol}",
                            "add protocol: TCP")
                    break
                if p.port == 0 or p.end_port is not None:
                    o.error("ports", "HTTP rules need single ports (not 0 or a range)")
                    break
    return None if len(o.col.errors) > before else cnp.PortRule(ports, http)


def _port(p: Obj) -> cnp.PortProtocol | None:
    p.check_fields(("port", "protocol", "endPort"), what="port")
    raw = p.str("port", required=True)
    protocol = p.str("protocol", choices=PROTOCOLS) or "ANY"
    end = p.int("endPort", lo=1, hi=65535)
    if raw is None:
        return None
    port: int | str
    if raw.isdigit():
        port = int(raw)
        if port > 65535:
            p.error("port", f"must be 0-65535, got {port}")
            return None
        if end is not None and end < port:
            p.error("endPort", f"endPort {end} is below port {port}")
            return None
    else:
        bad = names.port_name(raw)
        if bad:
            p.error("port", f"port name {raw!r} {bad}")
            return None
        if end is not None:
            p.error("endPort", "endPort needs a numeric port")
            return None
        port = raw
    return cnp.PortProtocol(port, protocol, end)


def _http(h: Obj) -> cnp.HTTPRule | None:
    before = len(h.col.errors)
    h.check_fields(("method", "path", "host", "headers", *_HTTP_UNSUPPORTED), what="http rule")
    for k in _HTTP_UNSUPPORTED:
        if h.has(k):
            h.error(k, f"{k} is not supported by emunet", "use headers")
    fields = {}
    for k in ("method", "path", "host"):
        v = h.str(k) or ""
        try:
            cnp.compile_re2(v)
        except re2.error as e:
            msg = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
            h.error(k, f"{v!r} is not an RE2 regular expression: {msg}",
                    "Envoy matches with RE2: no lookarounds or backreferences")
        fields[k] = v
    headers = []
    for item in h.str_list("headers"):
        name, sep, value = item.partition(" ")  # Cilium: "Name" or "Name: value"
        headers.append((name.rstrip(":"), value if sep else None))
    if len(h.col.errors) > before:
        return None
    return cnp.HTTPRule(fields["method"], fields["path"], fields["host"], tuple(headers))


def check_proxy_ports(col: Collector, pods: list[tuple[model.Pod, Obj]]) -> None:
    """containerPorts in the proxy range would collide with the L7 redirect: refuse them."""
    for pod, doc in pods:
        for i, c in enumerate(pod.containers):
            for j, cp in enumerate(c.ports):
                if PROXY_PORT_BASE <= cp.container_port <= PROXY_PORT_MAX:
                    line, path = at(doc, "spec", "containers", i, "ports", j, "containerPort")
                    col.error(line, path, f"containerPort {cp.container_port} is reserved "
                              f"for emunet's L7 proxy ({PROXY_PORT_BASE}-{PROXY_PORT_MAX})",
                              "use another port")


def _located(value: Any) -> Any:
    """Plain JSON as LDict/LList, so `parse` can read it (lines unknown)."""
    if isinstance(value, dict):
        d = LDict({k: _located(v) for k, v in value.items()})
        d.line, d.key_lines = 0, {}
        return d
    if isinstance(value, list):
        seq = LList(_located(v) for v in value)
        seq.line, seq.item_lines = 0, [0] * len(value)
        return seq
    return value


def from_manifest(m: model.Manifest) -> cnp.CiliumPolicy:
    """A manifest whose body is plain JSON (no lines known), e.g. one built by a test or sent
    as JSON, parsed as a config document would be (located errors name the policy)."""
    col = Collector(f"{m.namespace}/{m.name}")
    policy = parse(Obj(col, _located(m.body), "", 0), m.namespace or "default", m.name)
    col.raise_if_any()
    if policy is None:
        raise ConfigError(col.file, 0, "", "the policy could not be read")
    return policy
