"""The object as written, under the object as derived: what a write starts from and keeps.

emunet models only the fields it acts on, so an object derived from the state (objects.py,
apps.py) lacks what it ignores (annotations such as kubectl's last-applied-configuration,
`imagePullPolicy` as the user wrote it, ...). The state keeps the body of the last write through
the API (`ClusterState.manifests`, with the API server's own fields stripped); `overlay` fills
the derived object's gaps from it, the derived values winning wherever both say something, so
the state stays the only truth for what emunet does, and kubectl's three-way merge finds the
fields it applied (an unchanged re-apply is `unchanged`).

`body` is the other direction: the live object as a manifest the config loader accepts (what
a patch is applied to, then validated and applied like any file): the fields the API server
sets itself (metadata.uid, status, ...; k8s.io/apimachinery ObjectMeta "Read-only") removed.
"""

from __future__ import annotations

import copy
from typing import Any

from emunet.state.cluster import ClusterState

# Maps the state owns whole: a label removed by `emunet label` must not come back from the body
_OWNED = {"labels", "matchLabels", "selector"}
# Defaults the derived objects fill in for fields emunet accepts and does not act on: the value
# as written wins (else kubectl's three-way merge would re-send it on every apply)
_DEFAULTED = {"imagePullPolicy", "terminationMessagePath", "terminationMessagePolicy",
              "restartPolicy", "dnsPolicy", "schedulerName", "serviceAccountName",
              "terminationGracePeriodSeconds", "ipFamilies", "ipFamilyPolicy",
              "internalTrafficPolicy", "revisionHistoryLimit", "progressDeadlineSeconds"}
SERVER_META = ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
               "deletionGracePeriodSeconds", "managedFields", "selfLink", "ownerReferences")
# annotations the server (the deployment controller) sets: not the user's
SERVER_ANNOTATIONS = ("deployment.kubernetes.io/revision",)


def key_of(kind: str, namespace: str | None, name: str) -> str:
    """The state's object key (ClusterState.created's form): `<kind>/<namespace>/<name>`."""
    return f"{kind}/{namespace or ''}/{name}"


def _fill(derived: Any, written: Any) -> Any:
    if isinstance(derived, dict) and isinstance(written, dict):
        for k, v in written.items():
            if k not in derived or k in _DEFAULTED:
                derived[k] = copy.deepcopy(v)
            elif k not in _OWNED:
                derived[k] = _fill(derived[k], v)
        return derived
    if (isinstance(derived, list) and isinstance(written, list)
            and len(derived) == len(written)):
        return [_fill(d, w) for d, w in zip(derived, written, strict=True)]
    return derived


def overlay(derived: dict[str, Any], written: dict[str, Any] | None) -> dict[str, Any]:
    """`derived` (changed in place) with the gaps filled from the body as written."""
    if not written:
        return derived
    md, wmd = derived.setdefault("metadata", {}), written.get("metadata") or {}
    if wmd.get("annotations"):
        md["annotations"] = {**md.get("annotations", {}), **wmd["annotations"]}
    rest = {k: v for k, v in written.items() if k not in ("metadata", "status")}
    _fill(derived, rest)
    return derived


def body(st: ClusterState, live: dict[str, Any]) -> dict[str, Any]:
    """The live object as a manifest: without status and the server's metadata, and without
    what the cluster decided unasked (a pod's spec.nodeName, a Service's clusterIP)."""
    out = {k: copy.deepcopy(v) for k, v in live.items() if k != "status"}
    md = out.get("metadata") or {}
    for k in SERVER_META:
        md.pop(k, None)
    ann = {k: v for k, v in (md.get("annotations") or {}).items()
           if k not in SERVER_ANNOTATIONS}
    if ann:
        md["annotations"] = ann
    else:
        md.pop("annotations", None)
    kind, spec = out.get("kind"), out.get("spec")
    if kind == "Pod" and isinstance(spec, dict):
        ps = st.pods.get((md.get("namespace") or "default", md.get("name") or ""))
        if ps is None or not ps.pod.node_name:
            spec.pop("nodeName", None)
    if kind == "Service" and isinstance(spec, dict):
        ss = st.services.get((md.get("namespace") or "default", md.get("name") or ""))
        if ss is None or not ss.service.cluster_ip:  # allocated, not asked for
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        if ss is None or not ss.service.ip_families:  # settled by the server, not asked for
            spec.pop("ipFamilies", None)
        if ss is None or ss.service.ip_family_policy is None:
            spec.pop("ipFamilyPolicy", None)
    if kind == "Deployment" and isinstance(spec, dict):
        tmd = (spec.get("template") or {}).get("metadata")
        if isinstance(tmd, dict):
            tmd.pop("creationTimestamp", None)
    if kind == "Namespace":
        out.pop("spec", None)
    return out


def clean(obj: dict[str, Any]) -> dict[str, Any]:
    """What the state keeps of a write: the body without status and the server's metadata."""
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
    md = out.get("metadata") or {}
    for k in SERVER_META:
        md.pop(k, None)
    return out
