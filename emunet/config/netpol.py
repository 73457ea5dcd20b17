"""networking.k8s.io/v1 NetworkPolicy documents to `emunet.model.netpol.NetworkPolicy`.

Checks follow the API server (pkg/apis/networking/validation: ValidateNetworkPolicySpec) so a
file emunet accepts applies to a real cluster and one it rejects would be rejected there too;
every mistake is a located error (file:line: field path). `policyTypes` is defaulted as the API
server does (pkg/apis/networking/v1/defaults.go). ipBlocks may be IPv4 or IPv6 (the policy
engine matches each family on its own, emunet.policy.compile); an except must be of its cidr's
family, as the API server's ValidateIPBlock demands (it must lie inside the cidr).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from emunet.config import kube, names
from emunet.config.fields import Obj
from emunet.model import netpol as pm

API_VERSION = "networking.k8s.io/v1"
SPEC_FIELDS = ("podSelector", "policyTypes", "ingress", "egress")
SELECTOR_FIELDS = ("matchLabels", "matchExpressions")
PEER_FIELDS = ("podSelector", "namespaceSelector", "ipBlock")
PORT_FIELDS = ("protocol", "port", "endPort")


def parse_network_policy(doc: Obj) -> pm.NetworkPolicy | None:
    doc.check_fields(kube.TOP_FIELDS, kube.TOP_IGNORED, what="NetworkPolicy")
    before = len(doc.col.errors)
    name, namespace, _ = kube.parse_metadata(doc, True, names.dns1123_subdomain)
    spec = doc.map("spec", required=True)
    if spec is None:
        return None
    spec.check_fields(SPEC_FIELDS, what="NetworkPolicy spec")
    pod_selector = selector(spec, "podSelector") or pm.LabelSelector()
    ingress = tuple(_rule(r, "from") for r in spec.objs("ingress"))
    egress = tuple(_rule(r, "to") for r in spec.objs("egress"))
    types = _policy_types(spec, bool(egress))
    if len(doc.col.errors) > before or name is None:
        return None
    return pm.NetworkPolicy(namespace, name, pod_selector, types, ingress, egress,
                            kube.loc(doc))


def _policy_types(spec: Obj, has_egress: bool) -> tuple[str, ...]:
    items = spec.list("policyTypes")
    if not items:  # absent or []: the API server's default
        return pm.infer_policy_types(has_egress)
    out: list[str] = []
    for value, path, line in items:
        if value not in (pm.INGRESS, pm.EGRESS):
            spec.col.error(line, path, f"must be Ingress or Egress, got {value!r}",
                           "policyTypes lists Ingress, Egress or both")
        elif value in out:
            spec.col.error(line, path, f"duplicate policy type {value}")
        else:
            out.append(value)
    return tuple(out)


def selector(obj: Obj, key: str) -> pm.LabelSelector | None:
    """A metav1.LabelSelector field; None when absent (or invalid, already reported)."""
    s = obj.map(key)
    if s is None:
        return None
    s.check_fields(SELECTOR_FIELDS, what="label selector")
    labels = s.str_map("matchLabels", names.label_key, names.label_value) or {}
    exprs = []
    for e in s.objs("matchExpressions"):
        e.check_fields(("key", "operator", "values"), what="matchExpressions entry")
        k = e.str("key", required=True, check=names.label_key)
        op = e.str("operator", required=True, choices=pm.OPERATORS)
        values = e.str_list("values")
        for v in values:
            bad = names.label_value(v)
            if bad:
                e.error("values", f"value {v!r} {bad}")
        if op in ("In", "NotIn") and not values:
            e.error("values" if e.has("values") else None,
                    f"must be non-empty when operator is {op}", "list at least one value")
        elif op in ("Exists", "DoesNotExist") and values:
            e.error("values", f"must be empty when operator is {op}", "remove values")
        if k is not None and op is not None:
            exprs.append(pm.Requirement(k, op, values))
    return pm.LabelSelector(tuple(sorted(labels.items())), tuple(exprs))


def _rule(r: Obj, peers_key: str) -> pm.Rule:
    r.check_fields((peers_key, "ports"), what=f"{'ingress' if peers_key == 'from' else 'egress'}"
                   " rule")
    peers = tuple(p for p in (_peer(o) for o in r.objs(peers_key)) if p is not None)
    ports = tuple(p for p in (_port(o) for o in r.objs("ports")) if p is not None)
    return pm.Rule(peers, ports)


def _peer(p: Obj) -> pm.Peer | None:
    p.check_fields(PEER_FIELDS, what="peer")
    pod, ns = selector(p, "podSelector"), selector(p, "namespaceSelector")
    block = _ip_block(p)
    if p.has("ipBlock") and (p.has("podSelector") or p.has("namespaceSelector")):
        p.error(None, "may not specify both ipBlock and a selector in one peer",
                "write the ipBlock as its own list item (separate peers are ORed)")
        return None
    if not any(p.has(k) for k in PEER_FIELDS):
        p.error(None, "must specify a peer",
                "give podSelector, namespaceSelector or ipBlock (omit the list to allow all)")
        return None
    return pm.Peer(pod, ns, block)


def _net(obj: Obj, value: Any, path: str, line: int
         ) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if not isinstance(value, str):
        obj.col.error(line, path, f"must be a CIDR string, got {value!r}")
        return None
    try:
        net = ipaddress.ip_network(value, strict=False)  # the API parses CIDRs sloppily
    except ValueError:
        obj.col.error(line, path, f"{value!r} is not a valid CIDR", "e.g. 10.0.0.0/24")
        return None
    return net


def _ip_block(p: Obj) -> pm.IPBlock | None:
    b = p.map("ipBlock")
    if b is None:
        return None
    b.check_fields(("cidr", "except"), what="ipBlock")
    if not b.has("cidr"):
        b.str("cidr", required=True)
        return None
    net = _net(b, b.raw("cidr"), b.sub("cidr"), b.line_of("cidr"))
    excepts = []
    for value, path, line in b.list("except"):
        e = _net(b, value, path, line)
        if e is None or net is None:
            continue
        if e.version != net.version or not (e.subnet_of(net)  # type: ignore[arg-type]
                                            and e.prefixlen > net.prefixlen):
            b.col.error(line, path, f"{value!r} must be a strict subset of cidr {net}",
                        "an except range lies inside the cidr and is smaller")
            continue
        excepts.append(value)
    return None if net is None else pm.IPBlock(str(net), tuple(excepts))


def _port(p: Obj) -> pm.PolicyPort | None:
    p.check_fields(PORT_FIELDS, what="NetworkPolicy port")
    protocol = p.str("protocol", choices=kube.PROTOCOLS) or "TCP"
    raw = p.raw("port")
    port: int | str | None = None
    if isinstance(raw, bool) or (raw is not None and not isinstance(raw, int | str)):
        p.error("port", f"must be a number or a port name, got {raw!r}")
        return None
    if isinstance(raw, int):
        port = p.int("port", lo=1, hi=65535)
        if port is None:
            return None
    elif isinstance(raw, str):
        port = kube.port_name_ref(p, "port", raw)
        if port is None:
            return None
    end = p.int("endPort", lo=1, hi=65535)
    if p.has("endPort"):
        if port is None:
            p.error("endPort", "endPort needs port", "set port to the first port of the range")
            return None
        if isinstance(port, str):
            p.error("endPort", "endPort needs a numeric port, not a port name")
            return None
        if end is not None and end < port:
            p.error("endPort", f"must be greater than or equal to port ({port}), got {end}")
            return None
    return pm.PolicyPort(protocol, port, end)
