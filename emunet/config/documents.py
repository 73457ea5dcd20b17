"""Sort a file's documents by kind: the Cluster, the objects emunet builds, and the rest.

Decides from apiVersion/kind what each document is: the emunet `Cluster`, a v1 Namespace, Pod
or Service (parsed by `kube.py`), a Kubernetes kind emunet does not implement yet (kept whole
as a `model.Manifest` with a warning, never silently dropped), or a mistake (unknown kind,
wrong apiVersion for a known kind). Also rejects two objects with the same identity.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Any

from emunet import model
from emunet.config import cilium, cluster, corefile, deployment, kube, names
from emunet.config.endpoints import parse_endpoint_slice, parse_endpoints
from emunet.config.errors import Collector
from emunet.config.fields import Obj, at, describe, suggest
from emunet.config.netpol import API_VERSION as NETPOL_API_VERSION
from emunet.config.netpol import parse_network_policy
from emunet.config.yamlsrc import Document, LDict
from emunet.model import cilium as cnp
from emunet.model import coredns

# Kinds emunet knows but does not act on yet: kind -> (apiVersion, namespaced, what is missing).
NOT_YET: dict[str, tuple[str, bool, str]] = {
    "CiliumNetworkPolicy": ("cilium.io/v2", True, "enforced"),
    "CiliumClusterwideNetworkPolicy": ("cilium.io/v2", False, "enforced"),
    "ReplicaSet": ("apps/v1", True, "run"),
    "StatefulSet": ("apps/v1", True, "run"),
    "DaemonSet": ("apps/v1", True, "run"),
    "Job": ("batch/v1", True, "run"),
    "CronJob": ("batch/v1", True, "run"),
    "ConfigMap": ("v1", True, "used"),
    "Secret": ("v1", True, "used"),
    "ServiceAccount": ("v1", True, "used"),
    "PersistentVolumeClaim": ("v1", True, "used"),
    "Ingress": ("networking.k8s.io/v1", True, "routed"),
    "IngressClass": ("networking.k8s.io/v1", False, "used"),
    "Role": ("rbac.authorization.k8s.io/v1", True, "used"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", True, "used"),
    "ClusterRole": ("rbac.authorization.k8s.io/v1", False, "used"),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io/v1", False, "used"),
    "PodDisruptionBudget": ("policy/v1", True, "used"),
    "HorizontalPodAutoscaler": ("autoscaling/v2", True, "used"),
}
IMPLEMENTED = {"Namespace": kube.parse_namespace, "Pod": kube.parse_pod,
               "Service": kube.parse_service, "Deployment": deployment.parse_deployment,
               "Endpoints": parse_endpoints, "EndpointSlice": parse_endpoint_slice}
# of IMPLEMENTED kinds; the others are core v1
API_VERSIONS = {"Deployment": "apps/v1", "EndpointSlice": "discovery.k8s.io/v1"}
_KNOWN_GROUPS = {v.split("/")[0] if "/" in v else ""
                 for v in [*(v for v, _, _ in NOT_YET.values()), *API_VERSIONS.values()]}
_API_VERSION = re.compile(r"(([a-z0-9-]+\.)*[a-z0-9-]+/)?v[0-9]+((alpha|beta)[0-9]+)?")
_KIND = re.compile(r"[A-Z][A-Za-z0-9]*")


@dataclass
class Parsed:
    """Everything read from one file, each object with its document (for locating fields)."""

    clusters: list[tuple[model.ClusterSpec | None, Obj]] = field(default_factory=list)
    namespaces: list[tuple[model.Namespace, Obj]] = field(default_factory=list)
    pods: list[tuple[model.Pod, Obj]] = field(default_factory=list)
    services: list[tuple[model.Service, Obj]] = field(default_factory=list)
    deployments: list[tuple[model.Deployment, Obj]] = field(default_factory=list)
    others: list[tuple[model.Manifest, Obj]] = field(default_factory=list)
    policies: list[tuple[Any, Obj]] = field(default_factory=list)  # NetworkPolicy
    cilium: list[tuple[cnp.CiliumPolicy, Obj]] = field(default_factory=list)  # parsed CNPs
    endpoints: list[tuple[Any, Obj]] = field(default_factory=list)  # model.endpoints sets
    # kube-system/coredns's Corefile, parsed (its manifest stays in `others`)
    coredns: list[tuple[coredns.CoreDNS, Obj]] = field(default_factory=list)
    seen: dict[tuple[str, str | None, str], int] = field(default_factory=dict)


def plain(value: Any) -> Any:
    """LDict/LList to plain JSON-ready dicts and lists (state.json stores Manifest bodies)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, datetime.date | bytes):
        return str(value)
    return value


def parse_documents(col: Collector, docs: list[Document]) -> Parsed:
    out = Parsed()
    for d in docs:
        if not isinstance(d.value, LDict):
            col.error(d.line, "", f"document {d.index + 1} is {describe(d.value)}, not a "
                      "mapping", "each document is one object with apiVersion, kind, metadata")
            continue
        _dispatch(Obj(col, d.value, "", d.line), out)
    return out


def _dispatch(doc: Obj, out: Parsed) -> None:
    api = doc.str("apiVersion", required=True)
    kind = doc.str("kind", required=True)
    if api is None or kind is None:
        return
    if api.split("/")[0] == "emunet" or kind == "Cluster":
        if kind != "Cluster":
            doc.error("kind", f"unknown emunet kind {kind!r}", 'the emunet kind is "Cluster"')
        elif api != cluster.CLUSTER_API_VERSION:
            doc.error("apiVersion", f"unknown apiVersion {api!r} for Cluster",
                      f"use apiVersion: {cluster.CLUSTER_API_VERSION}")
        else:
            out.clusters.append((cluster.parse_cluster(doc), doc))
        return
    if kind == "NetworkPolicy":
        if api != NETPOL_API_VERSION:
            doc.error("apiVersion", f"{kind} is apiVersion {NETPOL_API_VERSION}, not {api!r}",
                      f"use apiVersion: {NETPOL_API_VERSION}")
        elif (pol := parse_network_policy(doc)) is not None:
            _add(doc, out, kind, pol)
        return
    expected = (API_VERSIONS.get(kind, "v1") if kind in IMPLEMENTED
                else NOT_YET.get(kind, (None,))[0])
    if expected is not None and api != expected:
        doc.error("apiVersion", f"{kind} is apiVersion {expected}, not {api!r}",
                  f"use apiVersion: {expected}")
        return
    if kind in IMPLEMENTED:
        obj = IMPLEMENTED[kind](doc)
        if obj is not None:
            _add(doc, out, kind, obj)
        return
    if kind == "List":
        doc.error("kind", "kind List is not supported",
                  "write each object as its own document, separated by ---")
        return
    group = api.split("/")[0] if "/" in api else ""
    if kind not in NOT_YET and group in _KNOWN_GROUPS:
        doc.error("kind", f"unknown kind {kind!r} for apiVersion {api}",
                  suggest(kind, [*IMPLEMENTED, *NOT_YET], noun="kinds"))
        return
    if not _API_VERSION.fullmatch(api):
        doc.error("apiVersion", f"{api!r} is not a Kubernetes apiVersion",
                  "write group/version, e.g. apps/v1, or v1 for core kinds")
        return
    if not _KIND.fullmatch(kind):
        doc.error("kind", f"{kind!r} is not a Kubernetes kind", "kinds are CamelCase names")
        return
    _other(doc, out, api, kind)


def _other(doc: Obj, out: Parsed, api: str, kind: str) -> None:
    """A kind emunet does not implement: check the common shape, keep it, warn."""
    namespaced, verb = NOT_YET.get(kind, (api, True, "used"))[1:]
    meta = doc.map("metadata", required=True)
    if meta is None:
        return
    name = meta.str("name", required=True, check=names.dns1123_subdomain)
    namespace = meta.str("namespace", check=names.dns1035_label) if namespaced else None
    if namespaced and namespace is None and not meta.has("namespace"):
        namespace = "default"
    meta.str_map("labels", names.label_key, names.label_value)
    if name is None or (namespaced and namespace is None):
        return
    policy = None
    if kind == cilium.KIND:
        policy = cilium.parse(doc, namespace or "default", name)
        if policy is None:
            return  # located errors reported: a policy emunet cannot enforce is never kept
    dns = None
    if kind == "ConfigMap" and (namespace, name) == (coredns.KUBE_SYSTEM, coredns.CONFIGMAP):
        dns = _corefile(doc)
        if dns is None:
            return  # a Corefile the responder cannot run is never kept (CoreDNS would not start)
    m = model.Manifest(api_version=api, kind=kind, namespace=namespace, name=name,
                       body=plain(doc.data), loc=kube.loc(doc))
    if not _add(doc, out, kind, m):
        return
    if policy is not None:
        out.cilium.append((policy, doc))  # the manifest is kept too: `get cnp -o json` shows it
    elif dns is not None:
        out.coredns.append((dns, doc))  # and the manifest, for `kubectl get cm coredns`
    else:
        who = f"{namespace}/{name}" if namespace else name
        doc.col.warn(doc.line, f"{kind} {who}: not {verb} yet (emunet does not implement "
                     f"{kind} yet)")


def _corefile(doc: Obj) -> coredns.CoreDNS | None:
    """The Corefile of kube-system/coredns, what emunet's responder runs (emunet.dns); errors
    and warnings at the file line of the Corefile line (block scalars), else at data.Corefile."""
    data = doc.map("data", required=True)
    if data is None:
        return None
    text = data.str("Corefile", required=True)
    if text is None:
        return None
    key_line = data.line_of("Corefile")
    first = getattr(data.data, "block_lines", {}).get("Corefile")

    def where(n: int) -> int:
        return first + n - 1 if first else key_line

    def warn(n: int, message: str) -> None:
        doc.col.warn(where(n), f"data.Corefile: Corefile line {n}: {message}")

    try:
        return corefile.settings(text, warn)
    except corefile.Problem as e:
        doc.col.error(where(e.line), data.sub("Corefile"),
                      f"Corefile line {e.line}: {e.message}", e.hint)
        return None


def _add(doc: Obj, out: Parsed, kind: str, obj: Any) -> bool:
    namespace = getattr(obj, "namespace", None) if kind != "Namespace" else None
    key = (kind, namespace, obj.name)
    if key in out.seen:
        who = f"{namespace}/{obj.name}" if namespace else obj.name
        line, path = at(doc, "metadata", "name")
        doc.col.error(line, path, f"duplicate {kind} {who} (first on line {out.seen[key]})",
                      "each object may appear once per file")
        return False
    out.seen[key] = at(doc, "metadata", "name")[0]
    if kind == "NetworkPolicy":
        out.policies.append((obj, doc))
        return True
    target = {"Namespace": out.namespaces, "Pod": out.pods, "Service": out.services,
              "Deployment": out.deployments, "Endpoints": out.endpoints,
              "EndpointSlice": out.endpoints}
    target.get(kind, out.others).append((obj, doc))
    return True
