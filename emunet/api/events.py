"""core/v1 Events from the supervisor's event log (the `events` control op).

Events live in the supervisor's memory (emunet.cluster.events), not in the state file; the API
asks for them per request and shapes them as v1 Events: name `<object>.<hex nanoseconds>` as
the kubelet's recorder names them, involvedObject with the object's uid (so `kubectl describe`'s
`involvedObject.uid=` field selector finds them) and the component that would have reported
each reason upstream.
"""

from __future__ import annotations

import asyncio
from typing import Any

from emunet import control
from emunet.api.objects import rfc3339
from emunet.api.view import View

_KIND_PLURAL = {"Pod": "pods", "Service": "services", "Deployment": "deployments",
                "ReplicaSet": "replicasets", "Namespace": "namespaces", "Node": "nodes"}
_API_VERSION = {"Deployment": "apps/v1", "ReplicaSet": "apps/v1"}
_SOURCE = {"Scheduled": "default-scheduler", "ScalingReplicaSet": "deployment-controller",
           "SuccessfulCreate": "replicaset-controller", "SuccessfulDelete":
           "replicaset-controller", "EndpointsChanged": "endpoint-controller"}


def to_event(view: View, e: dict[str, Any]) -> dict[str, Any]:
    ns, kind, name = e["namespace"], e["kind"], e["name"]
    obj = view.objs.get(_KIND_PLURAL.get(kind, ""), {}).get((ns, name))
    inv: dict[str, Any] = {"kind": kind, "namespace": ns, "name": name,
                           "apiVersion": _API_VERSION.get(kind, "v1")}
    node = None
    if obj is not None:
        inv["uid"] = obj["metadata"]["uid"]
        inv["resourceVersion"] = obj["metadata"]["resourceVersion"]
        node = (obj.get("spec") or {}).get("nodeName")
    component = _SOURCE.get(e["reason"], "kubelet")
    source = {"component": component, **({"host": node} if component == "kubelet" and node
                                         else {})}
    ev_name = f"{name}.{int(e['first'] * 1e9):x}"
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": ev_name, "namespace": ns, "uid": f"emunet-{ev_name}",
                         "resourceVersion": str(view.rv),
                         "creationTimestamp": rfc3339(e["first"])},
            "involvedObject": inv, "reason": e["reason"], "message": e["message"],
            "type": e["type"], "count": e["count"], "source": source,
            "firstTimestamp": rfc3339(e["first"]), "lastTimestamp": rfc3339(e["last"]),
            "reportingComponent": component, "reportingInstance": node or ""}


async def list_events(view: View, namespace: str | None) -> list[dict[str, Any]]:
    """The supervisor's events (oldest first) as v1 Events; none when it does not answer."""
    try:
        res = await asyncio.to_thread(control.request, "events", timeout=5,
                                      namespace=namespace)
    except (control.ControlError, OSError):
        return []
    return [to_event(view, e) for e in res["events"]]
