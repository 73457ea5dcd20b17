"""Server-side printing: `meta.k8s.io/v1 Table` responses, the columns kubectl shows.

kubectl asks every `get` for `as=Table` and prints the columns the server chooses (upper-cased;
`priority: 1` ones only with `-o wide`). The columns and cell formats follow upstream's printers
(kubernetes pkg/printers/internalversion/printers.go: printPod, printService, printEndpoints,
printDeployment, ...; for the CiliumNetworkPolicy CRD its additionalPrinterColumns). Cells are
computed from the API objects (emunet.api.objects), so a watch event's row is the list's row.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from typing import Any

from emunet.cluster.events import human_duration

Obj = dict[str, Any]
NONE = "<none>"


def age(ts: str | None, now: float) -> str:
    """translateTimestampSince: the age as apimachinery's HumanDuration, <unknown> if unset."""
    if not ts:
        return "<unknown>"
    t = calendar.timegm(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ"))
    return human_duration(now - t)


def _labels(m: dict[str, str] | None) -> str:
    """labels.FormatLabels: sorted k=v, comma-separated; <none> when empty."""
    return ",".join(f"{k}={v}" for k, v in sorted((m or {}).items())) or NONE


def _selector(sel: Obj | None) -> str:
    """metav1.FormatLabelSelector (empty selector: <none>)."""
    if not sel:
        return NONE
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for r in sel.get("matchExpressions") or []:
        op, vals = r["operator"], ",".join(r.get("values") or [])
        parts.append({"In": f"{r['key']} in ({vals})", "NotIn": f"{r['key']} notin ({vals})",
                      "Exists": r["key"], "DoesNotExist": f"!{r['key']}"}.get(op, r["key"]))
    return ",".join(parts) or NONE


def _more(items: list[str], limit: int = 3) -> str:
    """formatEndpoints' cut: the first three, then ` + N more...`."""
    if not items:
        return NONE
    out = ",".join(items[:limit])
    return out + (f" + {len(items) - limit} more..." if len(items) > limit else "")


def _pod(o: Obj, now: float) -> list:
    st, spec = o.get("status", {}), o.get("spec", {})
    cs = st.get("containerStatuses") or []
    total = len(spec.get("containers", []))
    ready = sum(1 for c in cs if c.get("ready"))
    restarts = sum(c.get("restartCount", 0) for c in cs)
    reason = st.get("reason") or st.get("phase", "Pending")
    has_running = False
    for c in reversed(cs):  # printPod reads them last to first: the first one's reason wins
        waiting = (c.get("state") or {}).get("waiting")
        term = (c.get("state") or {}).get("terminated")
        if waiting and waiting.get("reason"):
            reason = waiting["reason"]
        elif term:
            reason = term.get("reason") or f"ExitCode:{term.get('exitCode', 0)}"
        elif c.get("ready") and (c.get("state") or {}).get("running") is not None:
            has_running = True
    if reason == "Completed" and has_running:  # one container done, another still serving
        ready_cond = any(x.get("type") == "Ready" and x.get("status") == "True"
                         for x in st.get("conditions") or [])
        reason = "Running" if ready_cond else "NotReady"
    if o["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return [o["metadata"]["name"], f"{ready}/{total}", reason, str(restarts),
            age(o["metadata"].get("creationTimestamp"), now), st.get("podIP") or NONE,
            spec.get("nodeName") or NONE, NONE, NONE]


def _node(o: Obj, now: float) -> list:
    st = o.get("status", {})
    cond = next((c for c in st.get("conditions", []) if c["type"] == "Ready"), None)
    status = "Ready" if cond and cond["status"] == "True" else "NotReady"
    roles = sorted(k.split("/", 1)[1] for k in o["metadata"].get("labels", {})
                   if k.startswith("node-role.kubernetes.io/")) or [NONE]
    addr = {a["type"]: a["address"] for a in st.get("addresses", [])}
    info = st.get("nodeInfo", {})
    return [o["metadata"]["name"], status, ",".join(roles),
            age(o["metadata"].get("creationTimestamp"), now), info.get("kubeletVersion", ""),
            addr.get("InternalIP", NONE), addr.get("ExternalIP", NONE),
            info.get("osImage", "<unknown>"), info.get("kernelVersion", "<unknown>"),
            info.get("containerRuntimeVersion", "<unknown>")]


def _namespace(o: Obj, now: float) -> list:
    return [o["metadata"]["name"], o.get("status", {}).get("phase", "Active"),
            age(o["metadata"].get("creationTimestamp"), now)]


def _service(o: Obj, now: float) -> list:
    spec = o["spec"]
    kind = spec.get("type", "ClusterIP")
    external = {"LoadBalancer": "<pending>", "ExternalName": spec.get("externalName")}.get(
        kind) or NONE
    ports = ",".join(f"{p['port']}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/"
                     f"{p.get('protocol', 'TCP')}" for p in spec.get("ports", [])) or NONE
    return [o["metadata"]["name"], kind, spec.get("clusterIP") or NONE, external, ports,
            age(o["metadata"].get("creationTimestamp"), now), _labels(spec.get("selector"))]


def _endpoints(o: Obj, now: float) -> list:
    # kubectl's formatEndpoints joins with net.JoinHostPort: an IPv6 address in brackets
    eps = [(f"[{a['ip']}]" if ":" in a["ip"] else a["ip"]) + f":{p['port']}"
           for s in o.get("subsets") or []
           for p in s.get("ports", []) for a in s.get("addresses") or []]
    return [o["metadata"]["name"], _more(eps), age(o["metadata"].get("creationTimestamp"), now)]


def _slice(o: Obj, now: float) -> list:
    ports = ",".join(str(p["port"]) for p in o.get("ports") or [] if p.get("port")) or "<unset>"
    addrs = [a for e in o.get("endpoints") or [] for a in e.get("addresses", [])]
    return [o["metadata"]["name"], o.get("addressType", "IPv4"), ports,
            _more(addrs).replace(NONE, "<unset>"),
            age(o["metadata"].get("creationTimestamp"), now)]


def _containers(tmpl: Obj) -> tuple[str, str]:
    cs = (tmpl.get("spec") or {}).get("containers", [])
    return ",".join(c["name"] for c in cs), ",".join(c.get("image", "") for c in cs)


def _deployment(o: Obj, now: float) -> list:
    spec, st = o["spec"], o.get("status", {})
    names, images = _containers(spec.get("template", {}))
    return [o["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            st.get("updatedReplicas", 0), st.get("availableReplicas", 0),
            age(o["metadata"].get("creationTimestamp"), now), names, images,
            _selector(spec.get("selector"))]


def _replicaset(o: Obj, now: float) -> list:
    spec, st = o["spec"], o.get("status", {})
    names, images = _containers(spec.get("template", {}))
    return [o["metadata"]["name"], spec.get("replicas", 0), st.get("replicas", 0),
            st.get("readyReplicas", 0), age(o["metadata"].get("creationTimestamp"), now),
            names, images, _selector(spec.get("selector"))]


def _netpol(o: Obj, now: float) -> list:
    return [o["metadata"]["name"], _selector(o["spec"].get("podSelector")),
            age(o["metadata"].get("creationTimestamp"), now)]


def _cnp(o: Obj, now: float) -> list:
    valid = next((c["status"] for c in (o.get("status") or {}).get("conditions", [])
                  if c.get("type") == "Valid"), "")
    return [o["metadata"]["name"], age(o["metadata"].get("creationTimestamp"), now), valid]


def _configmap(o: Obj, now: float) -> list:
    return [o["metadata"]["name"], len(o.get("data") or {}) + len(o.get("binaryData") or {}),
            age(o["metadata"].get("creationTimestamp"), now)]


def _event(o: Obj, now: float) -> list:
    inv = o.get("involvedObject", {})
    last, first = o.get("lastTimestamp"), o.get("firstTimestamp")
    seen = age(last, now)
    if o.get("count", 1) > 1:
        seen += f" (x{o['count']} over {age(first, now)})"
    src = o.get("source", {})
    source = ", ".join(x for x in (src.get("component"), src.get("host")) if x)
    return [seen, o.get("type", ""), o.get("reason", ""),
            f"{inv.get('kind', '').lower()}/{inv.get('name', '')}",
            inv.get("fieldPath", ""), source, o.get("message", ""), age(first, now),
            o.get("count", 1), o["metadata"]["name"]]


def _cols(*spec: str) -> list[Obj]:
    """Column definitions from "Name[:type][!]" ("!": priority 1, shown with -o wide)."""
    out = []
    for s in spec:
        wide = s.endswith("!")
        name, _, kind = s.rstrip("!").partition(":")
        out.append({"name": name, "type": kind or "string",
                    "format": "name" if name == "Name" else "", "description": "",
                    "priority": 1 if wide else 0})
    return out


PRINTERS: dict[str, tuple[list[Obj], Callable[[Obj, float], list]]] = {
    "pods": (_cols("Name", "Ready", "Status", "Restarts", "Age", "IP!", "Node!",
                   "Nominated Node!", "Readiness Gates!"), _pod),
    "nodes": (_cols("Name", "Status", "Roles", "Age", "Version", "Internal-IP!",
                    "External-IP!", "OS-Image!", "Kernel-Version!", "Container-Runtime!"), _node),
    "namespaces": (_cols("Name", "Status", "Age"), _namespace),
    "services": (_cols("Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age",
                       "Selector!"), _service),
    "endpoints": (_cols("Name", "Endpoints", "Age"), _endpoints),
    "endpointslices": (_cols("Name", "AddressType", "Ports", "Endpoints", "Age"), _slice),
    "deployments": (_cols("Name", "Ready", "Up-to-date:integer", "Available:integer", "Age",
                          "Containers!", "Images!", "Selector!"), _deployment),
    "replicasets": (_cols("Name", "Desired:integer", "Current:integer", "Ready:integer", "Age",
                          "Containers!", "Images!", "Selector!"), _replicaset),
    "networkpolicies": (_cols("Name", "Pod-Selector", "Age"), _netpol),
    "ciliumnetworkpolicies": (_cols("Name", "Age:date", "Valid"), _cnp),
    "configmaps": (_cols("Name", "Data:integer", "Age"), _configmap),
    "events": (_cols("Last Seen", "Type", "Reason", "Object", "Subobject!", "Source!",
                     "Message", "First Seen!", "Count:integer!", "Name!"), _event),
}


def _row_object(o: Obj, include: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return o
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": o["metadata"]}


def table(plural: str, items: list[Obj], rv: str, now: float | None = None,
          include: str = "Metadata", columns: bool = True) -> Obj:
    """A Table of `items`; `include` is ?includeObject= (None, Metadata, Object)."""
    cols, row = PRINTERS[plural]
    t = time.time() if now is None else now
    rows = []
    for o in items:
        r: Obj = {"cells": row(o, t)}
        obj = _row_object(o, include)
        if obj is not None:
            r["object"] = obj
        rows.append(r)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
            "columnDefinitions": cols if columns else [], "rows": rows}
