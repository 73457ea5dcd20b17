"""The HTTP face: aiohttp routes for /version, discovery, the OpenAPI v3 stub, get/list/watch of
every resource and the writes (emunet.api.writes).

URLs follow the API server's layout (k8s.io/apiserver pkg/endpoints/installer.go):
`/api/v1[/namespaces/NS]/PLURAL[/NAME[/SUB]]` and the same under `/apis/GROUP/VERSION`.
Answers are JSON whatever the Accept header asks (kubectl accepts it, research §12); `as=Table`
in the Accept header gets a Table (emunet.api.tables). Subresources are served by their own
modules (logs, exec, port-forward); every error is a Status (emunet.api.status).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from emunet.api import events, openapi, portforward, resources, status, streams, watch, writes
from emunet.api.objects import VERSION
from emunet.api.resources import Resource
from emunet.api.selectors import SelectorError, field_selector, label_selector
from emunet.api.status import APIError
from emunet.api.tables import table
from emunet.api.target import Target, parse
from emunet.api.view import View

log = logging.getLogger("emunet.api")
VIEW: web.AppKey[View] = web.AppKey("view", View)
MAX_BODY = 3 * 1024 * 1024  # kube-apiserver's request size limit (3 MiB, etcd's 1.5 MiB x 2)


def wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except APIError as e:
        return status.response(e)
    except SelectorError as e:
        return status.response(status.bad_request(str(e)))
    except web.HTTPRequestEntityTooLarge:
        return status.response(APIError(413, "RequestEntityTooLarge",
                                        "the request body is too large"))
    except web.HTTPException:
        raise
    except Exception as e:  # one line in the log; the client gets a Status, not a traceback
        log.error("%s %s failed: %s: %s", request.method, request.path, type(e).__name__, e)
        return status.response(APIError(500, "InternalError",
                                        f"Internal error occurred: {type(e).__name__}: {e}"))


async def version(request: web.Request) -> web.Response:
    major, minor = VERSION.lstrip("v").split(".")[:2]
    return web.json_response({
        "major": major, "minor": minor, "gitVersion": VERSION, "gitCommit": "emunet",
        "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23",
        "compiler": "gc", "platform": "linux/amd64"})


def _aggregated(request: web.Request) -> str | None:
    """The aggregated discovery version the Accept header asks for, v2 before v2beta1 (kubectl
    <= 1.29 knows only v2beta1, the same document under an older apiVersion), None: legacy."""
    offered = [dict(p.strip().partition("=")[::2] for p in m.split(";")[1:])
               for m in request.headers.get("Accept", "").split(",")]
    versions = {o.get("v") for o in offered if o.get("g") == "apidiscovery.k8s.io"
                and o.get("as") == "APIGroupDiscoveryList"}
    return next((v for v in resources.AGGREGATED_VERSIONS if v in versions), None)


async def api_root(request: web.Request) -> web.Response:
    if version := _aggregated(request):
        return _aggregated_response(resources.aggregated(core=True, version=version))
    return web.json_response(resources.api_versions(request.host))


async def apis_root(request: web.Request) -> web.Response:
    if version := _aggregated(request):
        return _aggregated_response(resources.aggregated(core=False, version=version))
    return web.json_response(resources.group_list())


def _aggregated_response(doc: dict[str, Any]) -> web.Response:
    """Aggregated discovery (KEP-3352): two requests instead of one per group-version."""
    version = doc["apiVersion"].split("/")[1]
    return web.Response(body=json.dumps(doc).encode(),
                        headers={"Content-Type": resources.aggregated_ct(version)})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def core(request: web.Request) -> web.StreamResponse:
    parts = [p for p in request.match_info["tail"].split("/") if p]
    if not parts:
        return await api_root(request)
    if parts[0] != "v1":
        raise status.no_route()
    return await dispatch(request, "", "v1", parts[1:])


async def named(request: web.Request) -> web.StreamResponse:
    parts = [p for p in request.match_info["tail"].split("/") if p]
    if not parts:
        return await apis_root(request)
    if len(parts) == 1:
        versions = resources.groups().get(parts[0])
        if not versions or parts[0] == "":
            raise status.no_route()
        gvs = [{"groupVersion": f"{parts[0]}/{v}", "version": v} for v in versions]
        return web.json_response({"kind": "APIGroup", "apiVersion": "v1", "name": parts[0],
                                  "versions": gvs, "preferredVersion": gvs[0]})
    return await dispatch(request, parts[0], parts[1], parts[2:])


async def dispatch(request: web.Request, group: str, ver: str,
                   rest: list[str]) -> web.StreamResponse:
    if not rest:
        doc = resources.resource_list(group, ver)
        if doc is None:
            raise status.no_route()
        return web.json_response(doc)
    t = parse(group, ver, rest)
    if t.sub == "scale" and t.res.plural == "deployments" and request.method in ("PATCH",
                                                                                 "PUT"):
        return await writes.scale(request, request.app[VIEW], t)
    if t.sub is not None:
        return await streams.subresource(request, request.app[VIEW], t)
    if request.method != "GET":
        return await writes.serve(request, request.app[VIEW], t)
    if t.name is None:
        if request.query.get("watch") in ("true", "1"):
            return await watch.serve(request, request.app[VIEW], t.res, t.namespace)
        return await list_(request, t)
    return await get(request, t)


async def items_of(view: View, res: Resource, ns: str | None) -> list[dict[str, Any]]:
    if res.plural == "events":
        return await events.list_events(view, ns)
    objs = view.objs.get(res.plural, {})
    return [o for (ons, _), o in sorted(objs.items()) if ns is None or ons == ns]


async def list_(request: web.Request, t: Target) -> web.Response:
    view = request.app[VIEW]
    lsel = label_selector(request.query.get("labelSelector"))
    fsel = field_selector(request.query.get("fieldSelector"))
    items = [o for o in await items_of(view, t.res, t.namespace) if lsel(o) and fsel(o)]
    rv = str(view.rv)
    if wants_table(request):
        return web.json_response(table(t.res.plural, items, rv,
                                       include=request.query.get("includeObject", "Metadata")))
    return web.json_response({"apiVersion": t.res.api_version, "kind": f"{t.res.kind}List",
                              "metadata": {"resourceVersion": rv}, "items": items})


async def find(view: View, t: Target) -> dict[str, Any]:
    assert t.name is not None
    if t.res.plural == "events":
        for e in await events.list_events(view, t.namespace):
            if e["metadata"]["name"] == t.name:
                return e
    else:
        obj = view.objs.get(t.res.plural, {}).get(t.key)
        if obj is not None:
            return obj
    raise status.not_found(t.res.plural, t.name, t.res.group)


async def get(request: web.Request, t: Target) -> web.Response:
    view = request.app[VIEW]
    obj = await find(view, t)
    if wants_table(request):
        return web.json_response(table(t.res.plural, [obj], str(view.rv),
                                       include=request.query.get("includeObject", "Metadata")))
    return web.json_response(obj)


async def openapi_v3(request: web.Request) -> web.Response:
    tail = request.match_info.get("tail", "").strip("/")
    doc = openapi.index() if not tail else openapi.document(tail)
    if doc is None:
        raise status.no_route()
    return web.json_response(doc)


async def not_found(request: web.Request) -> web.Response:
    raise status.no_route()


def make_app(view: View) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=MAX_BODY)
    app[VIEW] = view
    app[portforward.SESSIONS] = set()
    app.on_shutdown.append(portforward.shutdown)
    app.router.add_get("/version", version)
    for path in ("/healthz", "/livez", "/readyz"):
        app.router.add_get(path, healthz)
    app.router.add_get("/api", api_root)
    app.router.add_get("/apis", apis_root)
    app.router.add_get("/openapi/v3", openapi_v3)
    app.router.add_get("/openapi/v3/{tail:.*}", openapi_v3)
    app.router.add_route("*", "/api/{tail:.*}", core)
    app.router.add_route("*", "/apis/{tail:.*}", named)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
