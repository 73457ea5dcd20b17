"""A Service's clusterIP, clusterIPs, ipFamilies and ipFamilyPolicy: read, then checked
against the cluster's families.

`cluster_ips` and `families` read the fields (kube.parse_service); `check` runs, for a Service
of a config, the API server's create-time rules that need the cluster (model.ipfamily.settle:
its wording) and the address checks per family: a given clusterIP a host address of its
family's service range, not clusterDNS, not another Service's.
"""

from __future__ import annotations

import ipaddress
import json
from ipaddress import IPv4Network, IPv6Network

from emunet import model
from emunet.config.errors import Collector
from emunet.config.fields import Obj, at
from emunet.model import ipfamily


def cluster_ips(spec: Obj) -> tuple[str | None, tuple[str, ...]]:
    """(clusterIP, clusterIPs): None/(): allocate; "None": headless; else IPv4 or IPv6
    addresses, canonical (ranges checked in validate). Given only clusterIPs, clusterIP is
    its first value, as the API server's strategy keeps them in step."""
    ip = spec.str("clusterIP") or None
    if ip is not None and ip != "None":
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            spec.error("clusterIP", f"{ip!r} is not an IP address",
                       'leave it out to get one allocated, or write "None" for headless')
            return None, ()
    ips = []
    for text in spec.str_list("clusterIPs"):
        try:
            ips.append(str(ipaddress.ip_address(text)))
        except ValueError:
            ips.append(text)  # "None" or a bad value: check_fields reports the latter
    if ips and ip is None:
        ip = ips[0]
    if ips == [ip]:
        ips = []  # clusterIPs: [clusterIP] says no more than clusterIP (the model keeps one)
    return ip, tuple(ips)


def families(spec: Obj, stype: str) -> tuple[tuple[str, ...], str | None]:
    """spec.ipFamilies and spec.ipFamilyPolicy, checked as ValidateServiceClusterIPsRelated
    Fields does (supported values, no duplicate family); forbidden for ExternalName."""
    if stype == "ExternalName":
        for key in ("ipFamilies", "ipFamilyPolicy"):
            if spec.has(key):
                spec.error(key, "Forbidden: may not be set for ExternalName services",
                           f"remove {key}")
        return (), None
    policy = spec.str("ipFamilyPolicy")
    if policy is not None and policy not in ipfamily.POLICIES:
        spec.error("ipFamilyPolicy", f'Unsupported value: "{policy}": supported values: '
                   + ", ".join(f'"{p}"' for p in ipfamily.POLICIES))
        policy = None
    families: list[str] = []
    for fam, path, line in spec.list("ipFamilies"):
        if fam not in (model.IPV4, model.IPV6):
            spec.col.error(line, path, f"Unsupported value: {json.dumps(fam)}: supported "
                           'values: "IPv4", "IPv6"')
        elif fam in families:
            spec.col.error(line, path, f'Duplicate value: "{fam}"',
                           "list each family once: [IPv4, IPv6] or [IPv6, IPv4]")
        else:
            families.append(fam)
    return tuple(families), policy


def check(col: Collector, doc: Obj, svc: model.Service, spec: model.ClusterSpec,
          taken: dict[str, str]) -> None:
    """The cluster-dependent checks of one Service; `taken` (IP -> "ns/name") is shared by
    the Services of one config, so two of them cannot ask for one address."""
    fams = ipfamily.settle(svc, spec.families)
    spec_obj = doc.map("spec")
    for path, msg in fams.errors:
        key = path.split(".")[1].split("[")[0]
        if spec_obj is not None and not spec_obj.has(key):  # a defaulted field: point at
            key = next((k for k in ("ipFamilies", "clusterIPs", "clusterIP")  # what led to it
                        if spec_obj.has(k)), key)
        line, _ = at(doc, "spec", key)
        col.error(line, path, msg,
                  next((h for k, h in _HINT.items() if k in msg), ""))
    if fams.errors or svc.headless or svc.type == "ExternalName":
        return
    nets = {model.IPV4: IPv4Network(spec.service_cidr),
            model.IPV6: IPv6Network(spec.service_cidr6) if spec.service_cidr6 else None}
    who = f"{svc.namespace}/{svc.name}"
    key = "clusterIPs" if svc.cluster_ips else "clusterIP"
    for ip in fams.cluster_ips:
        line, path = at(doc, "spec", key)
        net = nets[ipfamily.family_of(ip)]
        addr = ipaddress.ip_address(ip)
        last = net.broadcast_address if net is not None and net.version == 4 else None
        if net is None or addr not in net or addr in (net.network_address, last):
            col.error(line, path, f"clusterIP {ip} is not a host address of serviceCIDR "
                      f"{net}", "leave clusterIP out to get one allocated")
        elif ip == spec.cluster_dns or ip == spec.cluster_dns6:
            col.error(line, path, f"clusterIP {ip} is clusterDNS, the kube-dns Service's",
                      "pick another address or leave clusterIP out")
        elif ip in taken:
            col.error(line, path, f"clusterIP {ip} is already Service {taken[ip]}'s")
        else:
            taken[ip] = who


_HINT = {
    "not configured for dual-stack services": "list an IPv6 range in the Cluster's "
    "clusterCIDR and serviceCIDR (k3s: --cluster-cidr/--service-cidr <v4>,<v6>), or use "
    "ipFamilyPolicy: PreferDualStack",
    "not configured on this cluster": "the Cluster document's serviceCIDR has no range of "
    "this family",
}
