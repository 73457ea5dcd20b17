"""The files kubelet writes into a pod: resolv.conf (dnsPolicy ClusterFirst) and /etc/hosts.

Pure: text from the cluster state. `host` writes them under /etc/netns/<pod netns>/, which
`ip netns exec` bind-mounts over /etc inside the pod's namespace.
"""

from __future__ import annotations

from emunet.state.cluster import ClusterState, PodState


def resolv_conf(state: ClusterState, pod: PodState) -> str:
    """What kubelet writes for dnsPolicy ClusterFirst (Kubernetes DNS spec; k3s defaults)."""
    domain = state.cluster.cluster_domain
    ns = pod.pod.namespace
    return (f"search {ns}.svc.{domain} svc.{domain} {domain}\n"
            f"nameserver {state.cluster.cluster_dns}\n"
            "options ndots:5\n")


def hosts_file(state: ClusterState, pod: PodState) -> str:
    """The kubelet-managed /etc/hosts (pkg/kubelet/kubelet_pods.go, managedHostsHeader)."""
    p = pod.pod
    hostname = (p.hostname or p.name)[:63]  # a DNS label, as kubelet truncates it
    lines = ["# Kubernetes-managed hosts file.",
             "127.0.0.1\tlocalhost",
             "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet",
             "fe00::0\tip6-mcastprefix",
             "fe00::1\tip6-allnodes",
             "fe00::2\tip6-allrouters"]
    if p.subdomain:  # <hostname>.<subdomain>.<namespace>.svc.<domain>, then the short name
        fqdn = f"{hostname}.{p.subdomain}.{p.namespace}.svc.{state.cluster.cluster_domain}"
        lines.append(f"{pod.ip}\t{fqdn}\t{hostname}")
    else:
        lines.append(f"{pod.ip}\t{hostname}")
    return "\n".join(lines) + "\n"
