"""The state as core/v1 and discovery/v1 objects: Namespace, Node, Pod, Service, Endpoints,
EndpointSlice. Pure: one ClusterState in, JSON-able dicts out (field names and defaults of
k8s.io/api/core/v1/types.go; the API server's defaulting, e.g. restartPolicy Always, applied).

`meta()` gives every object the metadata the API server would: uid (derived from the object's
identity and creation time, so a re-created object gets a new one), creationTimestamp (when the
object first appeared in a published state: `ClusterState.created`), labels, annotations.
resourceVersion is set by the view (emunet.api.view), which knows when an object last changed.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import time
import uuid
from typing import Any

from emunet import __version__, model
from emunet.model import Container, Probe, ipfamily
from emunet.state import podphase
from emunet.state.cluster import ClusterState, PodIndex, PodState, ServiceState

VERSION = "v1.32.0-emunet"  # what /version and the nodes' kubelets report (research §1)
_UID_NS = uuid.UUID("5f0e6a53-1c6d-4b4e-9c1e-656d756e6574")


def rfc3339(t: float) -> str:
    """metav1.Time as the API writes it: UTC, second precision."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def created(st: ClusterState, kind: str, ns: str | None, name: str) -> float:
    return st.created.get(f"{kind}/{ns or ''}/{name}", 0.0)


def uid(st: ClusterState, kind: str, ns: str | None, name: str) -> str:
    return _uid(f"{st.cluster.name}/{kind}/{ns or ''}/{name}/{created(st, kind, ns, name)!r}")


@functools.lru_cache(maxsize=1 << 16)
def _uid(seed: str) -> str:
    # uuid5 is a SHA-1 per call: every endpoint's targetRef asks for its pod's, on every
    # build of the view (thousands per publish at 2,000 pods), always the same answer
    return str(uuid.uuid5(_UID_NS, seed))


def meta(st: ClusterState, kind: str, ns: str | None, name: str,
         labels: dict[str, str] | None = None, born: tuple[str, str | None, str] | None = None,
         **extra: Any) -> dict[str, Any]:
    """`born`: the (kind, namespace, name) whose creation time this object shares (objects the
    state does not hold on their own: ReplicaSets, EndpointSlices, the `kubernetes` Service)."""
    m: dict[str, Any] = {"name": name}
    if ns is not None:
        m["namespace"] = ns
    m["uid"] = uid(st, kind, ns, name)
    m["creationTimestamp"] = rfc3339(created(st, *(born or (kind, ns, name))))
    if labels:
        m["labels"] = dict(labels)
    m.update(extra)
    return m


def namespace(st: ClusterState, name: str) -> dict[str, Any]:
    ns = st.namespaces[name]
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": meta(st, "Namespace", None, name, ns.labels),
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def _memory_kib() -> int:
    try:
        with open("/proc/meminfo") as f:
            return int(next(line.split()[1] for line in f if line.startswith("MemTotal:")))
    except (OSError, StopIteration, ValueError):
        return 0


def _capacity(pod_cidr: str) -> dict[str, str]:
    """A node's capacity as the kubelet reports it (`kubectl describe node` divides requests by
    it): every emunet node shares this machine's CPUs and memory; `pods` is what the node's pod
    range holds (the kubelet's maxPods, 110 by default, is a setting emunet does not have)."""
    hosts = ipaddress.IPv4Network(pod_cidr).num_addresses - 3  # network, gateway, broadcast
    return {"cpu": str(os.cpu_count() or 1), "memory": f"{_memory_kib()}Ki",
            "pods": str(max(hosts, 1))}


def _primary_first(st: ClusterState, *pairs: list[str | None]) -> list[list[str]]:
    """Each [IPv4, IPv6] pair as the API lists it: present values, the primary family first
    (a node's podCIDRs and InternalIPs, a pod's podIPs and hostIPs)."""
    v6_first = st.cluster.families[0] == model.IPV6
    return [[v for v in (pair[::-1] if v6_first else pair) if v] for pair in pairs]


def node(st: ClusterState, name: str, ready: bool) -> dict[str, Any]:
    n = st.node(name)
    t = rfc3339(created(st, "Node", None, name))
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
              "beta.kubernetes.io/arch": "amd64"}
    cond = {"type": "Ready", "status": "True" if ready else "Unknown",
            "reason": "KubeletReady" if ready else "NodeStatusUnknown",
            "message": "emunet node agent is running" if ready
            else "emunet node agent stopped (emunet node stop, or it died)",
            "lastHeartbeatTime": t, "lastTransitionTime": t}
    cidrs, ips = _primary_first(st, [n.pod_cidr, n.pod_cidr6], [n.underlay_ip, n.underlay_ip6])
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": meta(st, "Node", None, name, labels),
            "spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs},
            "status": {"addresses": [*({"type": "InternalIP", "address": ip} for ip in ips),
                                     {"type": "Hostname", "address": name}],
                       "capacity": _capacity(n.pod_cidr), "allocatable": _capacity(n.pod_cidr),
                       "conditions": [cond],
                       "nodeInfo": {"kubeletVersion": VERSION, "kubeProxyVersion": VERSION,
                                    "osImage": "emunet network namespace",
                                    "kernelVersion": os.uname().release,
                                    "containerRuntimeVersion": f"emunet://{__version__}",
                                    "operatingSystem": "linux", "architecture": "amd64",
                                    "machineID": "", "systemUUID": "", "bootID": ""}}}


def _probe(p: Probe) -> dict[str, Any]:
    if p.kind == "exec":
        action: dict[str, Any] = {"exec": {"command": list(p.command)}}
    elif p.kind == "httpGet":
        action = {"httpGet": {"path": p.path, "port": p.port, "scheme": p.scheme}}
    else:
        action = {"tcpSocket": {"port": p.port}}
    return {**action, "initialDelaySeconds": p.initial_delay, "periodSeconds": p.period,
            "timeoutSeconds": p.timeout, "successThreshold": p.success_threshold,
            "failureThreshold": p.failure_threshold}


def container_spec(c: Container) -> dict[str, Any]:
    out: dict[str, Any] = {"name": c.name, "image": c.image or "emunet/builtin"}
    if c.command:
        out["command"] = list(c.command)
    if c.args:
        out["args"] = list(c.args)
    if c.ports:
        out["ports"] = [{"containerPort": p.container_port, "protocol": p.protocol,
                         **({"name": p.name} if p.name else {})} for p in c.ports]
    if c.env:
        out["env"] = [{"name": k, "value": v} for k, v in c.env]
    for field, probe in (("readinessProbe", c.readiness_probe),
                         ("livenessProbe", c.liveness_probe),
                         ("startupProbe", c.startup_probe)):
        if probe is not None:
            out[field] = _probe(probe)
    sc = {k: v for k, v in (("runAsUser", c.run_as_user), ("runAsGroup", c.run_as_group))
          if v is not None}
    if sc:
        out["securityContext"] = sc
    for field, on in (("stdin", c.stdin), ("stdinOnce", c.stdin_once), ("tty", c.tty)):
        if on:
            out[field] = True
    out.update(resources={}, terminationMessagePath="/dev/termination-log",
               terminationMessagePolicy="File", imagePullPolicy="IfNotPresent")
    return out


def pod(st: ClusterState, ps: PodState, deleted_at: float | None = None) -> dict[str, Any]:
    p, ns = ps.pod, ps.pod.namespace
    start = rfc3339(created(st, "Pod", ns, p.name))
    extra: dict[str, Any] = {}
    if p.owner:
        extra["ownerReferences"] = [{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": p.owner,
            "uid": uid(st, "ReplicaSet", ns, p.owner), "controller": True,
            "blockOwnerDeletion": True}]
    if ps.terminating:  # kubectl prints Terminating for an object with a deletionTimestamp
        extra.update(deletionTimestamp=rfc3339(deleted_at or time.time()),
                     deletionGracePeriodSeconds=30)
    spec: dict[str, Any] = {"containers": [container_spec(c) for c in p.containers],
                            "restartPolicy": p.restart_policy, "dnsPolicy": "ClusterFirst",
                            "nodeName": ps.node, "schedulerName": "default-scheduler",
                            "serviceAccountName": "default",
                            "terminationGracePeriodSeconds": 30, "securityContext": {}}
    if p.hostname:
        spec["hostname"] = p.hostname
    if p.subdomain:
        spec["subdomain"] = p.subdomain

    phase = podphase.pod_phase(ps)
    completed = phase in ("Succeeded", "Failed")

    def cond(kind: str, ok: bool) -> dict[str, Any]:
        out = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None,
               "lastTransitionTime": start}
        if completed and kind in ("Ready", "ContainersReady"):
            out["reason"] = "PodCompleted"  # the kubelet's reason once every container ended
        return out

    statuses = []
    for i, (c, cs) in enumerate(zip(p.containers, podphase.pod_states(ps), strict=True)):
        cid = f"emunet://{ns}_{p.name}_{c.name}"
        running = (cs or {}).get("state") == "running"
        entry = {"name": c.name, "image": c.image or "emunet/builtin", "imageID": "",
                 "containerID": cid, "ready": ps.ready and running, "started": running,
                 # emunet counts restarts per pod: the first container carries them
                 "restartCount": ps.restarts if i == 0 else 0,
                 "state": container_state(cs, start, cid)}
        if cs and cs.get("state") != "terminated" and cs.get("last"):
            entry["lastState"] = container_state({"state": "terminated", **cs["last"]}, start,
                                                 cid)
        statuses.append(entry)
    n = st.node(ps.node)
    pod_ips, host_ips = _primary_first(st, [ps.ip, ps.ip6], [n.underlay_ip, n.underlay_ip6])
    status = {"phase": phase,
              "conditions": [cond("PodReadyToStartContainers", not completed),
                             cond("Initialized", True), cond("Ready", ps.ready),
                             cond("ContainersReady", ps.ready), cond("PodScheduled", True)],
              "hostIP": host_ips[0], "hostIPs": [{"ip": ip} for ip in host_ips],
              "podIP": pod_ips[0], "podIPs": [{"ip": ip} for ip in pod_ips],
              "startTime": start, "containerStatuses": statuses,
              "qosClass": "BestEffort"}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": meta(st, "Pod", ns, p.name, p.labels, **extra),
            "spec": spec, "status": status}


def container_state(cs: dict[str, Any] | None, pod_start: str, cid: str) -> dict[str, Any]:
    """core/v1 ContainerState from a runtime status (emunet.state.podphase's shape)."""
    kind = (cs or {}).get("state")
    if cs is None or kind is None:
        return {"waiting": {"reason": "ContainerCreating"}}
    if kind == "running":
        started = rfc3339(cs["startedAt"]) if cs.get("startedAt") else pod_start
        return {"running": {"startedAt": started}}
    if kind == "waiting":
        out: dict[str, Any] = {"reason": cs.get("reason") or "ContainerCreating"}
        if cs.get("reason") == "CrashLoopBackOff" and cs.get("last"):
            out["message"] = "back-off restarting failed container"
        return {"waiting": out}
    return {"terminated": {"exitCode": cs.get("exitCode", 0), "reason": cs.get("reason", ""),
                           "startedAt": rfc3339(cs.get("startedAt") or 0),
                           "finishedAt": rfc3339(cs.get("finishedAt") or 0),
                           "containerID": cid}}


def service(st: ClusterState, ss: ServiceState) -> dict[str, Any]:
    svc = ss.service
    ports = []
    for p in svc.ports:
        port: dict[str, Any] = {"port": p.port, "targetPort": p.target_port,
                                "protocol": p.protocol}
        if p.name:
            port["name"] = p.name
        if p.node_port:
            port["nodePort"] = p.node_port
        ports.append(port)
    spec: dict[str, Any] = {"type": svc.type, "ports": ports,
                            "sessionAffinity": svc.session_affinity}
    if svc.type == "ExternalName":
        spec["externalName"] = svc.external_name
    else:
        fams, policy = service_families(st, ss)
        ips = ss.cluster_ips() or ["None"]
        spec.update(clusterIP=ips[0], clusterIPs=ips, ipFamilies=list(fams),
                    ipFamilyPolicy=policy, internalTrafficPolicy="Cluster")
    if svc.selector is not None:
        spec["selector"] = dict(svc.selector)
    if svc.session_affinity == "ClientIP":
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": svc.affinity_timeout}}
    status: dict[str, Any] = {"loadBalancer": {}}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": meta(st, "Service", svc.namespace, svc.name, svc.labels),
            "spec": spec, "status": status}


def service_families(st: ClusterState, ss: ServiceState) -> tuple[tuple[str, ...], str]:
    """spec.ipFamilies and spec.ipFamilyPolicy as the API server settled them: kept in the
    state for a dual-stack cluster; on an IPv4-only one settled here (every Service shows
    [IPv4] SingleStack, a headless one without selector RequireDualStack [IPv4, IPv6], as a
    single-stack API server sets them)."""
    if ss.ip_families:
        return ss.ip_families, ss.ip_family_policy or ipfamily.SINGLE
    fams = ipfamily.settle(ss.service, st.cluster.families)
    return fams.families or (model.IPV4,), fams.policy or ipfamily.SINGLE


def _family_eps(eps: list, fam: str) -> list:
    return [e for e in eps if ("IPv6" if ":" in e.ip else "IPv4") == fam]


def endpoints(st: ClusterState, key: tuple[str, str],
              index: PodIndex | None = None) -> dict[str, Any]:
    """v1 Endpoints: one subset per Service port with backends (ready and not ready). The
    Endpoints controller lists the Service's primary family only (ipFamilies[0])."""
    ss = st.services[key]
    subsets: list[dict[str, Any]] = []
    primary = service_families(st, ss)[0][0]
    for i, eps in st.endpoints(key, index).items():
        eps = _family_eps(eps, primary)
        if not eps:
            continue
        sp = ss.service.ports[i]
        port = {"port": eps[0].port, "protocol": sp.protocol, **({"name": sp.name}
                                                                 if sp.name else {})}

        def addr(e) -> dict[str, Any]:
            return {"ip": e.ip, "nodeName": e.node,
                    "targetRef": {"kind": "Pod", "namespace": e.pod[0], "name": e.pod[1],
                                  "uid": uid(st, "Pod", e.pod[0], e.pod[1])}}

        subset: dict[str, Any] = {}
        ready = [addr(e) for e in eps if e.ready]
        unready = [addr(e) for e in eps if not e.ready]
        if ready:
            subset["addresses"] = ready
        if unready:
            subset["notReadyAddresses"] = unready
        subset["ports"] = [port]
        subsets.append(subset)
    m = meta(st, "Service", key[0], key[1], ss.service.labels)
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "Endpoints", "metadata": m}
    if subsets:
        out["subsets"] = subsets
    return out


def endpoint_slices(st: ClusterState, key: tuple[str, str],
                    index: PodIndex | None = None) -> list[dict[str, Any]]:
    """The EndpointSlice controller's slices of a Service: one per family of its ipFamilies
    (addressType IPv4 / IPv6; a headless Service's too)."""
    fams = service_families(st, st.services[key])[0]
    if not st.cluster.dual_stack:
        fams = (model.IPV4,)
    return [endpoint_slice(st, key, index, fam) for fam in fams]


def endpoint_slice(st: ClusterState, key: tuple[str, str], index: PodIndex | None = None,
                   family: str = model.IPV4) -> dict[str, Any]:
    """discovery/v1 EndpointSlice `<service>-<suffix>` of one family (IPv6: its own name)."""
    ss = st.services[key]
    u = uid(st, 'Service', *key)
    name = f"{key[1]}-emu{u[:5]}" if family == model.IPV4 else f"{key[1]}-emu{u[5:10]}"
    by_pod: dict[tuple[str, str], Any] = {}
    ports = []
    all_eps = st.endpoints(key, index)
    for i, eps in {i: _family_eps(e, family) for i, e in all_eps.items()}.items():
        sp = ss.service.ports[i]
        ports.append({"name": sp.name or "", "port": eps[0].port if eps else None,
                      "protocol": sp.protocol})
        for e in eps:
            by_pod.setdefault(e.pod, e)
    items = [{"addresses": [e.ip], "nodeName": e.node,
              "conditions": {"ready": e.ready, "serving": e.ready, "terminating": False},
              "targetRef": {"kind": "Pod", "namespace": e.pod[0], "name": e.pod[1],
                            "uid": uid(st, "Pod", e.pod[0], e.pod[1])}}
             for e in by_pod.values()]
    labels = {"kubernetes.io/service-name": key[1],
              "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
    m = meta(st, "EndpointSlice", key[0], name, labels, born=("Service", *key),
             ownerReferences=[{"apiVersion": "v1", "kind": "Service", "name": key[1],
                               "uid": uid(st, "Service", *key), "controller": True,
                               "blockOwnerDeletion": True}])
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": m,
            "addressType": family, "endpoints": items, "ports": ports}
