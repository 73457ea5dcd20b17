"""Subresources: pods/log (follow, tailLines, previous), pods/exec and pods/attach (WebSocket or
SPDY, emunet.api.podexec, emunet.api.podattach), pods/portforward (SPDY, emunet.api.portforward),
pods/status, services/status, deployments/status and deployments/scale.

Logs are the files the supervisor's workloads write (the ones `emunet logs` reads); a follow
ends when the pod leaves the view, as `kubectl logs -f` ends when its container does.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from aiohttp import web

from emunet import naming
from emunet.api import podattach, podexec, portforward, portforwardws, status
from emunet.api.target import Target, container_of, pod_of
from emunet.api.view import View
from emunet.cluster.workloads import log_appended, log_path

FOLLOW_POLL = 0.2


async def subresource(request: web.Request, view: View, t: Target) -> web.StreamResponse:
    plural, sub = t.res.plural, t.sub
    if plural == "pods" and sub == "log" and request.method == "GET":
        return await logs(request, view, t)
    if plural == "pods" and sub == "exec":
        return await podexec.serve(request, view, t, pod_of(view, t))
    if plural == "pods" and sub == "attach":
        return await podattach.serve(request, view, t, pod_of(view, t))
    if plural == "pods" and sub == "portforward" and request.method in ("GET", "POST"):
        pod = pod_of(view, t)
        uid = pod["metadata"]["uid"]

        def alive() -> bool:
            now = view.objs.get("pods", {}).get(t.key)
            return now is not None and now["metadata"]["uid"] == uid
        netns = view.state.pods[t.key].netns
        if request.headers.get("Upgrade", "").lower() == "websocket" and \
                portforwardws.offered(request):  # the Python client's channel protocol
            return await portforwardws.serve(request, portforward.Forwarder(netns, pod),
                                             portforward.session_name(pod),
                                             portforwardws.ports(request), alive)
        return await portforward.serve(request, netns, pod, alive)
    if sub == "status" and request.method == "GET":
        obj = view.objs.get(plural, {}).get(t.key)
        if obj is None:
            raise status.not_found(plural, t.name or "", t.res.group)
        return web.json_response(obj)
    if plural == "deployments" and sub == "scale" and request.method == "GET":
        obj = view.objs.get("deployments", {}).get(t.key)
        if obj is None:
            raise status.not_found(plural, t.name or "", t.res.group)
        return web.json_response(scale(obj))
    if sub not in dict((s[0], s) for s in t.res.subresources):
        raise status.no_route()
    raise status.not_allowed(request.method.lower(), f"{plural}/{sub}")


def scale(dep: dict[str, Any]) -> dict[str, Any]:
    """autoscaling/v1 Scale of a Deployment (what `kubectl scale` reads and patches)."""
    sel = ",".join(f"{k}={v}" for k, v in sorted(
        dep["spec"]["selector"].get("matchLabels", {}).items()))
    m = dep["metadata"]
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: m[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                           "creationTimestamp") if k in m},
            "spec": {"replicas": dep["spec"]["replicas"]},
            "status": {"replicas": dep["status"].get("replicas", 0), "selector": sel}}


def _tail(data: bytes, lines: int | None) -> bytes:
    if lines is None or lines < 0:
        return data
    return b"".join(data.splitlines(keepends=True)[-lines:]) if lines else b""


async def logs(request: web.Request, view: View, t: Target) -> web.StreamResponse:
    pod = pod_of(view, t)
    container = container_of(pod, request.query.get("container"))
    key = t.key
    q = request.query
    try:
        tail = int(q["tailLines"]) if "tailLines" in q else None
    except ValueError:
        raise status.bad_request(f"invalid tailLines {q['tailLines']!r}") from None
    if q.get("previous") in ("true", "1"):
        restarts = sum(c.get("restartCount", 0) for c in pod["status"]["containerStatuses"])
        if not restarts:
            raise status.bad_request(f'previous terminated container "{container}" in pod '
                                     f'"{key[1]}" not found')
    run_dir = view.path.parent if view.path else naming.run_dir()
    path: Path = log_path(run_dir / "logs", view.state.pods[key], container)
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        data = b""
    resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    pos = len(data)
    with contextlib.suppress(ConnectionError):
        await resp.write(_tail(data, tail))
        while q.get("follow") in ("true", "1"):
            await asyncio.sleep(FOLLOW_POLL)
            if key not in view.objs.get("pods", {}):
                break
            more = log_appended(path, pos)
            if more is None:
                break
            if more:
                pos += len(more)
                await resp.write(more)
        await resp.write_eof()
    return resp
