"""What `emunet get` prints: kubectl-like tables and Kubernetes-style JSON Lists. Pure.

JSON items use the Kubernetes field names (metadata.name, spec.nodeName, status.podIP,
spec.clusterIP, subsets, ...) so `jq` filters written for kubectl work unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from emunet.state import deploy, podphase
from emunet.state.cluster import ClusterState, PodState, ServiceState

KINDS = {
    "pods": "pods", "pod": "pods", "po": "pods",
    "services": "services", "service": "services", "svc": "services",
    "endpoints": "endpoints", "ep": "endpoints",
    "nodes": "nodes", "node": "nodes", "no": "nodes",
    "deployments": "deployments", "deployment": "deployments", "deploy": "deployments",
    "networkpolicies": "networkpolicies", "networkpolicy": "networkpolicies",
    "netpol": "networkpolicies",
    "ciliumnetworkpolicies": "ciliumnetworkpolicies", "ciliumnetworkpolicy":
    "ciliumnetworkpolicies", "cnp": "ciliumnetworkpolicies",
}
_CNP = "CiliumNetworkPolicy"


def table(rows: list[list[str]]) -> str:
    """Columns padded like kubectl: three spaces between, headers in capitals."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def _meta(name: str, namespace: str | None, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def _ports_str(ss: ServiceState) -> str:
    """kubectl's PORT(S): `80/TCP`, with the node port `80:30080/TCP` (NodePort, LoadBalancer)."""
    return ",".join(f"{p.port}{f':{p.node_port}' if p.node_port else ''}/{p.protocol}"
                    for p in ss.service.ports) or "<none>"


def _pod_phase(ps: PodState) -> str:
    if ps.terminating:
        return "Terminating"  # what kubectl prints for a pod with a deletionTimestamp
    return podphase.pod_phase(ps)


def _in_ns(key: tuple[str, str], namespace: str | None) -> bool:
    return namespace is None or key[0] == namespace


def _namespaced(head: list[str], items: Iterable[tuple[tuple[str, str], list[str]]],
                namespace: str | None) -> list[list[str]]:
    """A kubectl table of namespaced objects: `items` yields (namespace, name) and a row, in
    order; with -A (namespace None) a NAMESPACE column comes first, else only that namespace."""
    if namespace is None:
        return [["NAMESPACE", *head], *([key[0], *row] for key, row in items)]
    return [head, *(row for key, row in items if key[0] == namespace)]


def _labels_str(labels: dict[str, str] | None, empty: str = "<none>") -> str:
    return ",".join(f"{k}={v}" for k, v in (labels or {}).items()) or empty


def pods(st: ClusterState, namespace: str | None, wide: bool) -> list[list[str]]:
    def row(ps: PodState) -> list[str]:
        n = len(ps.pod.containers)
        return [ps.pod.name, f"{n if ps.ready else 0}/{n}", podphase.pod_status_word(ps),
                str(ps.restarts),
                ps.ips(st.cluster.families)[0], ps.node, *([ps.netns] if wide else [])]

    head = ["NAME", "READY", "STATUS", "RESTARTS", "IP", "NODE", *(["NETNS"] if wide else [])]
    return _namespaced(head, ((ps.key, row(ps)) for ps in sorted(st.pods.values(),
                                                                   key=lambda p: p.key)),
                       namespace)


def services(st: ClusterState, namespace: str | None, wide: bool) -> list[list[str]]:
    def row(ss: ServiceState) -> list[str]:
        svc = ss.service
        external = svc.external_name or ("<pending>" if svc.type == "LoadBalancer" else "<none>")
        # kubectl's CLUSTER-IP column: spec.clusterIPs[0], the primary family's
        return [svc.name, svc.type, (ss.cluster_ips() or ["None"])[0], external, _ports_str(ss),
                *([_labels_str(svc.selector)] if wide else [])]

    head = ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", *(["SELECTOR"] if wide else [])]
    return _namespaced(head, ((ss.key, row(ss)) for ss in sorted(st.services.values(),
                                                                   key=lambda s: s.key)),
                       namespace)


def _family(ip: str) -> str:
    return "IPv6" if ":" in ip else "IPv4"


def _hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def endpoints(st: ClusterState, namespace: str | None, wide: bool) -> list[list[str]]:
    def row(key: tuple[str, str]) -> list[str]:
        fam = st.services[key].primary_family  # v1 Endpoints: the primary family only
        eps = [_hostport(e.ip, e.port) for lst in st.endpoints(key).values() for e in lst
               if e.ready and _family(e.ip) == fam]
        return [key[1], ",".join(dict.fromkeys(eps)) or "<none>"]

    return _namespaced(["NAME", "ENDPOINTS"],
                       ((key, row(key)) for key in sorted(st.services) if _in_ns(key, namespace)),
                       namespace)


def deployments(st: ClusterState, namespace: str | None, wide: bool) -> list[list[str]]:
    def row(d) -> list[str]:
        s = deploy.status(st, d)
        return [d.name, f"{s['ready']}/{d.replicas}", str(s["updated"]), str(s["available"]),
                *([_labels_str(d.selector)] if wide else [])]

    head = ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", *(["SELECTOR"] if wide else [])]
    return _namespaced(head, ((d.key, row(d)) for d in sorted(st.deployments.values(),
                                                                key=lambda d: d.key)
                              if _in_ns(d.key, namespace)), namespace)


def _selector_str(sel) -> str:
    """A LabelSelector as kubectl prints it (`app=web,tier in (a,b)`); empty: <none>."""
    parts = [f"{k}={v}" for k, v in sel.match_labels]
    for r in sel.match_expressions:
        vals = ",".join(r.values)
        parts.append({"In": f"{r.key} in ({vals})", "NotIn": f"{r.key} notin ({vals})",
                      "Exists": r.key, "DoesNotExist": f"!{r.key}"}.get(r.operator, r.key))
    return ",".join(parts) or "<none>"


def networkpolicies(st: ClusterState, namespace: str | None, wide: bool) -> list[list[str]]:
    head = ["NAME", "POD-SELECTOR", *(["POLICY-TYPES"] if wide else [])]
    return _namespaced(head, ((pol.key, [pol.name, _selector_str(pol.pod_selector),
                                         *([",".join(pol.policy_types)] if wide else [])])
                              for pol in sorted(st.policies.values(), key=lambda p: p.key)),
                       namespace)


def ciliumnetworkpolicies(st: ClusterState, namespace: str | None, wide: bool
                          ) -> list[list[str]]:
    def row(m) -> list[str]:
        sel = (m.body.get("spec") or {}).get("endpointSelector") or {}
        return [m.name, _labels_str(sel.get("matchLabels"), empty="<all>")]

    cnps = sorted((o for o in st.others if o.kind == _CNP), key=lambda o: (o.namespace, o.name))
    return _namespaced(["NAME", "ENDPOINT-SELECTOR"],
                       (((m.namespace or "", m.name), row(m)) for m in cnps), namespace)


def nodes(st: ClusterState, ready: dict[str, bool], wide: bool) -> list[list[str]]:
    head = ["NAME", "STATUS", "INTERNAL-IP", "POD-CIDR"]
    if wide:
        head += ["NETNS", "VTEP-MAC"]
    rows = [head]
    for n in st.nodes:
        row = [n.name, "Ready" if ready.get(n.name) else "NotReady", n.underlay_ip, n.pod_cidr]
        if wide:
            row += [n.netns, n.vtep_mac]
        rows.append(row)
    return rows


def as_list(st: ClusterState, kind: str, namespace: str | None,
            ready: dict[str, bool]) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    if kind == "pods":
        for ps in sorted(st.pods.values(), key=lambda p: p.key):
            if _in_ns(ps.key, namespace):
                items.append({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": _meta(ps.pod.name, ps.pod.namespace, ps.pod.labels),
                    "spec": {"nodeName": ps.node, "containers": [
                        {"name": c.name, "image": c.image,
                         "ports": [{"containerPort": p.container_port, "protocol": p.protocol,
                                    **({"name": p.name} if p.name else {})} for p in c.ports]}
                        for c in ps.pod.containers]},
                    "status": {"phase": _pod_phase(ps),
                               "podIP": ps.ips(st.cluster.families)[0],
                               "podIPs": [{"ip": ip} for ip in ps.ips(st.cluster.families)],
                               "hostIP": st.node(ps.node).underlay_ip,
                               "conditions": [{"type": "Ready",
                                               "status": "True" if ps.ready else "False"}]},
                    "emunet": {"netns": ps.netns, "mac": ps.mac, "hostInterface": ps.host_ifname},
                })
    elif kind == "services":
        for ss in sorted(st.services.values(), key=lambda s: s.key):
            if _in_ns(ss.key, namespace):
                svc = ss.service
                ips = ss.cluster_ips() or ["None"]
                dual = {"clusterIPs": ips, "ipFamilies": list(ss.ip_families),
                        "ipFamilyPolicy": ss.ip_family_policy} if ss.ip_families else {}
                items.append({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": _meta(svc.name, svc.namespace, svc.labels),
                    "spec": {"type": svc.type, "clusterIP": ips[0], **dual,
                             "selector": svc.selector, "sessionAffinity": svc.session_affinity,
                             "ports": [
                                 {"port": p.port, "targetPort": p.target_port,
                                  "protocol": p.protocol, **({"name": p.name} if p.name else {}),
                                  **({"nodePort": p.node_port} if p.node_port else {})}
                                 for p in svc.ports]},
                })
    elif kind == "endpoints":
        for key in sorted(st.services):
            if _in_ns(key, namespace):
                items.append(_endpoints_item(st, key))
    elif kind == "deployments":
        for d in sorted(st.deployments.values(), key=lambda d: d.key):
            if _in_ns(d.key, namespace):
                s = deploy.status(st, d)
                items.append({
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": _meta(d.name, d.namespace, d.labels),
                    "spec": {"replicas": d.replicas, "selector": {"matchLabels": d.selector},
                             "strategy": {"type": d.strategy}},
                    "status": {"replicas": s["replicas"], "readyReplicas": s["ready"],
                               "updatedReplicas": s["updated"],
                               "availableReplicas": s["available"]},
                })
    elif kind == "networkpolicies":
        for pol in sorted(st.policies.values(), key=lambda p: p.key):
            if _in_ns(pol.key, namespace):
                sel = pol.pod_selector
                items.append({
                    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": _meta(pol.name, pol.namespace, {}),
                    "spec": {"podSelector": {
                        "matchLabels": dict(sel.match_labels),
                        "matchExpressions": [{"key": r.key, "operator": r.operator,
                                              "values": list(r.values)}
                                             for r in sel.match_expressions]},
                        "policyTypes": list(pol.policy_types)},
                })
    elif kind == "ciliumnetworkpolicies":
        for m in sorted((o for o in st.others if o.kind == _CNP),
                        key=lambda o: (o.namespace, o.name)):
            if _in_ns((m.namespace or "", m.name), namespace):
                items.append(m.body)  # the manifest as applied
    elif kind == "nodes":
        v6_first = st.cluster.families[0] == "IPv6"  # the primary family first, as the API
        for n in st.nodes:  # dual-stack: both ranges and addresses
            cidrs = [c for c in (n.pod_cidr, n.pod_cidr6) if c][::-1 if v6_first else 1]
            ips = [ip for ip in (n.underlay_ip, n.underlay_ip6) if ip][::-1 if v6_first else 1]
            items.append({
                "apiVersion": "v1", "kind": "Node", "metadata": _meta(n.name, None, {}),
                "spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs},
                "status": {"addresses": [{"type": "InternalIP", "address": ip} for ip in ips],
                           "conditions": [{"type": "Ready", "status":
                                           "True" if ready.get(n.name) else "False"}]},
            })
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _endpoints_item(st: ClusterState, key: tuple[str, str]) -> dict[str, Any]:
    """One v1 Endpoints object; ports with the same backends share a subset, as the API does."""
    ss = st.services[key]
    subsets: list[dict[str, Any]] = []
    for i, eps in st.endpoints(key).items():
        eps = [e for e in eps if _family(e.ip) == ss.primary_family]
        sp = ss.service.ports[i]
        port = {"port": eps[0].port if eps else 0, "protocol": sp.protocol,
                **({"name": sp.name} if sp.name else {})}
        if not eps:
            continue
        # a user's endpoint (a Service without selector) may name no pod and no node
        addrs = [{"ip": e.ip, **({"hostname": e.hostname} if e.hostname else {}),
                  **({"nodeName": e.node} if e.node else {}),
                  **({"targetRef": {"kind": "Pod", "namespace": e.pod[0], "name": e.pod[1]}}
                     if e.pod else {})}
                 for e in eps if e.ready]
        unready = [{"ip": e.ip, **({"nodeName": e.node} if e.node else {})}
                   for e in eps if not e.ready]
        subset: dict[str, Any] = {"ports": [port]}
        if addrs:
            subset["addresses"] = addrs
        if unready:
            subset["notReadyAddresses"] = unready
        subsets.append(subset)
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": _meta(key[1], key[0], ss.service.labels), "subsets": subsets}
