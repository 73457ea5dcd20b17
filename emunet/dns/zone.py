"""The DNS view of a ClusterState: what CoreDNS's kubernetes plugin reads from the API server.

`Zone.from_state` flattens Services, their ready endpoints (EndpointSlice semantics) and the
reverse index (ClusterIP or endpoint IP -> names) into plain lookups, so the resolver is
dictionary access only. Built once per state (re)load. Dual-stack (issue 19): a Service's
ClusterIPs of both families (`ServiceRec.cluster_ips`, spec.clusterIPs' order), endpoints of
every family the Service's slices have, IPv6 endpoint names dashed as CoreDNS writes them
(`dashed`), the reverse index keyed by canonical IPv6 text too.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from emunet.model.coredns import RESOLV_CONF, CoreDNS, k3s_default
from emunet.state.cluster import KUBE_SYSTEM, ClusterState, PodIndex, ServiceState

CLUSTER_IP, HEADLESS, EXTERNAL = "ClusterIP", "Headless", "ExternalName"
NO_PORT = -1  # CoreDNS's marker for an endpoint of a Service without ports (no SRV record)


@dataclass(frozen=True)
class PortRec:
    name: str  # "" for an unnamed port
    protocol: str  # lowercased: tcp | udp | sctp
    port: int


@dataclass(frozen=True)
class EndpointRec:
    ip: str
    hostname: str  # spec.hostname when spec.subdomain names the Service, else the dashed IP
    ports: tuple[PortRec, ...]


@dataclass(frozen=True)
class ServiceRec:
    namespace: str
    name: str
    kind: str  # CLUSTER_IP | HEADLESS | EXTERNAL
    cluster_ip: str | None
    ports: tuple[PortRec, ...]
    external_name: str | None
    endpoints: tuple[EndpointRec, ...]  # ready endpoints only
    # spec.clusterIPs (both families of a dual-stack Service, primary first); () when the
    # Service has only `cluster_ip` (an IPv4-only cluster), none for headless/ExternalName
    cluster_ips: tuple[str, ...] = ()

    def addresses(self) -> tuple[str, ...]:
        """Its ClusterIPs, as CoreDNS's findServices walks svc.ClusterIPs."""
        return self.cluster_ips or ((self.cluster_ip,) if self.cluster_ip else ())


@dataclass(frozen=True)
class Zone:
    domain: str  # lowercased, no trailing dot
    ttl: int
    serial: int
    dns_ip: str  # the kube-dns ClusterIP, answered for ns.dns.<domain>
    upstreams: tuple[str, ...]
    namespaces: frozenset[str]
    services: dict[tuple[str, str], ServiceRec]
    ptr: dict[str, tuple[str, ...]]  # IP (canonical text, IPv4 or IPv6) -> PTR targets
    # where we are authoritative for PTR (the service and cluster ranges, both families)
    reverse_nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    client_nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default=())
    # (name, IP) of the apex NS records and their glue, CoreDNS's nsAddrs (ns.go)
    nameservers: tuple[tuple[str, str], ...] = ()
    # the Corefile's kubernetes plugin settings (kube-system/coredns, else k3s's default)
    settings: CoreDNS = field(default_factory=CoreDNS)
    pod_ips: frozenset[tuple[str, str]] = frozenset()  # (namespace, IP): `pods verified`

    @classmethod
    def from_state(cls, st: ClusterState, serial: int = 1) -> Zone:
        c = st.cluster
        cfg = st.coredns or k3s_default(c)
        forward = [u for to in cfg.forward
                   for u in (c.dns_upstreams if to == RESOLV_CONF else (to,))]
        domain = next((z for z in cfg.zones if not z.endswith(".arpa")),
                      c.cluster_domain.lower().rstrip("."))
        index = st.pod_index()  # one pass over the pods, not one per Service
        services = {key: _service_rec(st, ss, cfg.endpoint_pod_names, index)
                    for key, ss in st.services.items()}
        namespaces = frozenset(
            {n.lower() for n in st.namespaces} | {k[0].lower() for k in st.services})
        services = {(k[0].lower(), k[1].lower()): v for k, v in services.items()}
        nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
            ipaddress.IPv4Network(c.service_cidr), ipaddress.IPv4Network(c.cluster_cidr))
        nets += tuple(ipaddress.IPv6Network(n) for n in (c.service_cidr6, c.cluster_cidr6) if n)
        dns = st.services.get((KUBE_SYSTEM, "kube-dns"))
        dns_ip = dns.cluster_ip if dns and dns.cluster_ip else c.cluster_dns
        return cls(
            domain=domain, ttl=cfg.ttl, serial=serial,
            dns_ip=dns_ip,
            upstreams=tuple(dict.fromkeys(forward)), namespaces=namespaces, services=services,
            ptr=_reverse_index(services.values(), domain), reverse_nets=nets,
            client_nets=(*nets, ipaddress.IPv4Network("127.0.0.0/8"),
                         *((ipaddress.IPv6Network("::1/128"),) if c.dual_stack else ())),
            nameservers=_nameservers(st, services.values(), domain, dns_ip),
            # `pods verified`: CoreDNS's pod index holds status.podIP, the primary address only
            settings=cfg, pod_ips=frozenset(
                (p.pod.namespace.lower(), p.ips(c.families)[0]) for p in st.pods.values()
                if p.ip and not p.terminating) if cfg.pods == "verified" else frozenset(),
        )

    def client_allowed(self, ip: str) -> bool:
        """Only pods, Services and loopback may ask (CoreDNS is not an open resolver)."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:
            return self.client_allowed(str(addr.ipv4_mapped))
        if addr.version == 6 and addr.is_loopback:
            return True
        return any(addr.version == n.version and addr in n for n in self.client_nets)


def _service_rec(st: ClusterState, ss: ServiceState, pod_names: bool = False,
                 index: PodIndex | None = None) -> ServiceRec:
    svc = ss.service
    ports = tuple(PortRec(p.name or "", p.protocol.lower(), p.port) for p in svc.ports)
    if svc.type == "ExternalName":
        return ServiceRec(svc.namespace, svc.name, EXTERNAL, None, ports,
                          (svc.external_name or "").lower().rstrip("."), ())
    ips = tuple(ss.cluster_ips()) if ss.cluster_ip6 else ()
    kind = HEADLESS if not (ss.cluster_ip or ips) else CLUSTER_IP
    return ServiceRec(svc.namespace, svc.name, kind, ss.cluster_ip or (ips[0] if ips else None),
                      ports, None, _endpoints(st, ss, pod_names, index), ips)


def _endpoints(st: ClusterState, ss: ServiceState, pod_names: bool = False,
               index: PodIndex | None = None) -> tuple[EndpointRec, ...]:
    """Ready endpoints grouped by address, with the ports (named as the Service's) each serves.

    Only ready addresses are published, as CoreDNS reads EndpointSlices (conditions.ready).
    The hostname follows the EndpointSlice controller: a pod's spec.hostname is used only when
    its spec.subdomain equals the Service's name; a user's Endpoints/EndpointSlice address
    gives its own `hostname`; otherwise CoreDNS names the endpoint by its IP with dashes
    (kubernetes plugin, endpointHostname), or by the pod's name with the Corefile's
    `endpoint_pod_names` (the endpoint's targetRef name).
    """
    svc = ss.service
    by_ip: dict[str, list[PortRec]] = {}
    names: dict[str, str] = {}  # a user endpoint's own hostname (Endpoints/slice `hostname`)
    if not svc.ports:  # headless without ports: addresses only, of each family it has
        pods = sorted(st.selected_pods(svc, index), key=lambda p: ipaddress.IPv4Address(p.ip))
        for fam in ss.ip_families or ("IPv4",):
            for p in pods:
                ip = p.ip if fam == "IPv4" else p.ip6
                if p.ready and ip:
                    by_ip[ip] = [PortRec("", "", NO_PORT)]
        for es in st.endpoint_sets_of(svc):  # selector-less: every ready address
            for g in es.groups:
                for a in g.addresses:
                    if a.ready:
                        by_ip.setdefault(a.ip, [PortRec("", "", NO_PORT)])
                        if a.hostname:
                            names.setdefault(a.ip, a.hostname)
    else:
        for i, eps in st.endpoints(ss.key, index).items():
            sp = svc.ports[i]
            for ep in eps:
                if ep.ready:
                    by_ip.setdefault(ep.ip, []).append(
                        PortRec(sp.name or "", sp.protocol.lower(), ep.port))
                    if ep.hostname:
                        names.setdefault(ep.ip, ep.hostname)
    out = []
    for ip, ports in by_ip.items():
        hostname = names.get(ip, dashed(ip))
        # the index's address map: a scan per address made a 2,000-pod zone take 0.36 s
        pod = None if svc.selector is None else \
            index.by_ip.get(ip) if index is not None else st.pod_by_ip(ip)
        if pod is not None and pod.pod.hostname and pod.pod.subdomain == svc.name:
            hostname = pod.pod.hostname.lower()
        elif pod is not None and pod_names:
            hostname = pod.pod.name
        out.append(EndpointRec(ip, hostname.lower(), tuple(ports)))
    return tuple(out)


def dashed(ip: str) -> str:
    """An endpoint's DNS label from its address, as CoreDNS's endpointHostname writes it:
    10.42.1.5 -> 10-42-1-5; 2001:cafe:42:1::5 -> 2001-cafe-42-1--5 (the compressed text, ':'
    to '-'); a trailing '-' (an address ending in '::') gets a '0' so the label is valid."""
    if "." in ip:
        return ip.replace(".", "-")
    out = ip.replace(":", "-")
    return out + "0" if out.endswith("-") else out


def _nameservers(st: ClusterState, services, domain: str,
                 dns_ip: str) -> tuple[tuple[str, str], ...]:
    """CoreDNS nsAddrs (plugin/kubernetes/ns.go): the Services whose endpoints include the
    responder's own address (the coredns pod's IP), each named <svc>.<ns>.svc.<zone> with its
    ClusterIP (a headless one: each endpoint's name and IP); with none, ns.dns.<zone> and the
    local address. emunet's responder is the coredns pod (emunet.state.plan)."""
    local = sorted(p.ip for p in st.pods.values() if p.pod.namespace == KUBE_SYSTEM
                   and p.pod.labels.get("k8s-app") == "kube-dns" and p.ip)
    out: list[tuple[str, str]] = []
    for s in sorted(services, key=lambda s: (s.namespace, s.name)):
        if not any(ep.ip in local for ep in s.endpoints):
            continue
        name = f"{s.name}.{s.namespace}.svc.{domain}".lower()
        if s.addresses():
            out += [(name, ip) for ip in s.addresses()]
        else:
            out += [(f"{ep.hostname}.{name}", ep.ip) for ep in s.endpoints]
    if not out:
        out = [(f"ns.dns.{domain}", ip) for ip in local or [dns_ip]]
    return tuple(out)


def _reverse_index(services, domain: str) -> dict[str, tuple[str, ...]]:
    """CoreDNS serviceRecordForIP: a ClusterIP maps to its Service name alone; otherwise an
    IP maps to one endpoint name per Service it backs."""
    ptr: dict[str, list[str]] = {}
    cluster_ips: dict[str, str] = {}
    for s in services:
        for ip in s.addresses():
            cluster_ips.setdefault(ip, f"{s.name}.{s.namespace}.svc.{domain}".lower())
    for s in services:
        for ep in s.endpoints:
            name = f"{ep.hostname}.{s.name}.{s.namespace}.svc.{domain}".lower()
            if name not in ptr.setdefault(ep.ip, []):
                ptr[ep.ip].append(name)
    out = {ip: tuple(names) for ip, names in ptr.items()}
    out.update({ip: (name,) for ip, name in cluster_ips.items()})
    return out
