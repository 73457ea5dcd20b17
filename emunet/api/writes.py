"""Writes: create (POST), update (PUT), patch (PATCH), delete (DELETE) and the scale
subresource, every one carried out by the supervisor.

The API server keeps no objects of its own (DESIGN.md section 7): a write computes the whole
intended object (a patch is applied to the live object as a manifest, emunet.api.stored.body),
then hands it to the supervisor's `apply_objects` control op, which runs the same loader,
validation and all-or-nothing apply as `emunet apply -f` (emunet.cluster.apply). A mistake
comes back with its field paths and is answered as the API server does
(k8s.io/apiserver pkg/endpoints/handlers: create.go, update.go, patch.go, delete.go):
422 Invalid with the causes, 400 for an unknown field under fieldValidation=Strict
(`strict decoding error`), 404 for a missing namespace, 409 AlreadyExists; nothing changes.
After a write the view reloads the state the supervisor published, so the answer (and the
next GET) shows the object as stored. `dryRun=All` (kubectl diff, apply --dry-run=server) runs
the same apply on a copy of the state in this process and answers the object it would store.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import yaml
from aiohttp import web

from emunet import control
from emunet.api import deleteopts, patch, status, stored
from emunet.api.resources import Resource
from emunet.api.selectors import field_selector, label_selector
from emunet.api.streams import scale as scale_of
from emunet.api.target import Target
from emunet.api.view import View, build
from emunet.cluster.apply import apply_objects
from emunet.config import ConfigError
from emunet.model.coredns import CONFIGMAP
from emunet.state import codec
from emunet.state.cluster import KUBE_SYSTEM, StateError

WRITABLE = {"namespaces", "pods", "services", "deployments", "networkpolicies",
            "ciliumnetworkpolicies", "endpoints", "endpointslices", "configmaps"}
PATCH_TYPES = [patch.JSON_PATCH, patch.JSON_MERGE, patch.STRATEGIC, patch.APPLY]
_LOC = re.compile(r"^<request>:\d+: ")  # the loader's `file:line: ` (one JSON document a line)
_TIMEOUT = 120.0
# Upstream deletes a namespace's objects while the namespace is Terminating, so `kubectl delete
# -f` of a file listing the namespace first still deletes each object (200). emunet deletes
# them at once; for this long their own DELETE is answered as upstream's would be.
CASCADE_MEMORY = 30.0  # a write that adds pods waits for their namespaces and workloads


async def serve(request: web.Request, view: View, t: Target) -> web.StreamResponse:
    """POST on a collection; PUT, PATCH, DELETE on an object."""
    if t.res.plural not in WRITABLE:
        raise status.not_allowed(request.method.lower(), t.res.plural)
    dry = request.query.getall("dryRun", [])
    if any(v != "All" for v in dry):  # the only value upstream accepts (metav1.DryRunAll)
        raise status.bad_request(f"Invalid dryRun value {dry!r}: only All is supported")
    if t.res.plural in ("services", "endpoints", "endpointslices") \
            and t.key == ("default", "kubernetes"):
        raise status.forbidden(t.res.plural, "kubernetes", "it is the API server's own, "
                               "kept by its endpoint reconciler (emunet.state.plan)")
    if t.res.plural == "configmaps" and (t.key != (KUBE_SYSTEM, CONFIGMAP)
                                         or request.method not in ("PUT", "PATCH")):
        # the one ConfigMap emunet acts on, and it always exists (k3s's addon): edit it
        raise status.forbidden("configmaps", t.name or "", "emunet keeps one ConfigMap, "
                               "kube-system/coredns (the Corefile of its DNS responder), and "
                               "it can be updated, not created or deleted")
    if t.name is None:
        if request.method == "POST":
            return await create(request, view, t)
        if request.method == "DELETE" and "deletecollection" in t.res.verbs:
            return await delete_collection(request, view, t)
        raise status.not_allowed(request.method.lower(), t.res.plural)
    if request.method == "PUT":
        return await update(request, view, t)
    if request.method == "PATCH":
        return await patch_(request, view, t)
    if request.method == "DELETE":
        return await delete(request, view, t)
    raise status.not_allowed(request.method.lower(), t.res.plural)


async def read_json(request: web.Request, yaml_ok: bool = False, list_ok: bool = False
                    ) -> Any:
    """The request body as one JSON object (YAML too for an apply patch, a list for a JSON
    patch); the size limit is the app's client_max_size (413 above it)."""
    raw = await request.read()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        if not yaml_ok:
            raise status.bad_request(f"the body is not valid JSON: {e}") from None
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as ye:
            raise status.bad_request(f"the body is not valid YAML: {ye}") from None
    if not isinstance(data, dict) and not (list_ok and isinstance(data, list)):
        raise status.bad_request("the body must be a JSON " + ("list" if list_ok else "object"))
    return data


def precondition(res: Resource, name: str, obj: dict[str, Any], live: dict[str, Any]) -> None:
    """An update naming a resourceVersion must name the current one (optimistic
    concurrency, k8s API conventions "Concurrency Control and Consistency"): else 409."""
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    if rv and rv != live["metadata"].get("resourceVersion"):
        raise status.conflict(res.plural, name, res.group)


def identity(t: Target, obj: dict[str, Any], name: str | None) -> dict[str, Any]:
    """apiVersion and kind from the URL when absent (the Python client sends neither), the
    namespace from the URL; a body that names another object is a 400, as upstream says."""
    res = t.res
    obj.setdefault("apiVersion", res.api_version)
    obj.setdefault("kind", res.kind)
    if obj["apiVersion"] != res.api_version or obj["kind"] != res.kind:
        raise status.bad_request(f"the API version in the data ({obj['apiVersion']}) or the "
                                 f"kind ({obj['kind']}) does not match the expected "
                                 f"{res.api_version} {res.kind}")
    md = obj.get("metadata")
    if md is None:
        md = obj["metadata"] = {}
    if not isinstance(md, dict):
        raise status.bad_request("metadata must be an object")
    if res.namespaced:
        ns = md.setdefault("namespace", t.namespace or "default")
        if t.namespace is not None and ns != t.namespace:
            raise status.bad_request("the namespace of the provided object does not match "
                                     "the namespace sent on the request")
    else:
        md.pop("namespace", None)
    if name is not None:
        md.setdefault("name", name)
        if md["name"] != name:
            raise status.bad_request("the name of the object "
                                     f"({md['name']}) does not match the name on the URL ({name})")
    if not isinstance(md.get("name"), str) or not md["name"]:
        raise status.invalid(res.kind, "", [{"reason": "FieldValueRequired", "field":
                                             "metadata.name", "message": "Required value: "
                                             "name or generateName is required"}], res.group)
    return obj


def _live(view: View, res: Resource, key: tuple[str, str]) -> dict[str, Any] | None:
    return view.objs.get(res.plural, {}).get(key)


def _check_namespace(view: View, res: Resource, obj: dict[str, Any]) -> None:
    if res.namespaced:
        ns = obj["metadata"]["namespace"]
        if ("", ns) not in view.objs.get("namespaces", {}):
            raise status.not_found("namespaces", ns)


def _causes(e: control.ControlError) -> list[dict[str, str]]:
    if e.errors:
        return [{"reason": "FieldValueInvalid", "field": x["path"],
                 "message": f"Invalid value: {x['message']}"
                            + (f" ({x['hint']})" if x.get("hint") else "")}
                for x in e.errors]
    return [{"reason": "FieldValueInvalid", "field": "",
             "message": "; ".join(_LOC.sub("", line) for line in str(e).splitlines())}]


def _raise_input(res: Resource, name: str, e: control.ControlError) -> None:
    unknown = [x for x in e.errors if x["message"].startswith("unknown field")]
    if unknown and len(unknown) == len(e.errors):
        # fieldValidation=Strict's answer (apimachinery's strict decoding error)
        fields = ", ".join(f'unknown field "{x["path"]}"' for x in unknown)
        raise status.bad_request(f"{res.kind} in version \"{res.version}\" cannot be handled "
                                 f"as a {res.kind}: strict decoding error: {fields}") from None
    raise status.invalid(res.kind, name, _causes(e), res.group) from None


async def submit(request: web.Request, view: View, res: Resource, name: str,
                 obj: dict[str, Any]) -> dict[str, Any] | None:
    """The supervisor applies the object (validation included); the view then reloads. With
    dryRun=All the same apply runs here on a copy of the state and nothing is sent: the object
    as it would be is the answer (`kubectl diff`, `apply --dry-run=server`)."""
    key = _key(res, obj)
    if "dryRun" in request.query:
        st = codec.from_dict(codec.to_dict(view.state))
        try:
            apply_objects(st, [stored.clean(obj)])
        except (StateError, ConfigError) as e:
            reply = control.input_error(e)
            _raise_input(res, name, control.ControlError(reply["error"], "input",
                                                         reply["errors"]))
        st.stamp(time.time())
        return build(st, view.node_ready, view.deleting).get(res.plural, {}).get(key)
    try:
        await asyncio.to_thread(control.request, "apply_objects", timeout=_TIMEOUT,
                                objects=[stored.clean(obj)])
    except control.ControlError as e:
        if e.kind != "input":
            raise status.unavailable(str(e)) from None
        _raise_input(res, name, e)
    finally:
        view.reload()
    return _live(view, res, key)


def _key(res: Resource, obj: dict[str, Any]) -> tuple[str, str]:
    md = obj["metadata"]
    return (md.get("namespace", "default") if res.namespaced else "", md["name"])


async def create(request: web.Request, view: View, t: Target) -> web.Response:
    obj = identity(t, await read_json(request), None)
    key, name = _key(t.res, obj), obj["metadata"]["name"]
    if _live(view, t.res, key) is not None:
        raise status.already_exists(t.res.plural, name, t.res.group)
    _check_namespace(view, t.res, obj)
    return web.json_response(await submit(request, view, t.res, name, obj) or obj, status=201)


async def update(request: web.Request, view: View, t: Target) -> web.Response:
    assert t.name is not None
    obj = identity(t, await read_json(request), t.name)
    live = _live(view, t.res, _key(t.res, obj))
    if live is None:
        raise status.not_found(t.res.plural, t.name, t.res.group)
    precondition(t.res, t.name, obj, live)
    return web.json_response(await submit(request, view, t.res, t.name, obj) or obj)


def content_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower()


async def patch_(request: web.Request, view: View, t: Target) -> web.Response:
    assert t.name is not None
    ctype = content_type(request)
    if ctype not in PATCH_TYPES:
        raise status.unsupported_media(ctype, PATCH_TYPES)
    doc = await read_json(request, yaml_ok=ctype == patch.APPLY,
                          list_ok=ctype == patch.JSON_PATCH)
    live = _live(view, t.res, t.key)
    if live is None:
        if ctype != patch.APPLY:
            raise status.not_found(t.res.plural, t.name, t.res.group)
        # server-side apply creates what does not exist yet (one PATCH, no GET first)
        obj = identity(t, doc, t.name)
        _check_namespace(view, t.res, obj)
        return web.json_response(await submit(request, view, t.res, t.name, obj) or obj,
                                 status=201)
    if ctype == patch.APPLY:
        identity(t, doc, t.name)
    try:
        obj = patch.apply_patch(stored.body(view.state, live), ctype, doc)
    except patch.PatchError as e:
        raise status.bad_request(str(e)) from None
    obj = identity(t, obj, t.name)
    precondition(t.res, t.name, obj, live)
    return web.json_response(await submit(request, view, t.res, t.name, obj) or obj)


async def delete(request: web.Request, view: View, t: Target) -> web.Response:
    """Synchronous: the object is gone from the state (a pod terminates for its grace period,
    with a deletionTimestamp, as the kubelet's does), then the object is the answer. A
    namespace takes its objects with it (remembered: CASCADE_MEMORY). DeleteOptions
    (emunet.api.deleteopts): a pod's grace period; a Deployment's propagationPolicy (Orphan
    keeps its pods; Foreground answers once they are gone, the Deployment last)."""
    assert t.name is not None
    live = _live(view, t.res, t.key)
    if live is None:
        gone = view.cascaded.pop((t.res.plural, t.key), None)
        if gone is not None and time.monotonic() - gone[1] < CASCADE_MEMORY:
            return web.json_response(gone[0])
        raise status.not_found(t.res.plural, t.name, t.res.group)
    opts = await deleteopts.of(request)
    if "dryRun" in request.query:
        return web.json_response(live)
    args: dict[str, Any] = {}
    if t.res.plural == "pods":
        written = view.state.manifests.get(stored.key_of("Pod", t.key[0], t.key[1]))
        args["grace"] = deleteopts.pod_grace(opts, live, written)
    if opts.propagation is not None and t.res.plural == "deployments":
        args["propagation"] = opts.propagation
    now = time.monotonic()
    taken = {(plural, key): (obj, now) for plural in WRITABLE - {"namespaces"}
             for key, obj in view.objs.get(plural, {}).items()
             if t.res.plural == "namespaces" and key[0] == t.name}
    ns = t.key[0] or None
    try:
        await asyncio.to_thread(control.request, "delete", timeout=_TIMEOUT,
                                kind=t.res.kind, name=t.name, namespace=ns, **args)
    except control.ControlError as e:
        if e.kind != "input":
            raise status.unavailable(str(e)) from None
        raise status.forbidden(t.res.plural, t.name, str(e)) from None
    finally:
        view.reload()
    view.cascaded = {k: v for k, v in view.cascaded.items() if now - v[1] < CASCADE_MEMORY}
    view.cascaded.update(taken)
    return web.json_response(_live(view, t.res, t.key) or live)


async def delete_collection(request: web.Request, view: View, t: Target) -> web.Response:
    """deletecollection (`DELETE` on a collection, the Python client's
    `delete_collection_namespaced_*`): every object of the namespace (all of them without
    one) that `labelSelector` and `fieldSelector` select, deleted one by one as `delete` does
    (the same DeleteOptions), answered with the list of what was deleted, as the registry's
    DeleteCollection answers."""
    match_labels = label_selector(request.query.get("labelSelector"))
    match_fields = field_selector(request.query.get("fieldSelector"))
    chosen = [(key, obj) for key, obj in sorted(view.objs.get(t.res.plural, {}).items())
              if (t.namespace is None or key[0] == t.namespace)
              and match_labels(obj) and match_fields(obj)
              and key != ("default", "kubernetes")]  # the API server's own (see serve)
    gone = []
    for key, obj in chosen:
        one = Target(t.res, key[0] or None, key[1], None)
        if "dryRun" in request.query:
            gone.append(obj)
            continue
        try:
            resp = await delete(request, view, one)
        except status.APIError as e:
            if e.code == 404:  # deleted meanwhile (a namespace's cascade, a controller)
                continue
            raise
        gone.append(json.loads(resp.body))  # type: ignore[arg-type]
    return web.json_response({"apiVersion": t.res.api_version, "kind": f"{t.res.kind}List",
                              "metadata": {"resourceVersion": str(view.rv)}, "items": gone})


async def scale(request: web.Request, view: View, t: Target) -> web.Response:
    """PATCH (merge or strategic: both are a map merge here) or PUT of a Deployment's
    autoscaling/v1 Scale: the supervisor's `scale` op, as `emunet scale`."""
    assert t.name is not None
    dep = _live(view, t.res, t.key)
    if dep is None:
        raise status.not_found(t.res.plural, t.name, t.res.group)
    current = scale_of(dep)
    if request.method == "PATCH":
        ctype = content_type(request)
        if ctype not in PATCH_TYPES:
            raise status.unsupported_media(ctype, PATCH_TYPES)
        doc = await read_json(request, yaml_ok=True, list_ok=ctype == patch.JSON_PATCH)
        try:
            new = (patch.json_patch(current, doc) if ctype == patch.JSON_PATCH
                   else patch.json_merge(current, doc))
        except patch.PatchError as e:
            raise status.bad_request(str(e)) from None
    elif request.method == "PUT":
        new = await read_json(request)
    else:
        raise status.not_allowed(request.method.lower(), "deployments/scale")
    spec = new.get("spec") if isinstance(new, dict) else None
    replicas = spec.get("replicas") if isinstance(spec, dict) else None
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise status.invalid("Scale", t.name, [{
            "reason": "FieldValueInvalid", "field": "spec.replicas",
            "message": f"Invalid value: {json.dumps(replicas)}: must be greater than or "
                       "equal to 0"}], "autoscaling")
    if "dryRun" in request.query:
        return web.json_response(new)
    try:
        await asyncio.to_thread(control.request, "scale", timeout=_TIMEOUT, name=t.name,
                                namespace=t.key[0], replicas=replicas)
    except control.ControlError as e:
        raise (status.bad_request(str(e)) if e.kind == "input"
               else status.unavailable(str(e))) from None
    finally:
        view.reload()
    dep = _live(view, t.res, t.key)
    return web.json_response(scale_of(dep) if dep is not None else new)
