"""`?watch=true`: a stream of watch events, one JSON object per line.

The shape is metav1.WatchEvent (`{"type": "ADDED|MODIFIED|DELETED|ERROR", "object": ...}`) over
a chunked response, as the API server streams it (apiserver pkg/endpoints/handlers/watch.go).
A watch from a resourceVersion replays the view's history after it (410 Expired as an ERROR
event when it is older than the history, as for a compacted etcd revision); without one (or
"0") it starts with an ADDED per current object. With the Table Accept every event carries a
one-row Table, which `kubectl get -w` needs to print its columns (research §3). An object that
stops matching the selectors is a DELETED event for this watch, one that starts matching ADDED.
`sendInitialEvents=true` (a streaming list) ends the initial ADDED events with the bookmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import web

from emunet.api import status
from emunet.api.resources import Resource
from emunet.api.selectors import field_selector, label_selector
from emunet.api.tables import table
from emunet.api.view import Change, View

INITIAL_EVENTS_END = "k8s.io/initial-events-end"  # metav1.InitialEventsAnnotationKey
DEFAULT_TIMEOUT = 1800.0  # the API server picks 30-60 minutes when the client sets none


def _event(kind: str, obj: dict[str, Any], res: Resource, as_table: bool,
           include: str) -> bytes:
    if as_table:
        obj = table(res.plural, [obj], obj["metadata"].get("resourceVersion", ""),
                    include=include)
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def classify(ch: Change, match: Any) -> str | None:
    """This watch's event type for a change (None: not this watch's business)."""
    now = match(ch.obj)
    before = ch.old is not None and match(ch.old)
    if ch.type == "DELETED":
        return "DELETED" if before else None
    if now:
        return ch.type if (ch.old is None or before) else "ADDED"
    return "DELETED" if before else None


async def _follow(resp: web.StreamResponse, q: asyncio.Queue, deadline: float, res: Resource,
                  match: Any, as_table: bool, include: str) -> None:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            ch = await asyncio.wait_for(q.get(), left)
        except TimeoutError:
            return
        if ch is None:  # the server is stopping
            return
        kind = classify(ch, match) if ch.plural == res.plural else None
        if kind:
            await resp.write(_event(kind, ch.obj, res, as_table, include))


async def serve(request: web.Request, view: View, res: Resource,
                namespace: str | None) -> web.StreamResponse:
    if res.plural == "events":  # kept by the supervisor, not in the view: list only
        raise status.not_allowed("watch", res.plural)
    lsel = label_selector(request.query.get("labelSelector"))
    fsel = field_selector(request.query.get("fieldSelector"))

    def match(o: dict[str, Any]) -> bool:
        ns = o["metadata"].get("namespace", "")
        return (namespace is None or ns == namespace) and lsel(o) and fsel(o)

    rv_text = request.query.get("resourceVersion", "")
    try:
        timeout = float(request.query.get("timeoutSeconds") or DEFAULT_TIMEOUT)
        rv = int(rv_text) if rv_text not in ("", "0") else None
    except ValueError:
        raise status.bad_request(f"invalid resourceVersion or timeoutSeconds: {rv_text!r}"
                                 ) from None
    as_table = "as=Table" in request.headers.get("Accept", "")
    include = request.query.get("includeObject", "Metadata")
    # Streaming lists (KEP-3157, client-go's WatchList, on in kubectl 1.35): the current
    # objects as ADDED whatever the resourceVersion, then a BOOKMARK annotated
    # k8s.io/initial-events-end, which the client waits for before it trusts its cache.
    initial = request.query.get("sendInitialEvents") == "true"
    if initial:
        rv = None
    q = view.subscribe()  # before reading the past: no change falls between the two
    try:
        first: list[bytes] = []
        if rv is None:
            for key in sorted(view.objs.get(res.plural, {})):
                o = view.objs[res.plural][key]
                if match(o):
                    first.append(_event("ADDED", o, res, as_table, include))
            if initial:
                first.append(json.dumps({"type": "BOOKMARK", "object": {
                    "kind": res.kind, "apiVersion": res.api_version, "metadata": {
                        "resourceVersion": str(view.rv),
                        "annotations": {INITIAL_EVENTS_END: "true"}}}}).encode() + b"\n")
        else:
            past = view.since(rv)
            if past is None:
                e = status.gone(f"too old resource version: {rv} ({view.oldest})")
                first.append(json.dumps({"type": "ERROR", "object": status.body(
                    e.code, e.reason, e.message)}).encode() + b"\n")
            else:
                for ch in past:
                    kind = classify(ch, match) if ch.plural == res.plural else None
                    if kind:
                        first.append(_event(kind, ch.obj, res, as_table, include))
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        with contextlib.suppress(ConnectionError):  # the client went away: the watch ends
            for line in first:
                await resp.write(line)
            if rv is None or view.since(rv) is not None:
                await _follow(resp, q, time.monotonic() + timeout, res, match, as_table,
                              include)
            await resp.write_eof()
        return resp
    finally:
        view.unsubscribe(q)
