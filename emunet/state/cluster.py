"""Cluster state: IPAM, scheduling and endpoints computed from the model. Pure, no root.

The types of a planned cluster (nodes, pods, Services and the derived endpoints) and the
mutations plan, apply and delete make (`emunet.state.plan` builds one from a config). Endpoints
are derived, never stored: they follow pod readiness and labels. The JSON form
(`/run/emunet/state.json`) is `emunet.state.codec`; the file itself, `emunet.state.store`.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

from emunet import model, naming
from emunet.model import ClusterSpec, Namespace, Pod, Service
from emunet.model.coredns import CONFIGMAP, CoreDNS
from emunet.model.endpoints import ENDPOINTS, SLICE, EndpointSet
from emunet.state import families
from emunet.state.errors import StateError

KUBE_SYSTEM = "kube-system"
NS_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API server


__all__ = ["StateError"]  # defined in state.errors (state.families raises it too)


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
    # Dual-stack only (None in an IPv4-only cluster; state.families): the node's pod /64, its
    # IPv6 gateway (<pod /64>::1, k3s's bridge CNI + host-local), its underlay IPv6 address
    # (Flannel's IPv6 VXLAN runs over it) and its flannel-v6.1 VTEP MAC (naming.vtep_mac6)
    pod_cidr6: str | None = None
    gateway_ip6: str | None = None
    underlay_ip6: str | None = None
    vtep_mac6: str | None = None


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
    # container name -> runtime status of each process container (emunet.state.podphase);
    # none for built-in servers, which run while the pod does
    containers: dict[str, dict] = field(default_factory=dict)
    ip6: str | None = None  # from its node's pod_cidr6 (dual-stack only)

    @property
    def key(self) -> tuple[str, str]:
        return self.pod.key

    def ips(self, families: tuple[str, ...]) -> list[str]:
        """status.podIPs: its addresses, the cluster's primary family first."""
        if self.ip6 is None:
            return [self.ip]
        return [self.ip6, self.ip] if families[0] == model.IPV6 else [self.ip, self.ip6]


@dataclass
class ServiceState:
    service: Service
    cluster_ip: str | None  # None for headless and ExternalName Services (and IPv6-only ones)
    # Dual-stack only: its IPv6 ClusterIP, spec.ipFamilies in its order and spec.ipFamily
    # Policy as the API server settled them (model.ipfamily); () / None: IPv4-only as today
    cluster_ip6: str | None = None
    ip_families: tuple[str, ...] = ()
    ip_family_policy: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.service.key

    @property
    def primary_family(self) -> str:
        return self.ip_families[0] if self.ip_families else model.IPV4

    def cluster_ips(self) -> list[str]:
        """spec.clusterIPs: in spec.ipFamilies' order ([] for headless/ExternalName)."""
        by = {model.IPV4: self.cluster_ip, model.IPV6: self.cluster_ip6}
        fams = self.ip_families or (model.IPV4,)
        return [ip for ip in (by[f] for f in fams) if ip]


@dataclass(frozen=True)
class Endpoint:
    """One backend of one Service port: the pod, its IP and the resolved target port.

    For a Service without a selector the backend comes from the user's Endpoints or slices
    (`EndpointSet`): `pod` is its targetRef (None: none given), `node` its nodeName (or the
    node whose pod subnet or address holds the IP; None: no node), `hostname` its DNS name."""

    ip: str
    port: int
    protocol: str
    pod: tuple[str, str] | None
    node: str | None
    ready: bool
    hostname: str | None = None


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
    # Endpoints and EndpointSlices written by the user (and the API server's own `kubernetes`
    # Endpoints), by (kind, namespace, name): the backends of Services without a selector
    endpoint_sets: dict[tuple[str, str, str], EndpointSet] = field(default_factory=dict)
    # kube-system/coredns's Corefile, parsed (emunet.config.corefile; its manifest in `others`);
    # None: k3s's default Corefile (model.coredns.k3s_default). The DNS responder runs it.
    coredns: CoreDNS | None = None
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
    svc_cursor6: int = field(default=0, repr=False, compare=False)  # state.families
    # host-local IPAM cursor per node for IPv6 (dual-stack only; like last_ip)
    last_ip6: dict[str, str] = field(default_factory=dict)
    # Node ports the config being planned names: an earlier Service's allocation must not take
    # one (the API server sees objects one by one; a file is one request here). Not serialised.
    reserved_node_ports: set[int] = field(default_factory=set, repr=False, compare=False)

    # ---- mutations (used by plan, apply and delete) ----------------------------------------

    def add_namespace(self, ns: Namespace) -> None:
        labels = {**ns.labels, NS_NAME_LABEL: ns.name}
        self.namespaces[ns.name] = dataclasses.replace(ns, labels=labels)

    def add_service(self, svc: Service) -> ServiceState:
        old = self.services.get(svc.key)
        fields = families.service_fields(self, svc, old)
        if svc.node_port_type:
            svc = self._allocate_node_ports(svc, old)
        st = ServiceState(service=svc, **fields)  # type: ignore[arg-type]
        owners = self._owners()
        for ip in (old.cluster_ip, old.cluster_ip6) if old is not None else ():
            if ip and owners.get(ip) == svc.key:
                del owners[ip]
        for ip in (st.cluster_ip, st.cluster_ip6):
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
            self._ip_owner = {ip: k for k, s in self.services.items()
                              for ip in (s.cluster_ip, s.cluster_ip6) if ip}
        return self._ip_owner

    owners = _owners  # for state.families

    def allocate_service_ip(self) -> str:
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

    def add_pod(self, pod: Pod, ipam: PodIpam | None = None) -> PodState:
        """Add (or re-apply) a pod: node and IP. Pass one `PodIpam` to a batch of calls (a
        Deployment's replicas, a config's pods): each call is then O(1), not O(pods)."""
        old = self.pods.get(pod.key)
        if old is not None:  # same pod re-applied: keep node and IP
            new = dataclasses.replace(old, pod=pod)
            self.pods[pod.key] = new
            return new
        ipam = ipam or PodIpam(self)
        node = self.node(pod.node_name) if pod.node_name else self._schedule(ipam)
        ip = self._allocate_pod_ip(node, ipam)
        ip6 = families.allocate_pod_ip6(self, node, ipam.used6_of(node.name)) \
            if node.pod_cidr6 else None
        st = PodState(pod=pod, node=node.name, ip=ip, mac=naming.mac_from_ip(ip),
                      netns=naming.pod_netns(pod.namespace, pod.name),
                      host_ifname=naming.host_ifname(ip), ip6=ip6)
        self.pods[pod.key] = st
        ipam.used[node.name].add(_ip_int(ip))
        return st

    def _schedule(self, ipam: PodIpam) -> NodeState:
        """Spread: the node with the fewest pods, first in config order on a tie."""
        if not self.nodes:
            raise StateError("the cluster has no nodes")
        return min(self.nodes, key=lambda n: (len(ipam.used.get(n.name, ())), n.index))

    def free_pod_slots(self, ipam: PodIpam | None = None) -> dict[str, int]:
        """Node -> how many more pods its pod range holds (hosts minus the gateway)."""
        ipam = ipam or PodIpam(self)
        return {n.name: pod_capacity(n) - len(ipam.used.get(n.name, ())) for n in self.nodes}

    def _allocate_pod_ip(self, node: NodeState, ipam: PodIpam) -> str:
        """host-local IPAM: the next free address after the last one handed out, wrapping.

        Like the CNI host-local plugin, a released address is not reused at once, so a
        recreated pod gets a new IP (the story's 'IPs shift like sand'). Addresses are
        integers here: a /16 pod range is not listed for every pod.
        """
        lo, size, gw = ipam.host_range(node)
        used = ipam.used.setdefault(node.name, set())
        last = self.last_ip.get(node.name)
        start = 0
        if last is not None:
            off = _ip_int(last) - lo
            start = off + 1 if 0 <= off < size else 0
        for i in range(size):
            cand = lo + (start + i) % size
            if cand != gw and cand not in used:
                ip = socket.inet_ntoa(cand.to_bytes(4, "big"))
                self.last_ip[node.name] = ip
                return ip
        raise StateError(f"node {node.name}: pod subnet {node.pod_cidr} is full")

    def remove_pod(self, key: tuple[str, str]) -> PodState | None:
        return self.pods.pop(key, None)

    def remove_service(self, key: tuple[str, str]) -> ServiceState | None:
        gone = self.services.pop(key, None)
        if gone is not None and self._ip_owner is not None:
            for ip in (gone.cluster_ip, gone.cluster_ip6):
                if ip:
                    self._ip_owner.pop(ip, None)
        return gone

    def stamp(self, now: float) -> None:
        """Before a publish: the next generation, and a creation time for each new object (the
        ones gone are forgotten, so a re-created object is a new one, with a new uid)."""
        self.generation += 1
        keys = object_keys(self)
        self.created = {k: self.created.get(k, now) for k in keys}
        self.manifests = {k: v for k, v in self.manifests.items() if k in self.created}

    def copy(self) -> ClusterState:
        """A copy to change all or nothing (emunet.cluster.apply): every table (dict, list,
        set) is copied, and so is every mutable record in one (NodeState, PodState,
        ServiceState: their fields are replaced, never changed inside); the frozen model
        objects are shared. A JSON round trip did this in 0.2 s at 2,000 pods."""
        new = copy.copy(self)
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, dict):
                v = {k: copy.copy(x) if isinstance(x, _RECORDS) else x for k, x in v.items()}
            elif isinstance(v, list):
                v = [copy.copy(x) if isinstance(x, _RECORDS) else x for x in v]
            elif isinstance(v, set):
                v = set(v)
            setattr(new, f.name, v)
        for ps in new.pods.values():
            ps.containers = dict(ps.containers)
        return new

    def forget_derived(self) -> None:
        """Drop what is derived from the tables (a reader replaced some: emunet.state.follow)."""
        self._ip_owner = None

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
            if p.ip == ip or p.ip6 == ip:
                return p
        return None

    def selected_pods(self, svc: Service, index: PodIndex | None = None) -> list[PodState]:
        """The pods `svc`'s selector picks, in the state's order. `index` (`pod_index()`,
        built once for a loop over every Service) makes it a lookup instead of a scan of
        every pod: a reader planning 200 Services over 2,000 pods was 400,000 label checks."""
        if svc.selector is None:
            return []
        if index is not None:
            return index.select(svc.namespace, svc.selector)
        return [p for p in self.pods.values()
                if p.pod.namespace == svc.namespace
                and all(p.pod.labels.get(k) == v for k, v in svc.selector.items())]

    def pod_index(self) -> PodIndex:
        """A label index of the pods as they are now; stale after any change to `pods`."""
        return PodIndex(self)

    def endpoint_sets_of(self, svc: Service) -> list[EndpointSet]:
        """What a Service without a selector is backed by, as kube-proxy and CoreDNS read it:
        every EndpointSlice labelled with its name, and its Endpoints object (which the
        EndpointSlice mirroring controller copies into a slice). A Service with a selector has
        its controller's endpoints instead: a user's Endpoints of that name is overwritten."""
        if svc.selector is not None:
            return []
        ns, name = svc.namespace, svc.name
        out = [self.endpoint_sets[(ENDPOINTS, ns, name)]] if (
            ENDPOINTS, ns, name) in self.endpoint_sets else []
        types = self.cluster.families
        out += [s for k, s in sorted(self.endpoint_sets.items())
                if k[0] == SLICE and k[1] == ns and s.service == name
                and s.address_type in types]
        return out

    def node_of_ip(self, ip: str) -> str | None:
        """The node whose underlay address or pod subnet holds `ip` (None: neither)."""
        addr = ipaddress.ip_address(ip)
        for n in self.nodes:
            if ip in (n.underlay_ip, n.underlay_ip6):
                return n.name
            cidr = n.pod_cidr if addr.version == 4 else n.pod_cidr6
            if cidr is not None and addr in ipaddress.ip_network(cidr):
                return n.name
        return None

    def _manual_endpoints(self, svc: Service) -> dict[int, list[Endpoint]]:
        """The backends per Service port from its Endpoints/slices: an endpoint port serves
        the Service port of the same name and protocol (kube-proxy's match; the number is the
        backend's port, targetPort plays no part); an address listed twice counts once, ready
        if any listing says so."""
        sets = self.endpoint_sets_of(svc)
        out: dict[int, list[Endpoint]] = {}
        for i, sp in enumerate(svc.ports):
            found: dict[tuple[str, int], Endpoint] = {}
            for es in sets:
                for g in es.groups:
                    for p in g.ports:
                        if p.name != (sp.name or "") or p.protocol != sp.protocol \
                                or p.port is None:
                            continue
                        for a in g.addresses:
                            old = found.get((a.ip, p.port))
                            if old is not None and (old.ready or not a.ready):
                                continue
                            found[(a.ip, p.port)] = Endpoint(
                                a.ip, p.port, sp.protocol, a.target,
                                a.node_name or self.node_of_ip(a.ip), a.ready, a.hostname)
            out[i] = sorted(found.values(), key=lambda e: (_ip_key(e.ip), e.port))
        return out

    def endpoints(self, key: tuple[str, str],
                  index: PodIndex | None = None) -> dict[int, list[Endpoint]]:
        """Per Service port index: the backends, named targetPorts resolved per pod.

        As the EndpointSlice controller does, a pod that does not declare a named targetPort
        is not a backend for that port; unready pods are listed with ready=False. A Service
        without a selector: the user's Endpoints and EndpointSlices (`_manual_endpoints`).
        """
        svc = self.services[key].service
        if svc.selector is None:
            return self._manual_endpoints(svc)
        out: dict[int, list[Endpoint]] = {}
        pods = sorted(self.selected_pods(svc, index), key=lambda p: _ip_int(p.ip))
        fams = self.services[key].ip_families or (model.IPV4,)
        for i, sp in enumerate(svc.ports):
            eps = []
            for fam in fams:  # one slice per family (EndpointSlice controller), in its order
                for p in pods:
                    ip = p.ip if fam == model.IPV4 else p.ip6
                    port = resolve_target_port(p.pod, sp.target_port, sp.protocol)
                    if port is not None and ip is not None:
                        eps.append(Endpoint(ip, port, sp.protocol, p.key, p.node, p.ready))
            out[i] = eps
        return out


_RECORDS = (NodeState, PodState, ServiceState)  # mutable: copied by ClusterState.copy


class PodIndex:
    """The pods by namespace and by (namespace, label, value), each list in the state's order:
    a selector is answered from its rarest label's list, checked against the others."""

    def __init__(self, st: ClusterState) -> None:
        self.by_ns: dict[str, list[PodState]] = {}
        self.by_label: dict[tuple[str, str, str], list[PodState]] = {}
        self._st = st
        self._by_ip: dict[str, PodState] | None = None
        for p in st.pods.values():
            ns = p.pod.namespace
            self.by_ns.setdefault(ns, []).append(p)
            for k, v in p.pod.labels.items():
                self.by_label.setdefault((ns, k, v), []).append(p)

    @property
    def by_ip(self) -> dict[str, PodState]:
        """Address -> the first pod with it, as `pod_by_ip` answers (built on first use)."""
        if self._by_ip is None:
            self._by_ip = {}
            for p in self._st.pods.values():
                for ip in (p.ip, p.ip6):
                    if ip:
                        self._by_ip.setdefault(ip, p)
        return self._by_ip

    def select(self, namespace: str, selector: dict[str, str]) -> list[PodState]:
        if not selector:
            return list(self.by_ns.get(namespace, ()))
        lists = [self.by_label.get((namespace, k, v), []) for k, v in selector.items()]
        base = min(lists, key=len)
        return [p for p in base if all(p.pod.labels.get(k) == v for k, v in selector.items())]


class PodIpam:
    """The pod addresses in use per node (as integers), read from the state once for a batch
    of `add_pod` calls and kept in step by them."""

    def __init__(self, st: ClusterState) -> None:
        self.used: dict[str, set[int]] = {n.name: set() for n in st.nodes}
        for p in st.pods.values():
            self.used.setdefault(p.node, set()).add(_ip_int(p.ip))
        self._ranges: dict[str, tuple[int, int, int]] = {}
        self._st = st
        self._used6: dict[str, set[int]] | None = None

    def used6_of(self, node: str) -> set[int]:
        """The node's IPv6 pod addresses in use (built on first use: dual-stack only)."""
        if self._used6 is None:
            self._used6 = {}
            for p in self._st.pods.values():
                if p.ip6:
                    self._used6.setdefault(p.node, set()).add(families.ip6_int(p.ip6))
        return self._used6.setdefault(node, set())

    def host_range(self, node: NodeState) -> tuple[int, int, int]:
        r = self._ranges.get(node.name)
        if r is None:
            r = self._ranges[node.name] = _host_range(node)
        return r


def _ip_key(ip: str) -> tuple[int, int]:
    """Sort key: IPv4 addresses first, in numeric order, then IPv6 ones."""
    if ":" in ip:
        return (6, int(ipaddress.IPv6Address(ip)))
    return (4, _ip_int(ip))


def _ip_int(ip: str) -> int:
    """An IPv4 address as an integer (inet_aton: ipaddress's parser costs 5 µs a call)."""
    return int.from_bytes(socket.inet_aton(ip), "big")


def _host_range(node: NodeState) -> tuple[int, int, int]:
    """(first host, number of host addresses, gateway) of a node's pod range, as net.hosts()
    counts them (no network or broadcast address)."""
    net = ipaddress.IPv4Network(node.pod_cidr)
    lo, hi = int(net.network_address) + 1, int(net.broadcast_address) - 1
    if net.prefixlen >= 31:  # RFC 3021: every address is a host
        lo, hi = int(net.network_address), int(net.broadcast_address)
    return lo, max(0, hi - lo + 1), int(ipaddress.IPv4Address(node.gateway_ip))


def pod_capacity(node: NodeState) -> int:
    """How many pods a node's pod range holds: its hosts minus the gateway."""
    lo, size, gw = _host_range(node)
    return size - (1 if lo <= gw < lo + size else 0)


def object_keys(st: ClusterState) -> list[str]:
    """"<kind>/<namespace>/<name>" of every object the state holds (nodes: no namespace)."""
    keys = [f"Node//{n.name}" for n in st.nodes]
    keys += [f"Namespace//{n}" for n in st.namespaces]
    keys += [f"Pod/{ns}/{n}" for ns, n in st.pods]
    keys += [f"Service/{ns}/{n}" for ns, n in st.services]
    keys += [f"Deployment/{ns}/{n}" for ns, n in st.deployments]
    keys += [f"NetworkPolicy/{ns}/{n}" for ns, n in st.policies]
    keys += [f"CiliumNetworkPolicy/{ns}/{n}" for ns, n in st.cilium_policies]
    keys += [f"{kind}/{ns}/{n}" for kind, ns, n in st.endpoint_sets]
    if KUBE_SYSTEM in st.namespaces:  # k3s's CoreDNS ConfigMap is always there
        keys.append(f"ConfigMap/{KUBE_SYSTEM}/{CONFIGMAP}")
    return keys


def resolve_target_port(pod: Pod, target: int | str, protocol: str) -> int | None:
    """A Service targetPort on one pod: a number as is, a name via the pod's containerPorts."""
    if isinstance(target, int):
        return target
    for cp in pod.container_ports():
        if cp.name == target and cp.protocol == protocol:
            return cp.container_port
    return None

