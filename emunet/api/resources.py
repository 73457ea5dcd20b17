"""The resources the API serves and their discovery documents (legacy and aggregated).

One table of resources drives `/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>` and the
aggregated `apidiscovery.k8s.io/v2` form (KEP-3352; v2beta1, the same fields, for kubectl <=
1.29), so `kubectl api-resources`, short names (`svc`, `deploy`, `netpol`, `cnp`) and `kubectl
get all` (the `all` category) follow from it.
Shapes: k8s.io/apimachinery/pkg/apis/meta/v1 APIResourceList, APIGroupList;
k8s.io/api/apidiscovery/v2 APIGroupDiscoveryList.
"""

from __future__ import annotations

from dataclasses import dataclass

READ = ("get", "list", "watch")
WRITE = ("create", "delete", "deletecollection", "patch", "update")
ALL_VERBS = tuple(sorted(READ + WRITE))


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool = True
    short: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (name, kind, verbs)

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        return self.group_version


_POD_SUBS = (("log", "Pod", ("get",)), ("exec", "PodExecOptions", ("create", "get")),
             ("attach", "PodAttachOptions", ("create", "get")),
             ("portforward", "PodPortForwardOptions", ("create", "get")),
             ("status", "Pod", ("get", "patch", "update")))
_SCALE = ("scale", "Scale", ("get", "patch", "update"))

RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "namespaces", "namespace", "Namespace", namespaced=False, short=("ns",),
             verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    Resource("", "v1", "nodes", "node", "Node", namespaced=False, short=("no",), verbs=READ),
    Resource("", "v1", "pods", "pod", "Pod", short=("po",), categories=("all",),
             subresources=_POD_SUBS),
    # upstream's Service REST storage has no deletecollection (kubectl api-resources -o wide)
    Resource("", "v1", "services", "service", "Service", short=("svc",), categories=("all",),
             verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
             subresources=(("status", "Service", ("get", "patch", "update")),)),
    Resource("", "v1", "endpoints", "endpoints", "Endpoints", short=("ep",)),
    Resource("", "v1", "events", "event", "Event", short=("ev",), verbs=("get", "list")),
    # writable: kube-system/coredns, the Corefile of emunet's DNS responder (emunet.api.writes)
    Resource("", "v1", "configmaps", "configmap", "ConfigMap", short=("cm",),
             verbs=(*READ, "patch", "update")),
    Resource("apps", "v1", "deployments", "deployment", "Deployment", short=("deploy",),
             categories=("all",),
             subresources=(_SCALE, ("status", "Deployment", ("get", "patch", "update")))),
    Resource("apps", "v1", "replicasets", "replicaset", "ReplicaSet", short=("rs",),
             categories=("all",), verbs=READ),
    Resource("networking.k8s.io", "v1", "networkpolicies", "networkpolicy", "NetworkPolicy",
             short=("netpol",)),
    Resource("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice"),
    Resource("cilium.io", "v2", "ciliumnetworkpolicies", "ciliumnetworkpolicy",
             "CiliumNetworkPolicy", short=("cnp", "ciliumnp"), categories=("cilium",)),
)

BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
BY_KIND = {(r.group, r.kind): r for r in RESOURCES}


def groups() -> dict[str, list[str]]:
    """group name -> versions, in first-seen order (the core group "" first)."""
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        vs = out.setdefault(r.group, [])
        if r.version not in vs:
            vs.append(r.version)
    return out


def _entry(r: Resource) -> dict:
    e = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
         "kind": r.kind, "verbs": list(r.verbs)}
    if r.short:
        e["shortNames"] = list(r.short)
    if r.categories:
        e["categories"] = list(r.categories)
    return e


def resource_list(group: str, version: str) -> dict | None:
    """APIResourceList of one group-version (None: not served)."""
    items: list[dict] = []
    for r in RESOURCES:
        if (r.group, r.version) != (group, version):
            continue
        items.append(_entry(r))
        for name, kind, verbs in r.subresources:
            sub = {"name": f"{r.plural}/{name}", "singularName": "", "namespaced": r.namespaced,
                   "kind": kind, "verbs": list(verbs)}
            if name == "scale":
                sub.update(group="autoscaling", version="v1")
            items.append(sub)
    if not items:
        return None
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": items}


def api_versions(server: str) -> dict:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}]}


def group_list() -> dict:
    out = []
    for g, vs in groups().items():
        if not g:
            continue
        versions = [{"groupVersion": f"{g}/{v}", "version": v} for v in vs]
        out.append({"name": g, "versions": versions, "preferredVersion": versions[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": out}


AGGREGATED_VERSIONS = ("v2", "v2beta1")  # v2beta1: kubectl <= 1.29 (same fields as v2)


def aggregated_ct(version: str = "v2") -> str:
    return f"application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"


def aggregated(core: bool, version: str = "v2") -> dict:
    """APIGroupDiscoveryList for `/api` (core) or `/apis` (the named groups)."""
    items = []
    for g, vs in groups().items():
        if bool(g) == core:
            continue
        versions = []
        for v in vs:
            res = []
            for r in RESOURCES:
                if (r.group, r.version) != (g, v):
                    continue
                d = {"resource": r.plural, "responseKind": {"group": r.group, "version": v,
                                                            "kind": r.kind},
                     "scope": "Namespaced" if r.namespaced else "Cluster",
                     "singularResource": r.singular, "verbs": list(r.verbs)}
                if r.short:
                    d["shortNames"] = list(r.short)
                if r.categories:
                    d["categories"] = list(r.categories)
                subs = []
                for name, kind, verbs in r.subresources:
                    rk = ({"group": "autoscaling", "version": "v1", "kind": kind}
                          if name == "scale" else {"group": r.group, "version": v, "kind": kind})
                    subs.append({"subresource": name, "responseKind": rk, "verbs": list(verbs)})
                if subs:
                    d["subresources"] = subs
                res.append(d)
            versions.append({"version": v, "resources": res, "freshness": "Current"})
        items.append({"metadata": {"name": g, "creationTimestamp": None}, "versions": versions})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": f"apidiscovery.k8s.io/{version}",
            "metadata": {}, "items": items}
