"""`emunet apply` and `emunet delete` as state changes: what to add, update and remove.

Pure over the ClusterState (the supervisor carries the changes out on the host). A change is
all-or-nothing: it is computed on a copy and only then committed, so a bad manifest changes
nothing, as the API server rejects a bad object whole.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from emunet.config import load_config, load_config_text
from emunet.model import Config, Manifest
from emunet.model.cilium import CiliumPolicy
from emunet.model.coredns import CONFIGMAP as COREDNS_CM
from emunet.model.endpoints import ENDPOINTS, SLICE, EndpointSet
from emunet.state.cluster import (
    KUBE_SYSTEM,
    NS_NAME_LABEL,
    ClusterState,
    PodState,
    StateError,
)
from emunet.state.deploy import owned_pods

CNP = "CiliumNetworkPolicy"

_KIND_ALIASES = {
    "pod": "Pod", "pods": "Pod", "po": "Pod",
    "service": "Service", "services": "Service", "svc": "Service",
    "namespace": "Namespace", "namespaces": "Namespace", "ns": "Namespace",
    "networkpolicy": "NetworkPolicy", "networkpolicies": "NetworkPolicy",
    "netpol": "NetworkPolicy",
    "deployment": "Deployment", "deployments": "Deployment", "deploy": "Deployment",
    "ciliumnetworkpolicy": CNP, "ciliumnetworkpolicies": CNP, "cnp": CNP,
    "endpoints": ENDPOINTS, "ep": ENDPOINTS,
    "endpointslice": SLICE, "endpointslices": SLICE,
    "configmap": "ConfigMap", "configmaps": "ConfigMap", "cm": "ConfigMap",
}
_WHAT = {ENDPOINTS: "endpoints", SLICE: "endpointslice.discovery.k8s.io"}


@dataclass
class Change:
    message: str  # kubectl-style: "pod/web created"
    added_pod: PodState | None = None
    removed_pod: PodState | None = None


def _commit(state: ClusterState, new: ClusterState) -> None:
    state.__dict__.update(new.__dict__)


def _apply_cnp(st: ClusterState, m: Manifest, policy: CiliumPolicy) -> Change:
    """A CiliumNetworkPolicy (parsed and validated by the config loader) into the state: the
    policy for the agents and L7 proxies, which recompile on the publish that follows, and its
    manifest for `get`."""
    if m.namespace not in st.namespaces:
        raise StateError(f"{m.loc}: namespace {m.namespace!r} does not exist")
    what = f"ciliumnetworkpolicy.cilium.io/{m.name}"
    for i, o in enumerate(st.others):
        if (o.kind, o.namespace, o.name) == (CNP, m.namespace, m.name):
            if o.body == m.body:
                return Change(f"{what} unchanged")
            st.others[i] = m
            st.cilium_policies[(m.namespace, m.name)] = policy
            return Change(f"{what} configured")
    st.others.append(m)
    st.cilium_policies[(m.namespace, m.name)] = policy
    return Change(f"{what} created")


def _apply_endpoints(st: ClusterState, es: EndpointSet) -> Change:
    """A user's Endpoints or EndpointSlice: the backends of the Service without a selector it
    names (the agents and the DNS responder read them on the publish that follows). For a
    Service with a selector the controller's endpoints stay in force, as in Kubernetes."""
    if es.namespace not in st.namespaces:
        raise StateError(f"{es.loc}: namespace {es.namespace!r} does not exist")
    what = f"{_WHAT[es.kind]}/{es.name}"
    old = st.endpoint_sets.get(es.key)
    st.endpoint_sets[es.key] = es
    if old is not None and old == dataclasses.replace(es, loc=old.loc):
        return Change(f"{what} unchanged")
    return Change(f"{what} {'configured' if old else 'created'}")


def _is_corefile(m: Manifest) -> bool:
    return (m.kind, m.namespace, m.name) == ("ConfigMap", KUBE_SYSTEM, COREDNS_CM)


def _apply_corefile(st: ClusterState, m: Manifest, settings: object) -> Change:
    """kube-system/coredns (its Corefile parsed by the config loader): the DNS responder runs
    it from the publish that follows (its reload, as CoreDNS's `reload` plugin would)."""
    old = next((o for o in st.others if _is_corefile(o)), None)
    if old is not None and old.body == m.body:
        return Change("configmap/coredns unchanged")
    st.others = [o for o in st.others if not _is_corefile(o)] + [m]
    st.coredns = settings  # type: ignore[assignment]  # model.coredns.CoreDNS
    return Change("configmap/coredns configured")  # it always exists (k3s's default)


def _copy(state: ClusterState) -> ClusterState:
    return state.copy()


def apply_config(state: ClusterState, path: str) -> list[Change]:
    cfg = load_config(path, base=state.cluster)
    changes = _apply(state, cfg)
    # the file supersedes a body written through the API: it would show stale fields
    for key in _object_keys(cfg):
        state.manifests.pop(key, None)
    return changes


def _object_keys(cfg: Config) -> list[str]:
    keys = [f"Namespace//{ns.name}" for ns in cfg.namespaces]
    for kind, objs in (("Pod", cfg.pods), ("Service", cfg.services),
                       ("Deployment", cfg.deployments), ("NetworkPolicy", cfg.network_policies),
                       (CNP, [o for o in cfg.others if o.kind == CNP]),
                       (ENDPOINTS, [e for e in cfg.endpoint_sets if e.kind == ENDPOINTS]),
                       (SLICE, [e for e in cfg.endpoint_sets if e.kind == SLICE]),
                       ("ConfigMap", [o for o in cfg.others if _is_corefile(o)])):
        keys += [f"{kind}/{o.namespace}/{o.name}" for o in objs]
    return keys


def apply_objects(state: ClusterState, objects: list[dict[str, Any]],
                  source: str = "<request>") -> list[Change]:
    """Objects written through the Kubernetes API (emunet.api), as one all-or-nothing apply:
    the same loader, validation and state changes as `emunet apply -f` (the bodies are JSON
    documents of one multi-document YAML text). On success each body is kept in
    `state.manifests` (what the API shows of the fields emunet does not model)."""
    text = "".join(f"---\n{json.dumps(o)}\n" for o in objects)
    changes = _apply(state, load_config_text(text, source, base=state.cluster))
    for o in objects:
        md = o.get("metadata") or {}
        ns = None if o.get("kind") == "Namespace" else md.get("namespace") or "default"
        state.manifests[f"{o.get('kind')}/{ns or ''}/{md.get('name')}"] = o
    return changes


def _apply(state: ClusterState, cfg: Config) -> list[Change]:
    new = _copy(state)
    changes: list[Change] = []
    for ns in cfg.namespaces:
        old_ns = new.namespaces.get(ns.name)
        if old_ns is not None and old_ns.labels == {**ns.labels, NS_NAME_LABEL: ns.name}:
            changes.append(Change(f"namespace/{ns.name} unchanged"))
            continue
        verb = "configured" if old_ns is not None else "created"
        new.add_namespace(ns)
        changes.append(Change(f"namespace/{ns.name} {verb}"))
    for svc in cfg.services:
        if svc.namespace not in new.namespaces:
            raise StateError(f"{svc.loc}: namespace {svc.namespace!r} does not exist")
        old = new.services.get(svc.key)
        if old is not None and old.service == dataclasses.replace(svc, loc=old.service.loc):
            changes.append(Change(f"service/{svc.name} unchanged"))
            continue
        had = (old.cluster_ips() or ["None"])[0] if old is not None else None
        if (old is not None and old.service.type != "ExternalName" and svc.cluster_ip
                and svc.cluster_ip != had):
            # The API server: spec.clusterIP "field is immutable" once allocated.
            raise StateError(f"{svc.loc}: spec.clusterIP: Service {svc.namespace}/{svc.name} "
                             f"has clusterIP {had}; it is immutable "
                             "(delete the Service and apply again)")
        try:
            new.add_service(svc)
        except StateError as e:  # e.g. the clusterIP is another running Service's
            raise StateError(f"{svc.loc}: spec.clusterIP: {e}") from None
        changes.append(Change(f"service/{svc.name} {'configured' if old else 'created'}"))
    for pod in cfg.pods:
        if pod.namespace not in new.namespaces:
            raise StateError(f"{pod.loc}: namespace {pod.namespace!r} does not exist")
        old = new.pods.get(pod.key)
        if old is None:
            ps = new.add_pod(pod)
            changes.append(Change(f"pod/{pod.name} created", added_pod=ps))
            continue
        if old.terminating:
            # As the API server answers while the old object still exists: try again later.
            raise StateError(f"{pod.loc}: pod {pod.namespace}/{pod.name} is being deleted; "
                             "wait until `emunet get pods` no longer lists it, then apply again")
        same_spec = dataclasses.replace(pod, labels=old.pod.labels, loc=old.pod.loc)
        if same_spec != old.pod:
            # The API server forbids changing a pod's spec in place (only labels and a few
            # fields may change): say so instead of silently recreating it.
            raise StateError(f"{pod.loc}: pod {pod.namespace}/{pod.name}: pod updates may not "
                             "change fields other than labels; delete the pod and apply again")
        if pod.labels != old.pod.labels:
            new.add_pod(dataclasses.replace(pod, loc=old.pod.loc))
            changes.append(Change(f"pod/{pod.name} configured"))
        else:
            changes.append(Change(f"pod/{pod.name} unchanged"))
    for d in cfg.deployments:
        if d.namespace not in new.namespaces:
            raise StateError(f"{d.loc}: namespace {d.namespace!r} does not exist")
        old_d = new.deployments.get(d.key)
        if old_d is not None and old_d == dataclasses.replace(d, loc=old_d.loc):
            changes.append(Change(f"deployment.apps/{d.name} unchanged"))
            continue
        # The controllers roll the pods toward the new spec (scale, or a rolling update).
        new.deployments[d.key] = d
        changes.append(Change(f"deployment.apps/{d.name} "
                              f"{'configured' if old_d else 'created'}"))
    for pol in cfg.network_policies:
        if pol.namespace not in new.namespaces:
            raise StateError(f"{pol.loc}: namespace {pol.namespace!r} does not exist")
        old_p = new.policies.get(pol.key)
        what = f"networkpolicy.networking.k8s.io/{pol.name}"
        if old_p is not None and old_p == dataclasses.replace(pol, loc=old_p.loc):
            changes.append(Change(f"{what} unchanged"))
            continue
        new.policies[pol.key] = pol  # agents recompile on the publish that follows
        changes.append(Change(f"{what} {'configured' if old_p else 'created'}"))
    for es in cfg.endpoint_sets:
        changes.append(_apply_endpoints(new, es))
    parsed_cnps = {(p.namespace, p.name): p for p in cfg.cilium_policies}
    for other in cfg.others:
        if other.kind == CNP:
            changes.append(_apply_cnp(new, other, parsed_cnps[(other.namespace, other.name)]))
            continue
        if _is_corefile(other):
            changes.append(_apply_corefile(new, other, cfg.coredns))
            continue
        changes.append(Change(f"{other.kind.lower()}/{other.name} ignored: "
                              f"{other.kind} is not implemented yet"))
    _commit(state, new)
    return changes


def delete_config(state: ClusterState, path: str) -> list[Change]:
    cfg = load_config(path, base=state.cluster)
    new = _copy(state)
    changes: list[Change] = []
    for pod in cfg.pods:
        changes += _delete(new, "Pod", pod.name, pod.namespace)
    for svc in cfg.services:
        changes += _delete(new, "Service", svc.name, svc.namespace)
    for d in cfg.deployments:
        changes += _delete(new, "Deployment", d.name, d.namespace)
    for pol in cfg.network_policies:
        changes += _delete(new, "NetworkPolicy", pol.name, pol.namespace)
    for other in cfg.others:
        if other.kind == CNP:
            changes += _delete(new, CNP, other.name, other.namespace)
    for es in cfg.endpoint_sets:
        changes += _delete(new, es.kind, es.name, es.namespace)
    for ns in cfg.namespaces:
        changes += _delete(new, "Namespace", ns.name, None)
    _commit(state, new)
    return changes


def canonical_kind(kind: str) -> str | None:
    """The kind a user's word names (pod, deploy, svc, ...), None if emunet deletes no such."""
    return _KIND_ALIASES.get(kind.lower())


def delete_object(state: ClusterState, kind: str, name: str, namespace: str | None,
                  orphan: bool = False) -> list[Change]:
    """`orphan` (propagationPolicy Orphan): a Deployment goes, its pods stay as pods of their
    own (no owner: nothing manages them any more)."""
    canonical = _KIND_ALIASES.get(kind.lower())
    if canonical is None:
        raise StateError(f"cannot delete kind {kind!r}: use pod, service, deployment or "
                         "namespace")
    new = _copy(state)
    changes = _delete(new, canonical, name, namespace or "default", orphan)
    if not changes:
        where = "" if canonical == "Namespace" else f" in namespace {namespace or 'default'}"
        raise StateError(f"{canonical.lower()} {name!r} not found{where}")
    _commit(state, new)
    return changes


def _delete(st: ClusterState, kind: str, name: str, namespace: str | None,
            orphan: bool = False) -> list[Change]:
    if kind == "Pod":
        ps = st.remove_pod((namespace or "default", name))
        return [Change(f"pod/{name} deleted", removed_pod=ps)] if ps else []
    if kind in (ENDPOINTS, SLICE):
        if (kind, namespace, name) == (ENDPOINTS, "default", "kubernetes"):
            raise StateError("default/kubernetes is the API server's own Endpoints and cannot "
                             "be deleted")
        gone = st.endpoint_sets.pop((kind, namespace or "default", name), None)
        return [Change(f"{_WHAT[kind]}/{name} deleted")] if gone else []
    if kind == "Service":
        if (namespace, name) == (KUBE_SYSTEM, "kube-dns"):
            raise StateError("kube-system/kube-dns is emunet's cluster DNS and cannot be deleted")
        if (namespace or "default", name) == ("default", "kubernetes"):
            raise StateError("default/kubernetes is the API server's own Service and cannot "
                             "be deleted")
        return [Change(f"service/{name} deleted")] if st.remove_service(
            (namespace or "default", name)) else []
    if kind == "Deployment":
        d = st.deployments.pop((namespace or "default", name), None)
        if d is None:
            return []
        if orphan:
            for p in owned_pods(st, d):
                p.pod = dataclasses.replace(p.pod, owner=None)
            return [Change(f"deployment.apps/{name} deleted")]
        # Cascading deletion (the garbage collector): its ReplicaSets' pods go too.
        pods = [Change(f"pod/{p.pod.name} deleted", removed_pod=st.remove_pod(p.key))
                for p in owned_pods(st, d) if not p.terminating]
        return [*pods, Change(f"deployment.apps/{name} deleted")]
    if kind == "NetworkPolicy":
        gone = st.policies.pop((namespace or "default", name), None)
        return [Change(f"networkpolicy.networking.k8s.io/{name} deleted")] if gone else []
    if kind == "ConfigMap":
        if (namespace, name) == (KUBE_SYSTEM, COREDNS_CM):
            raise StateError("configmap kube-system/coredns holds the Corefile of emunet's DNS "
                             "responder and cannot be deleted; apply another Corefile instead")
        return []  # emunet keeps no other ConfigMap
    if kind == CNP:
        kept = [o for o in st.others if (o.kind, o.namespace, o.name) !=
                (CNP, namespace or "default", name)]
        gone = len(kept) < len(st.others)
        st.others = kept
        st.cilium_policies.pop((namespace or "default", name), None)
        return [Change(f"ciliumnetworkpolicy.cilium.io/{name} deleted")] if gone else []
    if name in ("default", KUBE_SYSTEM):
        raise StateError(f"namespace {name} cannot be deleted")
    if st.namespaces.pop(name, None) is None:
        return []
    out = []  # like the namespace controller: everything in it goes too
    for key in [k for k in st.deployments if k[0] == name]:
        out.append(Change(f"deployment.apps/{key[1]} deleted"))
        del st.deployments[key]
    for key in [k for k in st.pods if k[0] == name]:
        out.append(Change(f"pod/{key[1]} deleted", removed_pod=st.remove_pod(key)))
    for key in [k for k in st.services if k[0] == name]:
        st.remove_service(key)
        out.append(Change(f"service/{key[1]} deleted"))
    for key in [k for k in st.policies if k[0] == name]:
        del st.policies[key]
        out.append(Change(f"networkpolicy.networking.k8s.io/{key[1]} deleted"))
    for o in [o for o in st.others if o.kind == CNP and o.namespace == name]:
        out += _delete(st, CNP, o.name, name)
    for key in [k for k in st.endpoint_sets if k[1] == name]:
        out += _delete(st, key[0], key[2], name)
    return [*out, Change(f"namespace/{name} deleted")]
