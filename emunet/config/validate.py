"""Checks that span several objects: references, address plans and name collisions.

Runs after every document parsed cleanly on its own. Checks that a namespace is declared
before use, a pod's nodeName names a node, pods fit in their node's pod range, network
namespace names do not collide, and Services are consistent with the service range, kube-dns
and the pods they select (named targetPorts resolve the way the EndpointSlice controller does).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

from emunet import model, naming
from emunet.config import cilium, svcfamily
from emunet.config import cluster as cl
from emunet.config.documents import Parsed
from emunet.config.errors import Collector
from emunet.config.fields import at

BUILTIN_NAMESPACES = ("default", "kube-system")
NETNS_NAME_MAX = 255  # a netns is a file under /run/netns: NAME_MAX


def cross_check(col: Collector, parsed: Parsed, spec: model.ClusterSpec, base_mode: bool,
                known_namespaces: Iterable[str] | None) -> None:
    if known_namespaces is not None or not base_mode:
        declared = {*BUILTIN_NAMESPACES, *(known_namespaces or ()),
                    *(ns.name for ns, _ in parsed.namespaces)}
        for obj, doc in [*parsed.pods, *parsed.services, *parsed.deployments, *parsed.others,
                         *parsed.policies, *parsed.endpoints]:
            if obj.namespace is not None and obj.namespace not in declared:
                line, path = at(doc, "metadata", "namespace")
                col.error(line, path, f"namespace {obj.namespace!r} is not declared",
                          f"add a document: apiVersion: v1, kind: Namespace, metadata.name: "
                          f"{obj.namespace}")
    _check_reserved(col, parsed)
    _check_nodes_of_pods(col, parsed, spec, base_mode)
    _check_netns(col, parsed, spec, base_mode)
    _check_services(col, parsed, spec)
    cilium.check_proxy_ports(col, parsed.pods)


def _check_reserved(col: Collector, parsed: Parsed) -> None:
    """default/kubernetes (its Service, Endpoints and slices) is the API server's own, kept by
    its endpoint reconciler (emunet.state.plan), as every API server does."""
    for obj, doc in [*parsed.services, *parsed.endpoints]:
        if obj.namespace == "default" and "kubernetes" in (
                obj.name, getattr(obj, "service", None)):
            line, path = at(doc, "metadata", "name")
            col.error(line, path, "default/kubernetes is the API server's own Service; its "
                      "endpoints are the API server's address", "choose another name")


def _check_nodes_of_pods(col: Collector, parsed: Parsed, spec: model.ClusterSpec,
                         base_mode: bool) -> None:
    """nodeName must exist; a node's pod range holds its hosts minus the gateway (.1)."""
    capacity: dict[str, int] = {}
    cluster_net = IPv4Network(spec.cluster_cidr)
    for i, node in enumerate(spec.nodes, start=1):
        net = IPv4Network(node.pod_cidr) if node.pod_cidr else cl.default_pod_cidr(cluster_net, i)
        capacity[node.name] = net.num_addresses - 3 if net is not None else 0
    used = dict.fromkeys(capacity, 0)
    if spec.nodes and not base_mode:
        used[spec.nodes[0].name] += 1  # the CoreDNS pod state.py places on the first node
    unpinned = []
    for pod, doc in parsed.pods:
        if pod.node_name is None:
            unpinned.append((pod, doc))
            continue
        line, path = at(doc, "spec", "nodeName")
        if pod.node_name not in capacity:
            close = difflib.get_close_matches(pod.node_name, list(capacity), n=1)
            col.error(line, path, f"no node named {pod.node_name!r}",
                      f'did you mean "{close[0]}"?' if close else
                      "nodes: " + ", ".join(capacity) if capacity else "")
            continue
        used[pod.node_name] += 1
        if used[pod.node_name] > capacity[pod.node_name]:
            col.error(line, path, f"node {pod.node_name} is full: its pod range holds "
                      f"{capacity[pod.node_name]} pods (hosts minus the gateway)",
                      "use a larger podCIDR or place the pod on another node")
    free = sum(capacity.values()) - sum(used.values())
    for n, (_, doc) in enumerate(unpinned, start=1):
        if n > free:
            line, path = at(doc, "metadata", "name")
            col.error(line, path, "no room left for this pod on any node",
                      "add nodes or use larger pod ranges")
            break
    # A Deployment's replicas need addresses as pods do; checked here, before planning, so a
    # replica count no pod range can hold is refused at its line at once (with a running
    # cluster as base the pods it already has are not known here: the controller reports
    # those as FailedCreate).
    free = max(0, free - len(unpinned))
    for d, doc in parsed.deployments:
        if d.replicas > free:
            line, path = at(doc, "spec", "replicas")
            col.error(line, path, f"{d.replicas} replicas do not fit: the nodes' pod ranges "
                      f"have room for {free} more pods", "lower spec.replicas, add nodes or "
                      "give them larger podCIDRs")
        free = max(0, free - d.replicas)


def _check_netns(col: Collector, parsed: Parsed, spec: model.ClusterSpec,
                 base_mode: bool) -> None:
    """Every node and pod gets a netns named prefix-<node> / prefix-<ns>-<pod> (naming.py);
    the dash makes ("a-b", "c") and ("a", "b-c") collide, and names are files (NAME_MAX)."""
    owners: dict[str, str] = {}
    if not base_mode:
        owners[naming.underlay_netns()] = "the underlay"
        owners[naming.outside_netns()] = "the outside client"
        for node in spec.nodes:
            owners.setdefault(naming.node_netns(node.name), f"node {node.name}")
    for pod, doc in parsed.pods:
        name = naming.pod_netns(pod.namespace, pod.name)
        line, path = at(doc, "metadata", "name")
        if len(name) > NETNS_NAME_MAX:
            col.error(line, path, f"network namespace name {name[:40]}... is longer than "
                      f"{NETNS_NAME_MAX} characters", "use a shorter pod name")
        elif name in owners:
            col.error(line, path, f"pod {pod.namespace}/{pod.name} would get network namespace "
                      f"{name!r}, already {owners[name]}'s",
                      "rename the pod (names are joined with '-')")
        else:
            owners[name] = f"pod {pod.namespace}/{pod.name}"


def _check_services(col: Collector, parsed: Parsed, spec: model.ClusterSpec) -> None:
    service_net = IPv4Network(spec.service_cidr)
    ips: dict[str, str] = {}
    node_ports: dict[tuple[int, str], str] = {}
    auto = []
    by_label = _PodsByLabel(parsed)
    for svc, doc in parsed.services:
        who = f"{svc.namespace}/{svc.name}"
        if svc.key == ("kube-system", "kube-dns"):
            line, path = at(doc, "metadata", "name")
            col.error(line, path, "kube-system/kube-dns is reserved",
                      "emunet creates the kube-dns Service for its CoreDNS pod itself")
        svcfamily.check(col, doc, svc, spec, ips)
        if svc.cluster_ip is None and svc.type != "ExternalName":
            auto.append(doc)
        for i, sp in enumerate(svc.ports):  # a node port is the whole cluster's, as on a node
            if sp.node_port is None:
                continue
            line, path = at(doc, "spec", "ports", i, "nodePort")
            first = node_ports.setdefault((sp.node_port, sp.protocol), who)
            if first != who:
                col.error(line, path, f"nodePort {sp.node_port}/{sp.protocol} is already "
                          f"Service {first}'s", "pick another or leave nodePort out")
        if svc.selector is None:
            continue
        selected = by_label.select(svc.namespace, svc.selector)
        if not selected:
            sel = ",".join(f"{k}={v}" for k, v in svc.selector.items())
            col.warn(at(doc, "spec", "selector")[0], f"Service {who}: selector {sel} matches no "
                     f"pod in {svc.namespace} in this file (no endpoints)")
            continue
        for i, sp in enumerate(svc.ports):
            if isinstance(sp.target_port, int):
                continue
            ports = [cp for p in selected for cp in p.container_ports()
                     if cp.name == sp.target_port]
            if not any(cp.protocol == sp.protocol for cp in ports):
                line, path = at(doc, "spec", "ports", i, "targetPort")
                other = f" (it is declared for {ports[0].protocol})" if ports else ""
                col.error(line, path, f"no container of the {len(selected)} selected pod(s) "
                          f"declares a {sp.protocol} port named {sp.target_port!r}{other}",
                          "name a containerPort so, or use the port number")
    free = _free_cluster_ips(service_net, {ip for ip in ips if ":" not in ip} | {
        spec.cluster_dns}, len(auto))
    if len(auto) > free:
        line, path = at(auto[free], "metadata", "name")
        col.error(line, path, f"serviceCIDR {service_net} has no ClusterIP left for this "
                  f"Service ({free} are allocatable)", "use a larger serviceCIDR")


def _free_cluster_ips(net: IPv4Network, taken: set[str], need: int) -> int:
    """How many ClusterIPs state.py could still allocate, counted up to `need` only: it takes
    them above .10 (.1 is the `kubernetes` Service's, .10 DNS's). Counting by integer and
    stopping early keeps every apply (each API write is one) from walking and formatting a
    whole /16 (0.8 s a write, measured by bench/api.py)."""
    used = {int(IPv4Address(ip)) for ip in taken if ip}
    free = 0
    for h in range(int(net.network_address) + 11, int(net.broadcast_address)):
        if free >= need:
            break
        free += h not in used
    return free


class _PodsByLabel:
    """The pods (and the pods Deployments will run, as their templates) of a config,
    indexed by (namespace, label key, value): a Service's selection then scans only the pods
    carrying one of its pairs, not every pod once per Service."""

    def __init__(self, parsed: Parsed) -> None:
        # A Deployment's replicas carry its template's labels (and the namespace it is in).
        templates = [dataclasses.replace(d.template, namespace=d.namespace)
                     for d, _ in parsed.deployments if d.replicas > 0]
        self.pods = [*(p for p, _ in parsed.pods), *templates]
        self.index: dict[tuple[str, str, str], list[model.Pod]] = {}
        for p in self.pods:
            for k, v in p.labels.items():
                self.index.setdefault((p.namespace, k, v), []).append(p)

    def select(self, namespace: str, selector: dict[str, str]) -> list[model.Pod]:
        """The pods of `namespace` matching every pair of `selector` (all of them for an
        empty one), in config order."""
        lists = [self.index.get((namespace, k, v), []) for k, v in selector.items()]
        if not lists:
            return [p for p in self.pods if p.namespace == namespace]
        return [p for p in min(lists, key=len)
                if all(p.labels.get(k) == v for k, v in selector.items())]
