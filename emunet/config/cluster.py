"""The emunet `Cluster` document: nodes, address ranges, DNS and VXLAN settings.

Parses `apiVersion: emunet/v1alpha1, kind: Cluster` into `model.ClusterSpec` (defaults from
`emunet.model`, k3s + Flannel) and checks that the address plan `emunet.state` will derive from
it is possible: every range a valid IPv4 network, no two ranges overlapping, one pod /24 and one
underlay address per node, the DNS address inside the service range, a 24-bit VNI and an MTU
that leaves room for VXLAN's 50 bytes.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from emunet import model
from emunet.config import dualstack as ds
from emunet.config import names
from emunet.config.fields import Obj
from emunet.config.impairment import ImpairmentError, parse

CLUSTER_API_VERSION = "emunet/v1alpha1"
UNDERLAY_MTU = 1500  # the veths between node namespaces keep Linux's Ethernet default
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8 (RFC 7348 section 5)
IPV6_MIN_MTU = 1280  # RFC 8200 section 5 (dual-stack pods need it)
MAX_VNI = 2**24 - 1  # the VNI is a 24-bit field (RFC 7348 section 5)
UNDERLAY_FIRST_HOST = 10  # state.py: node i gets underlay network + 10 + i

_SPEC_FIELDS = ("nodes", "clusterCIDR", "serviceCIDR", "clusterDNS", "clusterDomain",
                "underlay", "vxlan", "mtu", "dns", "conntrack", "offloads", "busyPoll", "apiServer")
_META_FIELDS = ("name",)
_META_IGNORED = ("labels", "annotations")


def _net(obj: Obj, key: str, default: str | None) -> IPv4Network | None:
    text = obj.str(key) if obj.has(key) else default
    if text is None:
        return None
    try:
        return IPv4Network(text, strict=True)
    except ValueError:
        pass
    try:
        fixed = IPv4Network(text, strict=False)
    except ValueError:
        obj.error(key, f"{text!r} is not an IPv4 network", "write it as address/prefix, "
                  "e.g. 10.42.0.0/16")
        return None
    obj.error(key, f"{text!r} has host bits set", f"did you mean {fixed}?")
    return None


def _addr(obj: Obj, key: str, default: str | None) -> IPv4Address | None:
    text = obj.str(key) if obj.has(key) else default
    if text is None:
        return None
    try:
        return IPv4Address(text)
    except ValueError:
        obj.error(key, f"{text!r} is not an IPv4 address")
        return None


def default_pod_cidr(cluster: IPv4Network, index: int) -> IPv4Network | None:
    """The /24 state.py gives node `index` (1-based) when it has no podCIDR: the index-th."""
    if cluster.prefixlen > 24 or index >= 2 ** (24 - cluster.prefixlen):
        return None
    return IPv4Network((int(cluster.network_address) + (index << 8), 24))


def parse_cluster(doc: Obj) -> model.ClusterSpec | None:
    """The Cluster document (already known to have the right apiVersion and kind)."""
    doc.check_fields(("apiVersion", "kind", "metadata", "spec"), what="Cluster")
    meta = doc.map("metadata", required=True)
    name = "emunet"
    if meta is not None:
        meta.check_fields(_META_FIELDS, _META_IGNORED, what="metadata")
        name = meta.str("name", required=True, check=names.dns1123_label) or name
    spec = doc.map("spec", required=True)
    if spec is None:
        return None
    spec.check_fields(_SPEC_FIELDS, what="Cluster spec")
    errors_before = len(doc.col.errors)
    cluster_nets = ds.parse_ranges(spec, "clusterCIDR", model.DEFAULT_CLUSTER_CIDR,
                                   "--cluster-cidr")
    service_nets = ds.parse_ranges(spec, "serviceCIDR", model.DEFAULT_SERVICE_CIDR,
                                   "--service-cluster-ip-range")
    families: tuple[str, ...] = (model.IPV4,)
    if cluster_nets is not None and service_nets is not None and \
            ds.check_service_size(spec, "serviceCIDR", service_nets) and \
            ds.check_families_match(spec, cluster_nets, service_nets):
        families = tuple(ds.family(n) for n in cluster_nets)
    cluster, cluster6 = ds.split(cluster_nets or [])
    service, service6 = ds.split(service_nets or [])
    underlay_obj = spec.map("underlay")
    underlay: IPv4Network | None = IPv4Network(model.DEFAULT_UNDERLAY_CIDR)
    underlay6 = _underlay6(underlay_obj, len(families) == 2)
    if underlay_obj is not None:
        underlay_obj.check_fields(("cidr", "cidr6"), what="underlay")
        underlay = _net(underlay_obj, "cidr", model.DEFAULT_UNDERLAY_CIDR)
    _check_overlaps(spec, underlay_obj, cluster, service, underlay)
    _check_overlaps(spec, underlay_obj, cluster6, service6, underlay6, "cidr6")

    dns_ip, dns6 = ds.parse_dns(spec, service6)
    if dns_ip is not None and service is not None:
        if dns_ip not in service:
            spec.error("clusterDNS" if spec.has("clusterDNS") else "serviceCIDR",
                       f"clusterDNS {dns_ip} is outside serviceCIDR {service}",
                       "kube-dns is a Service, so its ClusterIP comes from the service range")
        elif dns_ip in (service.network_address, service.broadcast_address):
            spec.error("clusterDNS", f"{dns_ip} is the network or broadcast address of "
                       f"{service}", "use a host address such as the .10 one")
    domain = spec.str("clusterDomain", check=names.dns1123_subdomain)

    vxlan = spec.map("vxlan")
    vni, port = model.DEFAULT_VXLAN_VNI, model.DEFAULT_VXLAN_PORT
    if vxlan is not None:
        vxlan.check_fields(("vni", "port"), what="vxlan")
        vni = vxlan.int("vni", lo=1, hi=MAX_VNI, why="the VNI is 24 bits (RFC 7348 section 5)")
        port = vxlan.int("port", lo=1, hi=65535, why="a UDP port; Flannel uses 8472, IANA 4789")
        vni = model.DEFAULT_VXLAN_VNI if vni is None else vni
        port = model.DEFAULT_VXLAN_PORT if port is None else port

    mtu = spec.int("mtu", lo=576, hi=9000,
                   why="576 is the IPv4 minimum (RFC 791), 9000 a jumbo frame")
    if mtu is not None and mtu > UNDERLAY_MTU - VXLAN_OVERHEAD:
        spec.error("mtu", f"pod MTU {mtu} does not fit in the {UNDERLAY_MTU}-byte underlay "
                   f"once VXLAN adds {VXLAN_OVERHEAD} bytes (outer Ethernet 14, IPv4 20, UDP 8, "
                   "VXLAN 8; RFC 7348 does not fragment)",
                   f"use at most {UNDERLAY_MTU - VXLAN_OVERHEAD}")
    elif mtu is not None and mtu < IPV6_MIN_MTU and len(families) == 2:
        spec.error("mtu", f"pod MTU {mtu} is below IPv6's minimum link MTU of {IPV6_MIN_MTU} "
                   "(RFC 8200 section 5): Linux disables IPv6 on such a link",
                   f"use at least {IPV6_MIN_MTU} in a dual-stack cluster")

    ttl, upstreams = model.DEFAULT_DNS_TTL, ()
    dns = spec.map("dns")
    if dns is not None:
        dns.check_fields(("ttl", "upstreams"), what="dns")
        ttl_v = dns.int("ttl", lo=0, hi=2**31 - 1, why="a DNS TTL is 31 bits (RFC 2181 §8)")
        ttl = model.DEFAULT_DNS_TTL if ttl_v is None else ttl_v
        upstreams = _upstreams(dns)

    ct_max = model.DEFAULT_CONNTRACK_MAX
    ct = spec.map("conntrack")
    if ct is not None:
        ct.check_fields(("max",), what="conntrack")
        v = ct.int("max", lo=16, hi=2**22,
                   why="connections each node agent tracks (Linux: nf_conntrack_max)")
        ct_max = ct_max if v is None else v

    offloads = spec.bool("offloads")
    busy = spec.int("busyPoll", lo=0, hi=100_000,
                    why="microseconds a node agent polls after traffic before sleeping (0: off)")
    api_port = model.DEFAULT_API_PORT
    api = spec.map("apiServer")
    if api is not None:
        api.check_fields(("port",), what="apiServer")
        v = api.int("port", lo=0, hi=65535,
                    why="a TCP port on 127.0.0.1 (0: any free one, chosen by `emunet up`)")
        api_port = api_port if v is None else v
    nodes = _nodes(spec, cluster, underlay, cluster6, underlay6)
    if len(doc.col.errors) > errors_before:
        return None
    return model.ClusterSpec(
        name=name, nodes=nodes, cluster_cidr=str(cluster), service_cidr=str(service),
        cluster_dns=str(dns_ip), cluster_domain=domain or model.DEFAULT_CLUSTER_DOMAIN,
        vxlan_vni=vni, vxlan_port=port, underlay_cidr=str(underlay),
        mtu=model.DEFAULT_MTU if mtu is None else mtu, dns_ttl=ttl, dns_upstreams=upstreams,
        conntrack_max=ct_max, offloads=True if offloads is None else offloads,
        busy_poll_us=model.DEFAULT_BUSY_POLL_US if busy is None else busy, api_port=api_port,
        loc=model.Loc(doc.col.file, doc.line), families=families,
        cluster_cidr6=str(cluster6) if cluster6 else None,
        service_cidr6=str(service6) if service6 else None, cluster_dns6=dns6,
        underlay_cidr6=str(underlay6) if underlay6 else None)


def _underlay6(underlay_obj: Obj | None, dual: bool) -> IPv6Network | None:
    """underlay.cidr6: the nodes' IPv6 underlay range (dual-stack only; default a ULA)."""
    given = underlay_obj is not None and underlay_obj.has("cidr6")
    if not dual:
        if given:
            underlay_obj.error("cidr6", "underlay.cidr6 is for dual-stack clusters",  # type: ignore[union-attr]
                               "list an IPv6 range in clusterCIDR and serviceCIDR, or remove it")
        return None
    if not given:
        return IPv6Network(model.DEFAULT_UNDERLAY_CIDR6)
    assert underlay_obj is not None
    text = underlay_obj.str("cidr6")
    if text is None:
        return None
    try:
        return IPv6Network(text, strict=True)
    except ValueError:
        underlay_obj.error("cidr6", f"{text!r} is not an IPv6 network",
                           f"write it as address/prefix, e.g. {model.DEFAULT_UNDERLAY_CIDR6}")
        return None


def _check_overlaps(spec: Obj, underlay_obj: Obj | None, cluster: ds.Net | None,
                    service: ds.Net | None, underlay: ds.Net | None, ukey: str = "cidr") -> None:
    """Pod, Service and node addresses must be told apart by address alone (per family)."""
    ranges = [("clusterCIDR", cluster, spec, "clusterCIDR"),
              ("serviceCIDR", service, spec, "serviceCIDR"),
              (f"underlay.{ukey}", underlay, underlay_obj, ukey)]
    for i, (name_a, net_a, _, _) in enumerate(ranges):
        for name_b, net_b, obj_b, key_b in ranges[i + 1:]:
            if net_a is None or net_b is None or not net_a.overlaps(net_b):
                continue
            obj, key = (obj_b, key_b) if obj_b is not None and obj_b.has(key_b) else (
                spec, name_a if spec.has(name_a) else None)
            obj.error(key, f"{name_b} {net_b} overlaps {name_a} {net_a}",
                      "pod, service and node ranges must be disjoint, or a packet's "
                      "destination is ambiguous")


def _upstreams(dns: Obj) -> tuple[str, ...]:
    out = []
    for item, path, line in dns.list("upstreams"):
        try:
            out.append(str(ipaddress.ip_address(item if isinstance(item, str) else "")))
        except ValueError:
            dns.col.error(line, path, f"must be an IP address, got {item!r}",
                          "write a resolver address such as 192.168.1.1")
    return tuple(out)


def _nodes(spec: Obj, cluster: IPv4Network | None, underlay: IPv4Network | None,
           cluster6: IPv6Network | None = None,
           underlay6: IPv6Network | None = None) -> tuple[model.NodeSpec, ...]:
    items = spec.objs("nodes", required=True)
    if isinstance(spec.raw("nodes"), list) and not spec.raw("nodes"):
        spec.error("nodes", "a cluster needs at least one node", "add '- name: node-1'")
    nodes: list[model.NodeSpec] = []
    seen: dict[str, int] = {}
    cidrs: list[tuple[ds.Net, str]] = []
    ips: dict[IPv4Address | IPv6Address, str] = {}
    for index, obj in enumerate(items, start=1):
        obj.check_fields(("name", "podCIDR", "underlayIP", "underlayIP6", "datapath",
                          "impairment"), what="node")
        name = obj.str("name", required=True, check=names.dns1123_label)
        datapath = obj.str("datapath", choices=("emunet", "kernel")) or "emunet"
        if name is not None and name in seen:
            obj.error("name", f"duplicate node name {name!r} (first on line {seen[name]})")
        elif name is not None:
            seen[name] = obj.line_of("name")
        who = name or f"#{index}"
        pod_cidr, pod_cidr6 = _pod_cidrs(obj, index, cluster, cluster6)
        for net in (pod_cidr, pod_cidr6):
            for other, other_name in cidrs:
                if net is not None and net.version == other.version and net.overlaps(other):
                    obj.error("podCIDR" if obj.has("podCIDR") else None,
                              f"pod range {net} overlaps node {other_name}'s {other}")
            if net is not None:
                cidrs.append((net, who))
        ip = _underlay_ip(obj, index, underlay)
        ip6 = _underlay_ip6(obj, index, underlay6)
        for key, addr in (("underlayIP", ip), ("underlayIP6", ip6)):
            if addr is not None and addr in ips:
                obj.error(key if obj.has(key) else None,
                          f"underlay address {addr} is also node {ips[addr]}'s")
            elif addr is not None:
                ips[addr] = who
        given6 = pod_cidr6 is not None and ":" in str(obj.raw("podCIDR") or "")
        nodes.append(model.NodeSpec(
            name=name or "", pod_cidr=str(pod_cidr) if obj.has("podCIDR") else None,
            underlay_ip=str(ip) if obj.has("underlayIP") else None,
            loc=model.Loc(spec.col.file, obj.line), datapath=datapath,
            impairment=_impairment(obj), pod_cidr6=str(pod_cidr6) if given6 else None,
            underlay_ip6=str(ip6) if obj.has("underlayIP6") else None))
    return tuple(nodes)


def _pod_cidrs(obj: Obj, index: int, cluster: IPv4Network | None,
               cluster6: IPv6Network | None) -> tuple[IPv4Network | None, IPv6Network | None]:
    """A node's podCIDR: "<v4>" or, in a dual-stack cluster, "<v4>,<v6>" (k3s's node
    spec.podCIDRs as one field); a family left out gets the node's default range."""
    pod_cidr: IPv4Network | None = None
    pod_cidr6: IPv6Network | None = None
    given4 = given6 = False
    if obj.has("podCIDR"):
        nets = ds.parse_ranges(obj, "podCIDR", "", "podCIDRs")
        if nets is None:
            return None, None
        pod_cidr, pod_cidr6 = ds.split(nets)
        given4, given6 = True, pod_cidr6 is not None
        if pod_cidr6 is not None and cluster6 is None:
            obj.error("podCIDR", f"{pod_cidr6} is IPv6 but the cluster is IPv4-only",
                      "list an IPv6 range in clusterCIDR and serviceCIDR first")
            return None, None
    for net, parent, given, smallest in ((pod_cidr, cluster, given4, 30),
                                         (pod_cidr6, cluster6, given6, 126)):
        if not given or net is None or parent is None:
            continue
        if not net.subnet_of(parent):  # type: ignore[arg-type]
            obj.error("podCIDR", f"{net} is outside clusterCIDR {parent}",
                      "a node's pod range is carved from the cluster range")
        elif net.prefixlen > smallest:
            obj.error("podCIDR", f"{net} is too small", "it needs a gateway and at least one "
                      f"pod: use /{smallest} or larger (k3s uses /24 and /64)")
    if not given4 and cluster is not None:
        pod_cidr = default_pod_cidr(cluster, index)
        if pod_cidr is None:
            room = max(0, 2 ** (24 - cluster.prefixlen) - 1) if cluster.prefixlen <= 24 \
                else 0
            obj.error(None, f"no /24 left in clusterCIDR {cluster} for node {index} (it "
                      f"holds {room} node /24s: node N gets the N-th, the .0 one unused)",
                      "use a larger clusterCIDR or give the node a podCIDR")
    if not given6 and cluster6 is not None:
        pod_cidr6 = ds.default_pod_cidr6(cluster6, index)
        if pod_cidr6 is None:
            obj.error(None, f"no /64 left in clusterCIDR {cluster6} for node {index} (node N "
                      "gets the N-th /64, the 0th unused)",
                      "use a larger IPv6 clusterCIDR (k3s: a /56) or give the node a podCIDR")
    return pod_cidr, pod_cidr6


def _impairment(node: Obj) -> model.Impairment | None:
    """nodes[].impairment: {delay, jitter, loss, rate} as tc writes them."""
    imp = node.map("impairment")
    if imp is None:
        return None
    keys = ("delay", "jitter", "loss", "rate", "distribution")
    imp.check_fields(keys, what="impairment")
    values = {k: imp.str(k) for k in keys}
    if any(imp.has(k) and values[k] is None for k in keys):
        return None  # a value of the wrong type: already reported, nothing more to say
    example = "e.g. impairment: {delay: 50ms, jitter: 5ms, loss: 5%, rate: 10mbit}"
    if not any(values.values()):
        imp.error(None, "an empty impairment: give delay, jitter, loss or rate", example)
        return None
    try:
        return parse(**values)
    except ImpairmentError as e:
        field, _, msg = str(e).partition(": ")
        imp.error(field if field in keys and imp.has(field) else None, msg, example)
        return None


def _underlay_ip(obj: Obj, index: int, underlay: IPv4Network | None) -> IPv4Address | None:
    if underlay is None:
        return None
    if obj.has("underlayIP"):
        ip = _addr(obj, "underlayIP", None)
        if ip is not None and (ip not in underlay or ip in (underlay.network_address,
                                                             underlay.broadcast_address)):
            obj.error("underlayIP", f"{ip} is not a host address of underlay.cidr {underlay}")
            return None
        return ip
    ip = underlay.network_address + UNDERLAY_FIRST_HOST + index
    if ip >= underlay.broadcast_address:
        obj.error(None, f"no underlay address left in {underlay} for node {index} (nodes get "
                  f"addresses from .{UNDERLAY_FIRST_HOST + 1} up)",
                  "use a larger underlay.cidr or give the node an underlayIP")
        return None
    return ip


def _underlay_ip6(obj: Obj, index: int, underlay6: IPv6Network | None) -> IPv6Address | None:
    """nodes[].underlayIP6: the node's address in underlay.cidr6 (default <range>::<10+i>,
    as the IPv4 one); only in a dual-stack cluster."""
    if underlay6 is None:
        if obj.has("underlayIP6"):
            obj.error("underlayIP6", "underlayIP6 is for dual-stack clusters",
                      "list an IPv6 range in clusterCIDR and serviceCIDR, or remove it")
        return None
    if obj.has("underlayIP6"):
        text = obj.str("underlayIP6")
        try:
            ip = IPv6Address(text or "")
        except ValueError:
            obj.error("underlayIP6", f"{text!r} is not an IPv6 address")
            return None
        if ip not in underlay6 or ip == underlay6.network_address:
            obj.error("underlayIP6", f"{ip} is not a host address of underlay.cidr6 "
                      f"{underlay6}")
            return None
        return ip
    ip = underlay6.network_address + UNDERLAY_FIRST_HOST + index
    if ip not in underlay6:
        obj.error(None, f"no underlay IPv6 address left in {underlay6} for node {index}",
                  "use a larger underlay.cidr6 or give the node an underlayIP6")
        return None
    return ip
