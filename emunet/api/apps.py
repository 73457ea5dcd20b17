"""The state as apps/v1, networking.k8s.io/v1 and cilium.io/v2 objects, and the coredns
ConfigMap: Deployment, ReplicaSet, NetworkPolicy, CiliumNetworkPolicy. Pure.

ReplicaSets are not stored: a pod's `owner` names its ReplicaSet (`<deployment>-<hash>`,
emunet.state.deploy), so each Deployment's ReplicaSets are derived from its pods plus the one
its current template hashes to, as the Deployment controller would keep them.
"""

from __future__ import annotations

from typing import Any

from emunet.api.objects import container_spec, meta, uid
from emunet.model import Deployment
from emunet.model.coredns import CONFIGMAP, k3s_corefile
from emunet.model.netpol import LabelSelector, NetworkPolicy, Rule
from emunet.state import deploy
from emunet.state.cluster import KUBE_SYSTEM, ClusterState


def _template(d: Deployment, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {**d.template.labels, **(extra_labels or {})}
    return {"metadata": {"labels": labels, "creationTimestamp": None},
            "spec": {"containers": [container_spec(c) for c in d.template.containers],
                     "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
                     "schedulerName": "default-scheduler", "securityContext": {},
                     "terminationGracePeriodSeconds": 30}}


def deployment(st: ClusterState, d: Deployment) -> dict[str, Any]:
    s = deploy.status(st, d)
    strategy: dict[str, Any] = {"type": d.strategy}
    if d.strategy == "RollingUpdate":
        strategy["rollingUpdate"] = {"maxSurge": d.max_surge, "maxUnavailable": d.max_unavailable}
    complete = s["updated"] == d.replicas and s["available"] == d.replicas == s["replicas"]
    t = meta(st, "Deployment", d.namespace, d.name)["creationTimestamp"]

    def cond(kind: str, ok: bool, reason: str, msg: str) -> dict[str, Any]:
        return {"type": kind, "status": "True" if ok else "False", "reason": reason,
                "message": msg, "lastUpdateTime": t, "lastTransitionTime": t}

    new_rs = deploy.rs_name(d, deploy.template_hash(d.template))
    status: dict[str, Any] = {
        "observedGeneration": 1, "replicas": s["replicas"], "updatedReplicas": s["updated"],
        "readyReplicas": s["ready"], "availableReplicas": s["available"],
        "unavailableReplicas": max(0, s["replicas"] - s["available"]),
        "conditions": [
            cond("Available", s["available"] >= d.replicas - _max_unavailable(d),
                 "MinimumReplicasAvailable" if s["available"] >= d.replicas
                 else "MinimumReplicasUnavailable", "Deployment has minimum availability."),
            cond("Progressing", True, "NewReplicaSetAvailable" if complete
                 else "ReplicaSetUpdated", f'ReplicaSet "{new_rs}" has '
                 + ("successfully progressed." if complete else "is progressing."))]}
    for k in ("readyReplicas", "availableReplicas", "updatedReplicas", "unavailableReplicas"):
        if not status[k]:
            del status[k]  # omitempty, as the API serialises them
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta(st, "Deployment", d.namespace, d.name, d.labels, generation=1,
                             annotations={"deployment.kubernetes.io/revision": "1"}),
            "spec": {"replicas": d.replicas, "selector": {"matchLabels": dict(d.selector)},
                     "template": _template(d), "strategy": strategy,
                     "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600},
            "status": status}


def _max_unavailable(d: Deployment) -> int:
    return deploy.surge_and_unavailable(d)[1] if d.strategy == "RollingUpdate" else d.replicas


def replicasets(st: ClusterState, d: Deployment) -> list[dict[str, Any]]:
    pods = [p for p in deploy.owned_pods(st, d) if not p.terminating]
    h = deploy.template_hash(d.template)
    names = dict.fromkeys([deploy.rs_name(d, h), *(p.pod.owner for p in pods)])
    out = []
    for name in names:
        assert name is not None
        mine = [p for p in pods if p.pod.owner == name]
        current = name == deploy.rs_name(d, h)
        rs_hash = name[len(d.name) + 1:]
        labels = {**d.template.labels, deploy.TEMPLATE_HASH_LABEL: rs_hash}
        desired = d.replicas if current else len(mine)
        ready = sum(p.ready for p in mine)
        m = meta(st, "ReplicaSet", d.namespace, name, labels, born=("Deployment", *d.key),
                 ownerReferences=[{"apiVersion": "apps/v1", "kind": "Deployment",
                                   "name": d.name, "uid": uid(st, "Deployment", *d.key),
                                   "controller": True, "blockOwnerDeletion": True}])
        status: dict[str, Any] = {"replicas": len(mine), "observedGeneration": 1}
        if ready:
            status.update(readyReplicas=ready, availableReplicas=ready)
        tmpl = _template(d, {deploy.TEMPLATE_HASH_LABEL: rs_hash})
        out.append({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": m,
                    "spec": {"replicas": desired,
                             "selector": {"matchLabels": {**d.selector,
                                                          deploy.TEMPLATE_HASH_LABEL: rs_hash}},
                             "template": tmpl},
                    "status": status})
    return out


def label_selector(sel: LabelSelector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if sel.match_labels:
        out["matchLabels"] = dict(sel.match_labels)
    if sel.match_expressions:
        out["matchExpressions"] = [{"key": r.key, "operator": r.operator,
                                    **({"values": list(r.values)} if r.values else {})}
                                   for r in sel.match_expressions]
    return out


def _rule(rule: Rule, peers_key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    peers = []
    for p in rule.peers:
        peer: dict[str, Any] = {}
        if p.pod_selector is not None:
            peer["podSelector"] = label_selector(p.pod_selector)
        if p.namespace_selector is not None:
            peer["namespaceSelector"] = label_selector(p.namespace_selector)
        if p.ip_block is not None:
            peer["ipBlock"] = {"cidr": p.ip_block.cidr,
                               **({"except": list(p.ip_block.except_)}
                                  if p.ip_block.except_ else {})}
        peers.append(peer)
    if peers:
        out[peers_key] = peers
    if rule.ports:
        out["ports"] = [{"protocol": pp.protocol,
                         **({"port": pp.port} if pp.port is not None else {}),
                         **({"endPort": pp.end_port} if pp.end_port is not None else {})}
                        for pp in rule.ports]
    return out


def network_policy(st: ClusterState, pol: NetworkPolicy) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": label_selector(pol.pod_selector),
                            "policyTypes": list(pol.policy_types)}
    if pol.ingress:
        spec["ingress"] = [_rule(r, "from") for r in pol.ingress]
    if pol.egress:
        spec["egress"] = [_rule(r, "to") for r in pol.egress]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": meta(st, "NetworkPolicy", pol.namespace, pol.name), "spec": spec}


def cilium_policy(st: ClusterState, body: dict[str, Any]) -> dict[str, Any]:
    """The manifest as applied (emunet keeps it whole), with the API's metadata."""
    md = body.get("metadata") or {}
    ns, name = md.get("namespace") or "default", md["name"]
    m = meta(st, "CiliumNetworkPolicy", ns, name, md.get("labels"))
    if md.get("annotations"):
        m["annotations"] = dict(md["annotations"])
    return {**body, "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": m,
            "status": {"conditions": [{"type": "Valid", "status": "True",
                                       "message": "Policy validation succeeded"}]}}


def coredns_configmap(st: ClusterState) -> dict[str, Any]:
    """kube-system/coredns: the ConfigMap the config or a write gave (its Corefile is what
    emunet's responder runs, emunet.config.corefile), else k3s's, for this cluster."""
    given = next((o for o in st.others if (o.kind, o.namespace, o.name) ==
                  ("ConfigMap", KUBE_SYSTEM, CONFIGMAP)), None)
    if given is None:
        data: dict[str, Any] = {"Corefile": k3s_corefile(st.cluster)}
        labels, annotations = None, None
    else:
        data = dict(given.body.get("data") or {})
        md = given.body.get("metadata") or {}
        labels, annotations = md.get("labels"), md.get("annotations")
    m = meta(st, "ConfigMap", KUBE_SYSTEM, CONFIGMAP, labels,
             born=("Namespace", None, KUBE_SYSTEM))
    if annotations:
        m["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": m, "data": data}
