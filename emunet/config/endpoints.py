"""v1 Endpoints and discovery.k8s.io/v1 EndpointSlice documents to `model.endpoints` objects.

The backends of a Service without a selector. Checked as the API server checks them
(pkg/apis/core/validation ValidateEndpoints: validateEndpointAddress, validateEndpointPort,
ValidateNonSpecialIP; pkg/apis/discovery/validation ValidateEndpointSlice), with its wording,
so `kubectl apply` prints what a real cluster would: `subsets[0].addresses[0].ip: Invalid
value: "abc": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)`.
"""

from __future__ import annotations

import ipaddress

from emunet.config import names
from emunet.config.fields import Obj
from emunet.config.kube import PROTOCOLS, TOP_IGNORED, loc, parse_metadata
from emunet.model.endpoints import (
    ENDPOINTS,
    SERVICE_NAME_LABEL,
    SLICE,
    EndpointAddress,
    EndpointGroup,
    EndpointPort,
    EndpointSet,
)

ADDRESS_FIELDS = ("ip", "hostname", "nodeName", "targetRef")
TARGET_FIELDS = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion",
                 "fieldPath")
PORT_FIELDS = ("name", "port", "protocol", "appProtocol")
SLICE_ENDPOINT_FIELDS = ("addresses", "conditions", "hostname", "nodeName", "targetRef")
SLICE_ENDPOINT_IGNORED = ("zone", "hints", "deprecatedTopology")
CONDITION_FIELDS = ("ready", "serving", "terminating")
ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")
MAX_SLICE_ENDPOINTS, MAX_SLICE_ADDRESSES, MAX_SLICE_PORTS = 1000, 100, 100
_BAD_IP = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
_BAD_PORT = "must be between 1 and 65535, inclusive"


def special_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """ValidateNonSpecialIP: an endpoint may not be these (a proxy would loop or leak)."""
    if ip.is_unspecified:
        return "may not be unspecified (0.0.0.0)"
    if ip.is_loopback:
        return "may not be in the loopback range (127.0.0.0/8, ::1/128)"
    if ip.is_link_local:
        return "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
    if ip in ipaddress.ip_network("224.0.0.0/24"):
        return "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
    return None


def check_ip(value: object, want_v4: bool = False) -> tuple[str | None, str]:
    """(the address, "") or (None, the API server's message for it)."""
    if not isinstance(value, str):
        return None, f"must be a string, got {value!r}"
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None, f'"{value}": ' + ("must be a valid IPv4 address" if want_v4 else _BAD_IP)
    if want_v4 and ip.version != 4:
        return None, f'"{value}": must be a valid IPv4 address'
    bad = special_ip(ip)
    return (None, f'"{value}": {bad}') if bad else (str(ip), "")


def _target(o: Obj) -> tuple[str, str] | None:
    ref = o.map("targetRef")
    if ref is None:
        return None
    ref.check_fields(TARGET_FIELDS, what="targetRef")
    kind, ns, name = ref.str("kind"), ref.str("namespace"), ref.str("name")
    return (ns or "default", name) if kind in (None, "Pod") and name else None


def _common(o: Obj) -> tuple[str | None, str | None, tuple[str, str] | None]:
    """hostname (a DNS-1123 label), nodeName (a subdomain), targetRef of an address."""
    hostname = o.str("hostname", check=names.dns1123_label) or None
    node = o.str("nodeName", check=names.dns1123_subdomain) or None
    return hostname, node, _target(o)


def _address(o: Obj, ready: bool) -> EndpointAddress | None:
    o.check_fields(ADDRESS_FIELDS, what="endpoint address")
    if not o.has("ip"):
        o.col.error(o.line, o.sub("ip"), "Required value", 'add "ip:" here')
        return None
    ip, bad = check_ip(o.raw("ip"))
    if bad:
        o.error("ip", bad)
    hostname, node, target = _common(o)
    if ip is None:
        return None
    return EndpointAddress(ip, ready, hostname, node, target)


def _ports(o: Obj, slice_: bool) -> tuple[EndpointPort, ...]:
    items = o.objs("ports")
    out, seen = [], {}
    for p in items:
        p.check_fields(PORT_FIELDS, what="endpoint port")
        name = p.str("name", check=names.dns1123_label if p.raw("name") else None) or ""
        if not slice_ and len(items) > 1 and not name and not p.misspelt:
            p.col.error(p.line, p.sub("name"), "Required value",
                        "every port of a subset with more than one port needs a name")
        elif name in seen and slice_:
            p.error("name", f"Duplicate value: {name!r} (first on line {seen[name]})")
        seen.setdefault(name, p.line)
        port = None
        raw = p.raw("port")
        if raw is not None or not slice_:  # a slice port may leave the number out
            if isinstance(raw, bool) or not isinstance(raw, int):
                p.error("port", f"must be an integer, got {raw!r}")
            elif not 1 <= raw <= 65535:
                p.error("port", f"{raw}: {_BAD_PORT}")
            else:
                port = raw
        protocol = p.str("protocol") or "TCP"
        if protocol not in PROTOCOLS:
            p.error("protocol", f'Unsupported value: "{protocol}": supported values: '
                    + ", ".join(f'"{x}"' for x in sorted(PROTOCOLS)))
        out.append(EndpointPort(port, protocol, name))
    return tuple(out)


def parse_endpoints(doc: Obj) -> EndpointSet | None:
    """v1 Endpoints: subsets of addresses (ready), notReadyAddresses and ports."""
    doc.check_fields(("apiVersion", "kind", "metadata", "subsets"), TOP_IGNORED,
                     what="Endpoints")
    before = len(doc.col.errors)
    name, namespace, labels = parse_metadata(doc, True, names.dns1123_subdomain)
    groups = []
    for s in doc.objs("subsets"):
        s.check_fields(("addresses", "notReadyAddresses", "ports"), what="endpoint subset")
        addrs = [_address(a, True) for a in s.objs("addresses")]
        addrs += [_address(a, False) for a in s.objs("notReadyAddresses")]
        if not addrs:
            s.error(None, "Required value: must specify `addresses` or `notReadyAddresses`")
        groups.append(EndpointGroup(tuple(a for a in addrs if a is not None),
                                    _ports(s, slice_=False)))
    if len(doc.col.errors) > before or name is None:
        return None
    return EndpointSet(ENDPOINTS, namespace, name, name, tuple(groups), labels, loc=loc(doc))


def parse_endpoint_slice(doc: Obj) -> EndpointSet | None:
    """discovery.k8s.io/v1 EndpointSlice: one group; its Service is the service-name label."""
    doc.check_fields(("apiVersion", "kind", "metadata", "addressType", "endpoints", "ports"),
                     TOP_IGNORED, what="EndpointSlice")
    before = len(doc.col.errors)
    name, namespace, labels = parse_metadata(doc, True, names.dns1123_subdomain)
    atype = doc.str("addressType", required=True)
    if atype is not None and atype not in ADDRESS_TYPES:
        doc.error("addressType", f'Unsupported value: "{atype}": supported values: '
                  + ", ".join(f'"{x}"' for x in ADDRESS_TYPES))
    items = doc.objs("endpoints")
    if len(items) > MAX_SLICE_ENDPOINTS:
        doc.error("endpoints", f"Too many: {len(items)}: must have at most "
                  f"{MAX_SLICE_ENDPOINTS} items")
    addrs = []
    for e in items:
        e.check_fields(SLICE_ENDPOINT_FIELDS, SLICE_ENDPOINT_IGNORED, what="endpoint")
        cond = e.map("conditions")
        ready = True  # "nil should be interpreted as true" (discovery/v1 EndpointConditions)
        if cond is not None:
            cond.check_fields(CONDITION_FIELDS, what="conditions")
            r = cond.bool("ready")
            ready = True if r is None else r
        hostname, node, target = _common(e)
        listed = e.list("addresses")
        if not listed:
            e.col.error(e.line, e.sub("addresses"), "Required value: must contain at least "
                        "1 address", 'add "addresses: [IP]"')
        elif len(listed) > MAX_SLICE_ADDRESSES:
            e.error("addresses", f"Too many: {len(listed)}: must have at most "
                    f"{MAX_SLICE_ADDRESSES} items")
        for value, path, line in listed:
            if atype == "FQDN":  # kept for `get`; kube-proxy balances to IP slices only
                ok = isinstance(value, str) and not names.dns1123_subdomain(value)
                ip, bad = (value, "") if ok else (None, f"{value!r}: must be a DNS name")
            else:
                ip, bad = check_ip(value, want_v4=atype == "IPv4")
            if ip is None:
                e.col.error(line, path, bad)
                continue
            addrs.append(EndpointAddress(ip, ready, hostname, node, target))
    ports = _ports(doc, slice_=True)
    if len(ports) > MAX_SLICE_PORTS:
        doc.error("ports", f"Too many: {len(ports)}: must have at most {MAX_SLICE_PORTS} items")
    if len(doc.col.errors) > before or name is None:
        return None
    return EndpointSet(SLICE, namespace, name, labels.get(SERVICE_NAME_LABEL, ""),
                       (EndpointGroup(tuple(addrs), ports),), labels, atype or "IPv4",
                       loc(doc))
