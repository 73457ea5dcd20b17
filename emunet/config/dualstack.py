"""Dual-stack address ranges in the Cluster document, read the way k3s reads its flags.

k3s's `--cluster-cidr` and `--service-cidr` are string-slice flags: a comma-separated list
(`10.42.0.0/16,2001:cafe:42::/56`), and in its config.yaml also a YAML list; every entry is
split on commas (k3s pkg/cli/server: util.SplitStringSlice). Both forms are accepted here. The
first range names the primary family (k3s: "first defined IPFamily is preferred"). The checks
are kube-apiserver's (cmd/kube-apiserver/app/options/validation.go, v1.32: at most two
entries, of different IP families, each at most 20 host bits while the old ClusterIP
allocator writes its bitmap, i.e. an IPv6 service range of /108 or longer) and k3s's (a
dual-stack cluster needs both ranges dual-stack). emunet also needs an IPv4 range: the
datapath forwards IPv4 first, IPv6 beside it (an IPv6-only cluster is refused).
"""

from __future__ import annotations

from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)

from emunet import model
from emunet.config.fields import Obj

# kube-apiserver validateClusterIPFlags: maxCIDRBits for the bitmap allocator
MAX_SERVICE_HOST_BITS = 20
Net = IPv4Network | IPv6Network


def family(net: Net) -> str:
    return model.IPV4 if net.version == 4 else model.IPV6


def _entries(obj: Obj, key: str) -> list[str] | None:
    """The entries of a k3s string-slice field: a string split on commas, or a YAML list of
    strings (each split too). None: the field is absent or of a wrong type (reported)."""
    raw = obj.raw(key)
    if raw is None:
        return None
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list):
        texts = list(obj.str_list(key))
        if len(texts) != len(raw):
            return None
    else:
        obj.str(key)  # reports the wrong type
        return None
    out = [t.strip() for text in texts for t in text.split(",")]
    if any(not t for t in out):
        obj.error(key, f"{raw!r} has an empty entry", "write ranges separated by single "
                  "commas, e.g. 10.42.0.0/16,2001:cafe:42::/56")
        return None
    return out


def parse_ranges(obj: Obj, key: str, default: str, flag: str) -> list[Net] | None:
    """clusterCIDR / serviceCIDR / a node's podCIDR: one or two networks of different
    families, as `flag` (the k3s/kube-apiserver flag the field stands for) allows."""
    texts = _entries(obj, key) if obj.has(key) else [default]
    if texts is None:
        return None
    if not texts:  # an empty list: upstream's flag parser refuses an empty value too
        obj.error(key, f"{flag} must not be empty", f"e.g. {default}")
        return None
    if len(texts) > 2:
        obj.error(key, f"{flag} must not contain more than two entries, got {len(texts)}",
                  "at most one IPv4 and one IPv6 range")
        return None
    nets: list[Net] = []
    for text in texts:
        try:
            nets.append(ip_network(text, strict=True))
            continue
        except ValueError:
            pass
        try:
            fixed = ip_network(text, strict=False)
        except ValueError:
            obj.error(key, f"{text!r} is not an IP network", "write it as address/prefix, "
                      "e.g. 10.42.0.0/16, or 10.42.0.0/16,2001:cafe:42::/56 for dual-stack")
            return None
        obj.error(key, f"{text!r} has host bits set", f"did you mean {fixed}?")
        return None
    if len(nets) == 2 and nets[0].version == nets[1].version:
        obj.error(key, f"{flag}[0] and {flag}[1] must be of different IP family",
                  "list one IPv4 and one IPv6 range")
        return None
    if not any(n.version == 4 for n in nets):
        obj.error(key, f"{texts[0]!r}: emunet needs an IPv4 range here (IPv6-only clusters "
                  "are not emulated)", f"add an IPv4 range first or second, e.g. "
                  f"{default},{texts[0]}")
        return None
    return nets


def check_service_size(obj: Obj, key: str, nets: list[Net]) -> bool:
    """kube-apiserver v1.32 (the old allocator's bitmap): at most 20 host bits per range."""
    ok = True
    for i, net in enumerate(nets):
        bits = net.max_prefixlen
        if bits - net.prefixlen > MAX_SERVICE_HOST_BITS:
            name = "--service-cluster-ip-range" + ("[1]" if i else "")
            obj.error(key, f"{net}: specified {name} is too large; for {bits}-bit addresses, "
                      f"the mask must be >= {bits - MAX_SERVICE_HOST_BITS}",
                      "use a smaller range, e.g. 2001:cafe:43::/112 (k3s's advice)"
                      if net.version == 6 else "use a smaller range, e.g. 10.43.0.0/16")
            ok = False
    return ok


def check_families_match(spec: Obj, cluster: list[Net], service: list[Net]) -> bool:
    """k3s: a dual-stack cluster needs dual-stack cluster-cidr and service-cidr, and the
    primary family is one for pods and Services (both lists in the same family order)."""
    fc, fs = [family(n) for n in cluster], [family(n) for n in service]
    if fc == fs:
        return True
    key = "serviceCIDR" if spec.has("serviceCIDR") else "clusterCIDR"
    spec.error(key, f"clusterCIDR families {fc} and serviceCIDR families {fs} differ",
               "k3s: dual-stack needs both clusterCIDR and serviceCIDR dual-stack, listed in "
               "the same family order (the first is the primary family)")
    return False


def split(nets: list[Net]) -> tuple[IPv4Network | None, IPv6Network | None]:
    v4 = next((n for n in nets if isinstance(n, IPv4Network)), None)
    v6 = next((n for n in nets if isinstance(n, IPv6Network)), None)
    return v4, v6


def default_pod_cidr6(cluster6: IPv6Network, index: int) -> IPv6Network | None:
    """Node `index`'s IPv6 pod range without a given one: the index-th /64 of the cluster's
    IPv6 range (kube-controller-manager node-cidr-mask-size-ipv6 64; k3s advises a /56, which
    holds 255 nodes besides the unused 0th, as the IPv4 /16 holds 255 /24s)."""
    mask = model.NODE_CIDR_MASK_IPV6
    if cluster6.prefixlen > mask or index >= 2 ** (mask - cluster6.prefixlen):
        return None
    return IPv6Network((int(cluster6.network_address) + (index << (128 - mask)), mask))


def parse_dns(spec: Obj, service6: IPv6Network | None
              ) -> tuple[IPv4Address | None, str | None]:
    """clusterDNS, k3s's --cluster-dns (a string slice too): the IPv4 address (emunet's pods'
    resolv.conf names it; checked against serviceCIDR by the caller) and kube-dns's IPv6
    ClusterIP. Unset in a dual-stack cluster, k3s takes the 10th address of every service
    range (the IPv6 one <range>::a) and makes kube-dns RequireDualStack; a single address
    given makes it SingleStack, as k3s does (len(ClusterDNSs) > 1)."""
    if not spec.has("clusterDNS"):
        return IPv4Address(model.DEFAULT_CLUSTER_DNS), (
            str(service6.network_address + 10) if service6 is not None else None)
    texts = _entries(spec, "clusterDNS")
    if texts is None:
        return None, None
    addrs = []
    for text in texts:
        try:
            addrs.append(ip_address(text))
        except ValueError:
            spec.error("clusterDNS", f"{text!r} is not an IP address",
                       "write the kube-dns ClusterIP, e.g. 10.43.0.10")
            return None, None
    v4 = [a for a in addrs if isinstance(a, IPv4Address)]
    v6 = [a for a in addrs if isinstance(a, IPv6Address)]
    if len(addrs) > 2 or len(v4) > 1 or len(v6) > 1:
        spec.error("clusterDNS", f"{spec.raw('clusterDNS')!r}: at most one address per IP "
                   "family", "e.g. 10.43.0.10,2001:cafe:43::a")
        return None, None
    if not v4:
        spec.error("clusterDNS", "emunet needs an IPv4 clusterDNS address (the pods' "
                   "resolv.conf names it)", f"add one, e.g. {model.DEFAULT_CLUSTER_DNS}")
        return None, None
    if v6 and service6 is None:
        spec.error("clusterDNS", f"{v6[0]} is IPv6 but serviceCIDR has no IPv6 range",
                   "list an IPv6 range in clusterCIDR and serviceCIDR, or remove it")
        return None, None
    if v6 and (v6[0] not in service6 or v6[0] == service6.network_address):  # type: ignore
        spec.error("clusterDNS", f"clusterDNS {v6[0]} is not a host address of serviceCIDR "
                   f"{service6}", "kube-dns's IPv6 ClusterIP comes from the IPv6 service range")
        return None, None
    return v4[0], str(v6[0]) if v6 else None
