"""What emunet's DNS responder honours of CoreDNS's Corefile (the kube-system/coredns ConfigMap).

`CoreDNS` is the parsed form (emunet.config.corefile reads it from a ConfigMap) that the state
carries to the responder (emunet.dns.zone); `k3s_corefile` is the Corefile k3s ships in its
coredns manifest (k3s-io/k3s manifests/coredns.yaml), what the ConfigMap holds when the config
gives none, and `k3s_default` its parsed form. Pure data, no parsing here.
"""

from __future__ import annotations

from dataclasses import dataclass

from emunet.model import ClusterSpec

KUBE_SYSTEM, CONFIGMAP = "kube-system", "coredns"
RESOLV_CONF = "/etc/resolv.conf"  # `forward . /etc/resolv.conf`: the node's resolvers
POD_MODES = ("disabled", "verified", "insecure")  # CoreDNS kubernetes plugin `pods`
DEFAULT_TTL = 5  # CoreDNS kubernetes plugin defaultTTL
REVERSE_ZONES = ("in-addr.arpa", "ip6.arpa")


@dataclass(frozen=True)
class CoreDNS:
    """The `.:53` server block's kubernetes and forward plugins (CoreDNS defaults when a
    directive is absent: plugin/kubernetes setup.go, kubernetes.go New)."""

    kubernetes: bool = True  # the block has a kubernetes plugin at all
    zones: tuple[str, ...] = ()  # its zones: lowercase, no trailing dot
    pods: str = "disabled"  # POD_MODES
    ttl: int = DEFAULT_TTL
    # `fallthrough [ZONES...]`: None absent, () every zone of the plugin
    fallthrough: tuple[str, ...] | None = None
    endpoint_pod_names: bool = False
    ignore_empty_service: bool = False
    # `forward . TO...`: addresses ("IP" or "IP:port") and/or RESOLV_CONF; () no forward plugin
    forward: tuple[str, ...] = ()

    def falls_through(self, zone: str) -> bool:
        return self.fallthrough is not None and (not self.fallthrough or zone in self.fallthrough)


def k3s_corefile(spec: ClusterSpec) -> str:
    """k3s's default Corefile for this cluster (`ttl` added when spec.dns.ttl is not CoreDNS's
    default, `forward` naming spec.dns.upstreams when given: emunet's node resolvers)."""
    ttl = f"      ttl {spec.dns_ttl}\n" if spec.dns_ttl != DEFAULT_TTL else ""
    upstream = " ".join(spec.dns_upstreams) or RESOLV_CONF
    return (".:53 {\n    errors\n    health\n    ready\n"
            f"    kubernetes {spec.cluster_domain} in-addr.arpa ip6.arpa {{\n"
            f"      pods insecure\n      fallthrough in-addr.arpa ip6.arpa\n{ttl}    }}\n"
            "    hosts /etc/coredns/NodeHosts {\n      ttl 60\n      reload 15s\n"
            "      fallthrough\n    }\n    prometheus :9153\n"
            f"    forward . {upstream}\n    cache 30\n    loop\n    reload\n    loadbalance\n"
            "    import /etc/coredns/custom/*.override\n}\n"
            "import /etc/coredns/custom/*.server\n")


def k3s_default(spec: ClusterSpec) -> CoreDNS:
    """`k3s_corefile` as emunet.config.corefile parses it (a unit test holds them equal)."""
    return CoreDNS(zones=(spec.cluster_domain.lower().rstrip("."), *REVERSE_ZONES),
                   pods="insecure", ttl=spec.dns_ttl, fallthrough=REVERSE_ZONES,
                   forward=tuple(spec.dns_upstreams) or (RESOLV_CONF,))
