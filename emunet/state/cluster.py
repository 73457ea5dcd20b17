"""Cluster state: IPAM, scheduling and endpoints computed from the model. Pure, no root.

The types of a planned cluster (nodes, pods, Services and the derived endpoints) and the
mutations plan, apply and delete make (`emunet.state.plan` builds one from a config). Endpoints
are derived, never stored: they follow pod readiness and labels. The JSON form
(`/run/emunet/state.json`) is `emunet.state.codec`; the file itself, `emunet.state.store`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from emunet import model, naming
from emunet.errors import InputError
from emunet.model import ClusterSpec, Namespace, Pod, Service

KUBE_SYSTEM = "kube-system"
NS_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API server


class StateError(InputError):
    """A request the cluster cannot satisfy (address space exhausted, name taken, ...): exit 2."""


@dataclass
class NodeState:
    name: str
    index: int  # 1-based, config order
    netns: str
    underlay_ip: str
    underlay_prefixlen: int
    pod_cidr: str
    gateway_ip: str  # .1 of the pod subnet, answered by the agent (ARP)
    gateway_mac: str
    vtep_mac: str


@dataclass
class PodState:
    pod: Pod
    node: str
    ip: str
    mac: str
    netns: str
    host_ifname: str  # node-side veth name
    ready: bool = False
    restarts: int = 0
    terminating: bool = False  # deleted, out of endpoints, still running its grace period
    running: bool = False  # its containers run (ready additionally needs readiness probes)

    @property
    def key(self) -> tuple[str, str]:
        return self.pod.key


@dataclass
class ServiceState:
    service: Service
    cluster_ip: str | None  # None for headless and ExternalName Services

    @property
    def key(self) -> tuple[str, str]:
        return self.service.key


@dataclass(frozen=True)
class Endpoint:
    """One backend of one Service port: the pod, its IP and the resolved target port."""

    ip: str
    port: int
    protocol: str
    pod: tuple[str, str]
    node: str
    ready: bool


@dataclass
class ClusterState:
    cluster: ClusterSpec
    nodes: list[NodeState] = field(default_factory=list)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    pods: dict[tuple[str, str], PodState] = field(default_factory=dict)
    services: dict[tuple[str, str], ServiceState] = field(default_factory=dict)
    deployments: dict[tuple[str, str], model.Deployment] = field(default_factory=dict)
    policies: dict[tuple[str, str], Any] = field(default_factory=dict)  # NetworkPolicy
    # CiliumNetworkPolicies, parsed (their manifests, for display, stay in `others`)
    cilium_policies: dict[tuple[str, str], Any] = field(default_factory=dict)
    others: list[model.Manifest] = field(default_factory=list)
    last_ip: dict[str, str] = field(default_factory=dict)  # host-local IPAM cursor per node
    # node -> its underlay link impairment now (`emunet link set`, seeded from the Cluster
    # document's nodes[].impairment); the agents apply delay/jitter/loss (emunet.host.tc)
    links: dict[str, model.Impairment] = field(default_factory=dict)
    # Bumped by every publish (`stamp`): the API server's resourceVersion (emunet.api), and what
    # readers of the state file report having loaded (emunet.state.loaded), so the supervisor
    # answers a change only once every agent, proxy and the DNS responder has it. 0: as `up`
    # wrote it.
    generation: int = 0
    # "<kind>/<namespace>/<name>" -> when the object first appeared in a published state (the
    # API's metadata.creationTimestamp; its uid derives from it), kept by `stamp`
    created: dict[str, float] = field(default_factory=dict)
    # "<kind>/<namespace>/<name>" -> the body of the object's last write through the API
    # (emunet.api.stored: the fields emunet does not model, kubectl's last-applied annotation),
    # forgotten with the object by `stamp`
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Derived, not serialised: ClusterIP -> Service key, built on first use and kept in step
    # by add_service/remove_service, so allocating 5,000 Services is not quadratic.
    _ip_owner: dict[str, tuple[str, str]] | None = field(default=None, repr=False,
                                                         compare=False)
    _svc_cursor: int = field(default=0, repr=False, compare=False)
    # Node ports the config being planned names: an earlier Service's allocation must not take
    # one (the API server sees objects one by one; a file is one request here). Not serialised.
    reserved_node_ports: set[int] = field(default_factory=set, repr=False, compare=False)

    # ---- mutations (used by plan, apply and delete) ----------------------------------------

    def add_namespace(self, ns: Namespace) -> None:
        labels = {**ns.labels, NS_NAME_LABEL: ns.name}
        self.namespaces[ns.name] = dataclasses.replace(ns, labels=labels)

    def add_service(self, svc: Service) -> ServiceState:
        old = self.services.get(svc.key)
        if svc.headless or svc.type == "ExternalName":
            ip = None
        elif svc.cluster_ip:
            ip = svc.cluster_ip
            owner = self.service_by_ip(ip)
            if owner is not None and owner.key != svc.key:
                raise StateError(f"clusterIP {ip} is already used by Service "
                                 f"{owner.key[0]}/{owner.key[1]}")
        elif old is not None and old.cluster_ip:
            ip = old.cluster_ip  # a Service keeps its ClusterIP across updates
        else:
            ip = self._allocate_service_ip()
        if svc.node_port_type:
            svc = self._allocate_node_ports(svc, old)
        st = ServiceState(service=svc, cluster_ip=ip)
        owners = self._owners()
        if old is not None and old.cluster_ip and owners.get(old.cluster_ip) == svc.key:
            del owners[old.cluster_ip]
        if ip:
            owners[ip] = svc.key
        self.services[svc.key] = st
        return st

    def _allocate_node_ports(self, svc: Service, old: ServiceState | None) -> Service:
        """Every port of a NodePort/LoadBalancer Service gets a node port: the given one, the
        one it had (updates keep it, as the API server does), else the lowest free one (the API
        server picks at random; emunet stays deterministic). Ports are the whole cluster's."""
        used: dict[tuple[int, str], str] = {}
        for key, other in self.services.items():
            if key != svc.key:
                for sp in other.service.ports:
                    if sp.node_port is not None:
                        used[(sp.node_port, sp.protocol)] = f"{key[0]}/{key[1]}"
        kept = {(sp.port, sp.protocol): sp.node_port for sp in old.service.ports} if old else {}
        taken = {n for n, _ in used} | self.reserved_node_ports
        ports = []
        for sp in svc.ports:
            np_ = sp.node_port or kept.get((sp.port, sp.protocol))
            if np_ is not None and (np_, sp.protocol) in used:
                raise StateError(f"Service {svc.namespace}/{svc.name}: nodePort {np_}/"
                                 f"{sp.protocol} is already Service {used[(np_, sp.protocol)]}'s")
            if np_ is None:
                lo, hi = model.NODE_PORT_RANGE
                np_ = next((n for n in range(lo, hi + 1) if n not in taken), None)
                if np_ is None:
                    raise StateError(f"the node port range {lo}-{hi} is full")
            taken.add(np_)
            used[(np_, sp.protocol)] = f"{svc.namespace}/{svc.name}"
            ports.append(dataclasses.replace(sp, node_port=np_))
        return dataclasses.replace(svc, ports=tuple(ports))

    def _owners(self) -> dict[str, tuple[str, str]]:
        if self._ip_owner is None:
            self._ip_owner = {s.cluster_ip: k for k, s in self.services.items() if s.cluster_ip}
        return self._ip_owner

    def _allocate_service_ip(self) -> str:
        """The next free address after the last one handed out (wrapping), from .11 on.

        .1 is the `kubernetes` Service's in every cluster and .10 the DNS address by default;
        a cursor (like host-local IPAM's) keeps allocation linear in the number of Services.
        """
        net = ipaddress.IPv4Network(self.cluster.service_cidr)
        first, last = int(net.network_address) + 11, int(net.broadcast_address) - 1
        owners, dns = self._owners(), self.cluster.cluster_dns
        size = last - first + 1
        start = self._svc_cursor if first <= self._svc_cursor <= last else first
        for i in range(max(size, 0)):
            cand = first + (start - first + i) % size
            ip = str(ipaddress.IPv4Address(cand))
            if ip not in owners and ip != dns:
                self._svc_cursor = cand + 1
                return ip
        raise StateError(f"service CIDR {self.cluster.service_cidr} is full")

    def add_pod(self, pod: Pod) -> PodState:
        old = self.pods.get(pod.key)
        if old is not None:  # same pod re-applied: keep node and IP
            new = dataclasses.replace(old, pod=pod)
            self.pods[pod.key] = new
            return new
        node = self.node(pod.node_name) if pod.node_name else self._schedule()
        ip = self._allocate_pod_ip(node)
        st = PodState(pod=pod, node=node.name, ip=ip, mac=naming.mac_from_ip(ip),
                      netns=naming.pod_netns(pod.namespace, pod.name),
                      host_ifname=naming.host_ifname(ip))
        self.pods[pod.key] = st
        return st

    def _schedule(self) -> NodeState:
        """Spread: the node with the fewest pods, first in config order on a tie."""
        if not self.nodes:
            raise StateError("the cluster has no nodes")
        counts = {n.name: 0 for n in self.nodes}
        for p in self.pods.values():
            counts[p.node] = counts.get(p.node, 0) + 1
        return min(self.nodes, key=lambda n: (counts[n.name], n.index))

    def _allocate_pod_ip(self, node: NodeState) -> str:
        """host-local IPAM: the next free address after the last one handed out, wrapping.

        Like the CNI host-local plugin, a released address is not reused at once, so a
        recreated pod gets a new IP (the story's 'IPs shift like sand').
        """
        # The addresses as integers, formatted only when tried: a /22's 1,022 hosts formatted
        # for every pod made planning 2,000 pods take half a minute (bench/api.py).
        net = ipaddress.IPv4Network(node.pod_cidr)
        lo, hi = int(net.network_address), int(net.broadcast_address)
        gateway = int(ipaddress.IPv4Address(node.gateway_ip))
        span = range(lo + 1, hi) if net.prefixlen < 31 else range(lo, hi + 1)  # net.hosts()
        hosts = [h for h in span if h != gateway]
        used = {p.ip for p in self.pods.values() if p.node == node.name}
        last = self.last_ip.get(node.name)
        start = 0
        if last is not None:
            with contextlib.suppress(ValueError):  # not one of this range's hosts: from the top
                start = hosts.index(int(ipaddress.IPv4Address(last))) + 1
        for i in range(len(hosts)):
            cand = str(ipaddress.IPv4Address(hosts[(start + i) % len(hosts)]))
            if cand not in used:
                self.last_ip[node.name] = cand
                return cand
        raise StateError(f"node {node.name}: pod subnet {node.pod_cidr} is full")

    def remove_pod(self, key: tuple[str, str]) -> PodState | None:
        return self.pods.pop(key, None)

    def remove_service(self, key: tuple[str, str]) -> ServiceState | None:
        gone = self.services.pop(key, None)
        if gone is not None and gone.cluster_ip and self._ip_owner is not None:
            self._ip_owner.pop(gone.cluster_ip, None)
        return gone

    def stamp(self, now: float) -> None:
        """Before a publish: the next generation, and a creation time for each new object (the
        ones gone are forgotten, so a re-created object is a new one, with a new uid)."""
        self.generation += 1
        keys = object_keys(self)
        self.created = {k: self.created.get(k, now) for k in keys}
        self.manifests = {k: v for k, v in self.manifests.items() if k in self.created}

    # ---- queries ---------------------------------------------------------------------------

    def node(self, name: str) -> NodeState:
        for n in self.nodes:
            if n.name == name:
                return n
        raise StateError(f"no node named {name!r}")

    def service_by_ip(self, ip: str) -> ServiceState | None:
        key = self._owners().get(ip)
        return self.services.get(key) if key is not None else None

    def pod_by_ip(self, ip: str) -> PodState | None:
        for p in self.pods.values():
            if p.ip == ip:
                return p
        return None

    def selected_pods(self, svc: Service) -> list[PodState]:
        if svc.selector is None:
            return []
        return [p for p in self.pods.values()
                if p.pod.namespace == svc.namespace
                and all(p.pod.labels.get(k) == v for k, v in svc.selector.items())]

    def endpoints(self, key: tuple[str, str]) -> dict[int, list[Endpoint]]:
        """Per Service port index: the backends, named targetPorts resolved per pod.

        As the EndpointSlice controller does, a pod that does not declare a named targetPort
        is not a backend for that port; unready pods are listed with ready=False.
        """
        svc = self.services[key].service
        out: dict[int, list[Endpoint]] = {}
        pods = sorted(self.selected_pods(svc), key=lambda p: ipaddress.IPv4Address(p.ip))
        for i, sp in enumerate(svc.ports):
            eps = []
            for p in pods:
                port = resolve_target_port(p.pod, sp.target_port, sp.protocol)
                if port is not None:
                    eps.append(Endpoint(p.ip, port, sp.protocol, p.key, p.node, p.ready))
            out[i] = eps
        return out


def object_keys(st: ClusterState) -> list[str]:
    """"<kind>/<namespace>/<name>" of every object the state holds (nodes: no namespace)."""
    keys = [f"Node//{n.name}" for n in st.nodes]
    keys += [f"Namespace//{n}" for n in st.namespaces]
    keys += [f"Pod/{ns}/{n}" for ns, n in st.pods]
    keys += [f"Service/{ns}/{n}" for ns, n in st.services]
    keys += [f"Deployment/{ns}/{n}" for ns, n in st.deployments]
    keys += [f"NetworkPolicy/{ns}/{n}" for ns, n in st.policies]
    keys += [f"CiliumNetworkPolicy/{ns}/{n}" for ns, n in st.cilium_policies]
    return keys


def resolve_target_port(pod: Pod, target: int | str, protocol: str) -> int | None:
    """A Service targetPort on one pod: a number as is, a name via the pod's containerPorts."""
    if isinstance(target, int):
        return target
    for cp in pod.container_ports():
        if cp.name == target and cp.protocol == protocol:
            return cp.container_port
    return None

