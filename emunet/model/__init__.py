"""The desired-state model: frozen, validated objects built from a config file.

These are what `emunet.config` produces and what `emunet.state` consumes. They mirror the
Kubernetes API objects emunet understands (only the fields it uses) and the emunet `Cluster`
document. Every object carries its source location so later stages can still point a user at the
right line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# k3s + Flannel defaults (DESIGN.md section 1).
DEFAULT_CLUSTER_CIDR = "10.42.0.0/16"
DEFAULT_SERVICE_CIDR = "10.43.0.0/16"
DEFAULT_CLUSTER_DNS = "10.43.0.10"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
DEFAULT_VXLAN_VNI = 1
DEFAULT_VXLAN_PORT = 8472  # Linux/Flannel default, not IANA's 4789 (RFC 7348 section 5)
DEFAULT_UNDERLAY_CIDR = "192.168.1.0/24"
# A dual-stack cluster's underlay IPv6 range when the Cluster document names none: a ULA
# (RFC 4193, fd00::/8) that exists only inside emunet's namespaces (node i: <range>::<10+i>,
# as the IPv4 underlay). IPv4-only clusters have no underlay IPv6 at all.
DEFAULT_UNDERLAY_CIDR6 = "fd00:e3e7::/64"
IPV4, IPV6 = "IPv4", "IPv6"  # core/v1 IPFamily values
# kube-controller-manager --node-cidr-mask-size-ipv6 default (Flannel: a /64 per node)
NODE_CIDR_MASK_IPV6 = 64
DEFAULT_MTU = 1450  # 1500 underlay minus 50 bytes of VXLAN overhead (RFC 7348 section 4.3)
DEFAULT_DNS_TTL = 5  # CoreDNS kubernetes plugin default TTL
DEFAULT_CONNTRACK_MAX = 65536  # per node agent; nf_conntrack_max's classic default
# spec.busyPoll: µs a node agent keeps polling after traffic before it sleeps (as Linux's
# net.core.busy_poll). Measured on the 2-core VM: request/response +25-35%, ping -10%,
# bulk throughput unchanged; an idle agent sleeps, so an idle cluster costs no CPU.
DEFAULT_BUSY_POLL_US = 300
DEFAULT_AFFINITY_TIMEOUT = 10800  # sessionAffinityConfig.clientIP.timeoutSeconds (3 hours)
NODE_PORT_RANGE = (30000, 32767)  # kube-apiserver --service-node-port-range default
DEFAULT_API_PORT = 6443  # kube-apiserver --secure-port default; emunet.api binds 127.0.0.1
# The API server's port on the first node's underlay address, what pods reach through the
# `kubernetes` Service (k3s: <server node IP>:6443), whatever spec.apiServer.port says
API_ENDPOINT_PORT = 6443


@dataclass(frozen=True)
class Loc:
    """Where an object (or field) was written: file name and 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


DISTRIBUTIONS = ("uniform", "normal")  # of the jitter, netem's names (tc-netem(8))


@dataclass(frozen=True)
class Impairment:
    """A node's underlay link impairment (emunet.host.tc): delay, jitter and loss applied by the
    node's agent (emunet.datapath.netem, netem semantics), the rate by tc tbf on its eth0."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    rate_bps: int = 0  # 0: no rate limit
    distribution: str = "uniform"  # of the jitter: uniform | normal (netem's names)

    @property
    def active(self) -> bool:
        return bool(self.delay_ms or self.loss_pct or self.rate_bps)


@dataclass(frozen=True)
class NodeSpec:
    name: str
    pod_cidr: str | None = None  # None: the index-th /24 of the cluster CIDR
    underlay_ip: str | None = None  # None: assigned from the underlay CIDR
    loc: Loc | None = None
    # "emunet": the Python agent forwards; "kernel": Linux forwards, built as Flannel +
    # kube-proxy (nftables mode) build a k3s node (emunet.host.kernelnode). Interop and baseline.
    datapath: str = "emunet"
    impairment: Impairment | None = None  # Cluster document: nodes[].impairment
    # dual-stack only (None otherwise): the IPv6 half of nodes[].podCIDR ("<v4>,<v6>", k3s's
    # form; None: the index-th /64 of the IPv6 cluster CIDR) and nodes[].underlayIP6
    pod_cidr6: str | None = None
    underlay_ip6: str | None = None


@dataclass(frozen=True)
class ClusterSpec:
    name: str = "emunet"
    nodes: tuple[NodeSpec, ...] = ()
    cluster_cidr: str = DEFAULT_CLUSTER_CIDR
    service_cidr: str = DEFAULT_SERVICE_CIDR
    cluster_dns: str = DEFAULT_CLUSTER_DNS
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    vxlan_vni: int = DEFAULT_VXLAN_VNI
    vxlan_port: int = DEFAULT_VXLAN_PORT
    underlay_cidr: str = DEFAULT_UNDERLAY_CIDR
    mtu: int = DEFAULT_MTU
    dns_ttl: int = DEFAULT_DNS_TTL
    conntrack_max: int = DEFAULT_CONNTRACK_MAX  # spec.conntrack.max: tracked connections
    # spec.offloads: TSO/checksum offloads stay on in emunet pods' veths; agents carry TCP
    # super-frames whole and segment them for the wire (emunet.datapath.gso)
    offloads: bool = True
    busy_poll_us: int = DEFAULT_BUSY_POLL_US
    dns_upstreams: tuple[str, ...] = ()
    loc: Loc | None = None
    # spec.apiServer.port: the Kubernetes API server (emunet.api) on 127.0.0.1; 0: any free
    # port, chosen by `up` (the kubeconfig and the state record the one chosen)
    api_port: int = DEFAULT_API_PORT
    # Dual-stack (issue 19), k3s's `--cluster-cidr <v4>,<v6>` / `--service-cidr <v4>,<v6>`:
    # the IPv6 ranges (None: IPv4-only, the default), the families in the order the CIDRs were
    # written (the first is the primary, as in k3s and kube-apiserver) and the underlay's IPv6
    # range (None unless dual-stack). cluster_cidr/service_cidr stay the IPv4 ones.
    cluster_cidr6: str | None = None
    service_cidr6: str | None = None
    families: tuple[str, ...] = (IPV4,)
    underlay_cidr6: str | None = None
    # kube-dns's IPv6 ClusterIP (dual-stack: clusterDNS's IPv6 entry, by default the IPv6
    # service range's 10th address as k3s renders it; None: kube-dns SingleStack)
    cluster_dns6: str | None = None

    @property
    def dual_stack(self) -> bool:
        return len(self.families) == 2



@dataclass(frozen=True)
class Namespace:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    loc: Loc | None = None


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    protocol: str = "TCP"  # TCP | UDP | SCTP
    name: str | None = None


@dataclass(frozen=True)
class Probe:
    """A container probe (core/v1 Probe); defaults are the API server's."""

    kind: str  # "tcpSocket" | "httpGet" | "exec"
    port: int | str | None = None  # tcpSocket/httpGet: a number or a containerPort name
    path: str = "/"  # httpGet
    scheme: str = "HTTP"  # httpGet
    command: tuple[str, ...] = ()  # exec
    initial_delay: int = 0  # initialDelaySeconds
    period: int = 10  # periodSeconds
    timeout: int = 1  # timeoutSeconds
    success_threshold: int = 1  # successThreshold (must be 1 for liveness)
    failure_threshold: int = 3  # failureThreshold


@dataclass(frozen=True)
class Container:
    name: str
    image: str = ""
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    readiness_probe: Probe | None = None
    # securityContext.runAsUser/runAsGroup (the container's, else the pod's); None: emunet's
    # default, nobody/nogroup 65534 (there is no image whose USER could say otherwise)
    run_as_user: int | None = None
    run_as_group: int | None = None
    liveness_probe: Probe | None = None
    # until it succeeds the other probes are off; failing it restarts the container (kubelet)
    startup_probe: Probe | None = None
    # stdin: the runtime keeps the container's stdin open (a pipe, or the pty with tty) for
    # `kubectl attach`; stdinOnce: closed when the first attached client leaves (core/v1)
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    containers: tuple[Container, ...] = ()
    node_name: str | None = None  # spec.nodeName; None: emunet schedules it
    hostname: str | None = None  # spec.hostname (headless DNS)
    subdomain: str | None = None  # spec.subdomain (headless DNS)
    owner: str | None = None  # "<deployment>-<pod-template-hash>": the ReplicaSet that made it
    share_process_namespace: bool = False  # spec.shareProcessNamespace (emunet.host.sandbox)
    loc: Loc | None = None
    restart_policy: str = "Always"  # spec.restartPolicy: Always | OnFailure | Never

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def container_ports(self) -> tuple[ContainerPort, ...]:
        return tuple(p for c in self.containers for p in c.ports)


@dataclass(frozen=True)
class ServicePort:
    port: int
    target_port: int | str  # a number, or the name of a containerPort
    protocol: str = "TCP"
    name: str | None = None
    node_port: int | None = None


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    ports: tuple[ServicePort, ...] = ()
    selector: dict[str, str] | None = None  # None: no selector (endpoints managed elsewhere)
    type: str = "ClusterIP"
    cluster_ip: str | None = None  # None: allocate; "None": headless
    external_name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    loc: Loc | None = None
    # spec.sessionAffinity "ClientIP": a client IP keeps its backend for affinity_timeout
    # seconds after its last new connection (sessionAffinityConfig.clientIP.timeoutSeconds)
    session_affinity: str = "None"
    affinity_timeout: int = DEFAULT_AFFINITY_TIMEOUT
    # spec.clusterIPs, spec.ipFamilies, spec.ipFamilyPolicy as written (empty/None: not
    # given); `cluster_ip` is spec.clusterIP (may be IPv6 now). emunet.state resolves them.
    cluster_ips: tuple[str, ...] = ()
    ip_families: tuple[str, ...] = ()
    ip_family_policy: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def node_port_type(self) -> bool:
        """NodePort, or LoadBalancer (NodePort + ClusterIP here: no external IP allocator)."""
        return self.type in ("NodePort", "LoadBalancer")

    @property
    def headless(self) -> bool:
        return self.cluster_ip == "None"


@dataclass(frozen=True)
class Deployment:
    """apps/v1 Deployment: `template` is a Pod whose name and namespace are unused."""

    namespace: str
    name: str
    replicas: int = 1
    selector: dict[str, str] = field(default_factory=dict)  # matchLabels
    template: Pod = field(default_factory=lambda: Pod("", ""))
    strategy: str = "RollingUpdate"  # | "Recreate"
    max_surge: int | str = "25%"  # an absolute number or a percentage (IntOrString)
    max_unavailable: int | str = "25%"
    labels: dict[str, str] = field(default_factory=dict)
    loc: Loc | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True)
class Manifest:
    """A document emunet keeps but does not (yet) act on, e.g. a NetworkPolicy.

    Kept whole so that later stages (policy) can use it and `up`/`status` can warn about it.
    """

    api_version: str
    kind: str
    namespace: str | None
    name: str
    body: dict
    loc: Loc | None = None


@dataclass(frozen=True)
class Config:
    """One parsed config file: the cluster and the Kubernetes objects in it."""

    cluster: ClusterSpec
    namespaces: tuple[Namespace, ...] = ()
    pods: tuple[Pod, ...] = ()
    services: tuple[Service, ...] = ()
    deployments: tuple[Deployment, ...] = ()
    network_policies: tuple = ()  # emunet.model.netpol.NetworkPolicy objects
    cilium_policies: tuple = ()  # emunet.model.cilium.CiliumPolicy objects (manifests in others)
    others: tuple[Manifest, ...] = ()  # kinds emunet does not implement yet: warned about
    endpoint_sets: tuple = ()  # emunet.model.endpoints.EndpointSet: user Endpoints/slices
    # kube-system/coredns's Corefile as emunet.model.coredns.CoreDNS (manifest in others);
    # None: the file gives none
    coredns: object = None
    warnings: tuple[str, ...] = ()
    source: str = ""
