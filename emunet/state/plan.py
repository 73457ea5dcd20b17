"""Plan a cluster: turn a validated `Config` into a `ClusterState`. Pure, no root.

Nodes get their pod subnets (10.42.N.0/24, as Flannel's host-local IPAM hands out), underlay IPs,
gateway and VTEP MACs; CoreDNS is added as k3s deploys it; Services get ClusterIPs and pods their
node, IP and MAC; Deployments are expanded into their pods by the Deployment controller.
"""

from __future__ import annotations

import hashlib
import ipaddress

from emunet import model, naming
from emunet.model import Config, Container, ContainerPort, Namespace, Pod, Service, ServicePort
from emunet.model.endpoints import (
    ENDPOINTS,
    EndpointAddress,
    EndpointGroup,
    EndpointPort,
    EndpointSet,
)
from emunet.model.ipfamily import REQUIRE
from emunet.state import families
from emunet.state.cluster import KUBE_SYSTEM, ClusterState, NodeState, PodIpam, StateError
from emunet.state.deploy import plan_deployments


def plan(config: Config) -> ClusterState:
    """Allocate everything for a validated config (raises StateError when it cannot)."""
    st = ClusterState(cluster=config.cluster)
    _plan_nodes(st)
    for ns in (Namespace("default"), Namespace(KUBE_SYSTEM), *config.namespaces):
        st.add_namespace(ns)
    add_kubernetes(st)
    _add_dns(st)
    st.reserved_node_ports = {sp.node_port for svc in config.services for sp in svc.ports
                              if sp.node_port is not None}
    for svc in config.services:
        st.add_service(svc)
    st.reserved_node_ports = set()
    ipam = PodIpam(st)
    for pod in config.pods:
        st.add_pod(pod, ipam)
    if config.deployments:
        plan_deployments(st, config.deployments)
    st.policies = {p.key: p for p in config.network_policies}
    st.cilium_policies = {(p.namespace, p.name): p for p in config.cilium_policies}
    st.others = list(config.others)
    st.endpoint_sets.update({es.key: es for es in config.endpoint_sets})
    st.coredns = config.coredns  # type: ignore[assignment]  # a model.coredns.CoreDNS or None
    st.links = {n.name: n.impairment for n in config.cluster.nodes
                if n.impairment is not None and n.impairment.active}
    return st


def _plan_nodes(st: ClusterState) -> None:
    c = st.cluster
    cluster_net = ipaddress.IPv4Network(c.cluster_cidr)
    underlay = ipaddress.IPv4Network(c.underlay_cidr)
    subnets = cluster_net.subnets(new_prefix=24) if cluster_net.prefixlen <= 24 else iter(())
    subnets = list(subnets)
    for i, spec in enumerate(c.nodes, start=1):
        if spec.pod_cidr:
            pod_cidr = ipaddress.IPv4Network(spec.pod_cidr)
        elif i < len(subnets):
            pod_cidr = subnets[i]  # node 1 -> 10.42.1.0/24, as DESIGN.md and the story say
        else:
            raise StateError(f"cluster CIDR {c.cluster_cidr} has no /24 left for node {i}")
        underlay_ip = spec.underlay_ip or str(underlay.network_address + 10 + i)
        gw = str(pod_cidr.network_address + 1)
        st.nodes.append(NodeState(
            name=spec.name, index=i, netns=naming.node_netns(spec.name),
            underlay_ip=underlay_ip, underlay_prefixlen=underlay.prefixlen,
            pod_cidr=str(pod_cidr), gateway_ip=gw, gateway_mac=naming.mac_from_ip(gw),
            vtep_mac=naming.vtep_mac(str(pod_cidr)), **families.node_fields(c, spec, i),
        ))


KUBERNETES = ("default", "kubernetes")


def kubernetes_ip(cluster: model.ClusterSpec) -> str:
    """The `kubernetes` Service's ClusterIP: the first address of the service range."""
    return str(ipaddress.IPv4Network(cluster.service_cidr).network_address + 1)


def add_kubernetes(st: ClusterState) -> None:
    """`default/kubernetes`, as every API server keeps it (its endpoint reconciler): ClusterIP
    .1, port https 443, and an Endpoints object naming the server, here the first node's
    address, where the API server also listens (emunet.api, inside that node's namespace)."""
    if not st.nodes:
        return
    st.add_service(Service(
        namespace="default", name="kubernetes", cluster_ip=kubernetes_ip(st.cluster),
        labels={"component": "apiserver", "provider": "kubernetes"},
        ports=(ServicePort(443, model.API_ENDPOINT_PORT, "TCP", "https"),)))
    server = EndpointAddress(st.nodes[0].underlay_ip)
    port = EndpointPort(model.API_ENDPOINT_PORT, "TCP", "https")
    es = EndpointSet(ENDPOINTS, "default", "kubernetes", "kubernetes",
                     (EndpointGroup((server,), (port,)),),
                     {"endpointslice.kubernetes.io/skip-mirror": "true"})
    st.endpoint_sets[es.key] = es


def _dns_port(name: str, protocol: str) -> ServicePort:
    return ServicePort(port=53, target_port=53, protocol=protocol, name=name)


def _add_dns(st: ClusterState) -> None:
    """CoreDNS as k3s deploys it: pod coredns-<hash> behind Service kube-dns."""
    labels = {"k8s-app": "kube-dns"}
    # k3s's labels on the Service; `kubectl cluster-info` lists Services labelled cluster-service
    svc_labels = {**labels, "kubernetes.io/cluster-service": "true",
                  "kubernetes.io/name": "CoreDNS"}
    # k3s renders one cluster-dns address per service range (the 10th) and then makes
    # kube-dns RequireDualStack with both as clusterIPs, primary first (deploy/manifests)
    ips: tuple[str, ...] = ()
    policy = None
    dns6 = st.cluster.cluster_dns6
    if dns6 is not None:
        ips = (st.cluster.cluster_dns, dns6)
        ips, policy = (ips[::-1] if st.cluster.families[0] == model.IPV6 else ips), REQUIRE
    st.add_service(Service(
        namespace=KUBE_SYSTEM, name="kube-dns", selector=dict(labels),
        cluster_ip=ips[0] if ips else st.cluster.cluster_dns, labels=svc_labels,
        ports=(_dns_port("dns", "UDP"), _dns_port("dns-tcp", "TCP")),
        cluster_ips=ips, ip_family_policy=policy,
    ))
    suffix = hashlib.sha256(st.cluster.name.encode()).hexdigest()
    name = f"coredns-{suffix[:9]}-{suffix[9:14]}"
    st.add_pod(Pod(
        namespace=KUBE_SYSTEM, name=name, labels=dict(labels),
        node_name=st.nodes[0].name if st.nodes else None,
        containers=(Container(name="coredns", image="emunet/coredns", ports=(
            ContainerPort(53, "UDP", "dns"), ContainerPort(53, "TCP", "dns-tcp"))),),
    ))
