"""`emunet ui`'s web server (aiohttp): the page, its JSON, and live updates over Server-Sent
Events, on 127.0.0.1 only and for root only.

Sources, the same as the CLI's: the published state (`state.store`, re-read when its stamp
changes, as every reader does), the flow rings (`observe.flowlog.read_all`, and tailed by
`ui.live` while a page is connected; rendered by `observe.hubble` and filtered as `emunet
observe` filters) and `cluster.tracer.run` for a trace. Routes: `/` the page, `/static/*`,
`GET /api/map`, `GET /api/flows` (observe's filters as query parameters; `?download=1` as a
file), `GET /api/events` (SSE: `map` on every publish, `flows` batches), `POST /api/trace`
`{namespace, pod, dest, protocol}`, `GET /api/trace/ID.pcap`, `GET /api/hop/ID/N` (a hop's
headers decoded by Scapy).

Who may look: a loopback port is open to every local user, while the flows and the state are
root's (the run dir is 0700). A request is served when it carries the secret token of the URL
`emunet ui` prints (as Jupyter does: whoever can read root's terminal; the page's first load
turns it into a SameSite=Strict HttpOnly cookie), or when its client socket belongs to uid 0
(looked up in /proc/net/tcp, as identd does). The Host header must name the loopback address,
so a web page elsewhere cannot drive the server through DNS rebinding.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import os
import secrets
from collections import OrderedDict
from pathlib import Path
from typing import Any

from aiohttp import web

from emunet import naming
from emunet.cluster import tracer
from emunet.errors import EmunetError
from emunet.observe import filters, flowlog, hubble
from emunet.state import store
from emunet.state.cluster import ClusterState
from emunet.ui import frames, live, model

log = logging.getLogger("emunet.ui")
STATIC = Path(__file__).with_name("static")
POLL = 0.25  # seconds between looks at the state file's stamp, and at the flow files' ends
BATCH = 0.5  # seconds of flows gathered before a batch with a new drop goes to the page
CALM = 1.0  # seconds between batches without one (each is a redraw of the page's table)
# Per batch, the live table gets every drop (up to LIVE_DROPS) and the newest LIVE_OTHERS other
# records: at a thousand flows a second neither a person nor the datapath's CPU share gains
# from rendering them all (the page counts the rest; /api/flows and its download have them).
# The browser's work is per new row (measured: its layout is the new rows' ~14 objects each),
# so 15 a second, a screen of the table at 1280x800 renewed every second, is what it costs.
LIVE_DROPS, LIVE_OTHERS = 100, 15
MAX_ROWS = 300  # flows per SSE batch and per /api/flows answer (the newest)
MAX_TRACES = 20  # kept for their pcap and hop details
DEFAULT_PORT = 8484
COOKIE = "emunet_ui"
HEARTBEAT = 10.0  # seconds of silence before an SSE comment
NICE = 10  # added to the server's nice value (serve)


def peer_uid(peer: tuple[str, int], local_port: int, table: str = "/proc/net/tcp") -> int | None:
    """The uid owning the TCP socket at `peer` connected to our `local_port` (None: not found)."""
    want_rem = f"{local_port:04X}"
    host, port = peer[0], peer[1]
    want_loc = "".join(f"{int(x):02X}" for x in reversed(host.split("."))) + f":{port:04X}"
    try:
        with open(table, encoding="ascii") as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[1] == want_loc and cols[2].endswith(":" + want_rem):
                    return int(cols[7])
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return None


class UI:
    """The server's view of the cluster: the state (reloaded on publish), traces, SSE clients."""

    def __init__(self, run_dir: Path, port: int, check_uid: bool = True,
                 token: str | None = None) -> None:
        self.run_dir, self.port, self.check_uid = run_dir, port, check_uid
        self.token = token or secrets.token_urlsafe(18)
        self.state_path = run_dir / store.FILE_NAME
        self.stamp: Any = None
        self.state: ClusterState | None = None
        self.directory: hubble.Directory | None = None
        self.map: dict[str, Any] = {}
        self.traces: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.ids = itertools.count(1)
        self.clients: set[asyncio.Queue] = set()
        self.tail: live.Tail | None = None
        self.reload()

    # ---- state -----------------------------------------------------------------------------
    def reload(self) -> bool:
        """Read the state again if its file changed; True when it did."""
        st = store.stamp(self.state_path)
        if st == self.stamp and self.state is not None:
            return False
        self.state, self.stamp = store.read_stamped(self.state_path)
        self.directory = hubble.Directory(self.state)
        self.map = model.cluster_map(self.state, self._stopped())
        return True

    def _stopped(self) -> list[str]:
        try:
            return list(json.loads((self.run_dir / "stopped-nodes.json").read_text()))
        except (OSError, ValueError, TypeError):
            return []

    async def watch_state(self) -> None:
        while True:
            await asyncio.sleep(POLL)
            try:
                changed = self.reload()
            except (OSError, EmunetError, ValueError) as e:  # mid-publish or gone: next poll
                log.debug("state not readable: %s", e)
                continue
            if changed:
                self.broadcast(("map", self.map))

    # ---- flows -----------------------------------------------------------------------------
    async def watch_flows(self) -> None:
        """Every POLL, the lines added to the flow files, to every page (unparsed: live.rows
        parses what a page will show). Only while a page is connected: with none, nothing is
        read, and the next page's stream starts from then. In the loop, not a thread: a read
        of a tmpfs file's new tail takes microseconds, a thread's hand-over more."""
        while True:
            await asyncio.sleep(POLL)
            if not self.clients:
                self.tail = None
                continue
            if self.tail is None:
                self.tail = live.Tail(self.run_dir)
                continue
            chunks = self.tail.read()
            if chunks:
                self.broadcast(("lines", chunks))

    def broadcast(self, item: tuple[str, Any]) -> None:
        for q in self.clients:
            if q.qsize() < 1000:  # a stalled page loses flows, not the server's memory
                q.put_nowait(item)

    def rows(self, query: dict[str, list[str]], last: int | None = MAX_ROWS) -> list[dict]:
        assert self.directory is not None
        flt = model.flow_filter(query)
        return model.flow_rows(flowlog.read_all(self.run_dir), self.directory, flt, last)

    # ---- traces ----------------------------------------------------------------------------
    def trace(self, body: dict[str, Any]) -> dict[str, Any]:
        """Run `emunet trace`'s probe (blocking: called in a thread) and keep its records."""
        assert self.state is not None
        ns = str(body.get("namespace") or "default")
        pod = str(body.get("pod") or "")
        dest = str(body.get("dest") or "")
        proto = body.get("protocol") or None
        if proto not in (None, "tcp", "udp", "icmp"):
            raise filters.FilterError(f"protocol {proto!r}: use tcp, udp or icmp")
        if not pod or not dest:
            raise filters.FilterError("say which pod traces to which destination")
        state = self.state
        report, fail = tracer.run(state, ns, pod, dest, proto, keep_records=True)
        j = model.journey(report, hubble.Directory(state))
        tid = str(next(self.ids))
        records = [r for p in report.get("packets", []) for r in p.get("records", [])]
        self.traces[tid] = {"journey": j, "records": records}
        while len(self.traces) > MAX_TRACES:
            self.traces.popitem(last=False)
        return {"id": tid, "failed": fail, **j}


# ---- HTTP ----------------------------------------------------------------------------------

UI_KEY: web.AppKey[UI] = web.AppKey("ui", UI)
TRACE_LOCK: web.AppKey[asyncio.Lock] = web.AppKey("trace-lock", asyncio.Lock)

@web.middleware
async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
    ui: UI = request.app[UI_KEY]
    host = request.host.rsplit(":", 1)[0].strip("[]")
    if host not in ("127.0.0.1", "localhost"):
        return web.json_response({"error": "use http://127.0.0.1 (loopback only)"}, status=403)
    given = request.query.get("token") or request.cookies.get(COOKIE) or ""
    if not hmac.compare_digest(given.encode(), ui.token.encode()) and ui.check_uid:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if not peer or peer_uid(peer, ui.port) != 0:
            return web.json_response({"error": "open the URL `emunet ui` printed (with its "
                                      "token): the cluster's flows and state are root's"},
                                     status=403)
    if request.query.get("token") and request.path == "/":
        resp = web.Response(status=302, headers={"Location": "/"})  # the token leaves the
        resp.set_cookie(COOKIE, ui.token, httponly=True, samesite="Strict", path="/")  # bar
        return resp
    try:
        return await handler(request)
    except (EmunetError, ValueError) as e:
        code = 400 if getattr(e, "code", 2) == 2 else 422
        return web.json_response({"error": str(e)}, status=code)


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


async def get_map(request: web.Request) -> web.Response:
    return web.json_response(request.app[UI_KEY].map)


async def get_flows(request: web.Request) -> web.Response:
    ui: UI = request.app[UI_KEY]
    q = {k: request.query.getall(k) for k in request.query if k not in ("download", "last")}
    last = int(request.query.get("last", MAX_ROWS) or 0) or None
    rows = await asyncio.to_thread(ui.rows, q, last)
    if request.query.get("download"):
        body = json.dumps([r["flow"] for r in rows], indent=1)
        return web.Response(text=body, content_type="application/json", headers={
            "Content-Disposition": 'attachment; filename="emunet-flows.json"'})
    return web.json_response([{k: v for k, v in r.items() if k != "flow"} for r in rows])


async def events(request: web.Request) -> web.StreamResponse:
    ui: UI = request.app[UI_KEY]
    q = {k: request.query.getall(k) for k in request.query}
    flt = model.flow_filter(q)  # a bad filter is a 400 before the stream starts
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-cache"})
    await resp.prepare(request)
    queue: asyncio.Queue = asyncio.Queue()
    ui.clients.add(queue)
    loop = asyncio.get_running_loop()
    batch = live.Batch(CALM)
    try:
        await _send(resp, "map", ui.map)
        while True:
            due = batch.due()
            try:
                item = await asyncio.wait_for(
                    queue.get(), HEARTBEAT if due is None else max(0.0, due - loop.time()))
            except TimeoutError:
                if due is None:
                    await resp.write(b": still here\n\n")  # finds a page that went away
                    continue
            else:
                now = loop.time()
                await asyncio.sleep(BATCH)  # gather: a message per BATCH at most, not per poll
                items = [item] + [queue.get_nowait() for _ in range(queue.qsize())]
                maps = [v for k, v in items if k == "map"]
                if maps:
                    await _send(resp, "map", maps[-1])
                for k, v in items:
                    if k == "lines":
                        batch.add(v, now)
            due = batch.due()
            if due is None or loop.time() < due or ui.directory is None:
                continue
            rows, skipped = live.rows(batch.take(), ui.directory, flt, LIVE_DROPS, LIVE_OTHERS)
            if rows or skipped:
                await _send(resp, "flows", {"rows": [{k: v for k, v in r.items() if k != "flow"}
                                                     for r in rows], "skipped": skipped})
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        ui.clients.discard(queue)
    return resp


async def _send(resp: web.StreamResponse, event: str, data: Any) -> None:
    await resp.write(f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
                     .encode())


async def post_trace(request: web.Request) -> web.Response:
    ui: UI = request.app[UI_KEY]
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": "send JSON: {namespace, pod, dest}"}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"error": "send a JSON object"}, status=400)
    async with request.app[TRACE_LOCK]:  # one probe at a time, as a user runs them
        return web.json_response(await asyncio.to_thread(ui.trace, body))


async def get_pcap(request: web.Request) -> web.Response:
    t = request.app[UI_KEY].traces.get(request.match_info["id"])
    if t is None:
        return web.json_response({"error": "no such trace (traces are kept in memory: the "
                                  "last 20)"}, status=404)
    data = await asyncio.to_thread(frames.pcap, t["records"])
    return web.Response(body=data, content_type="application/vnd.tcpdump.pcap", headers={
        "Content-Disposition": f'attachment; filename="emunet-trace-{request.match_info["id"]}'
                               '.pcap"'})


async def get_hop(request: web.Request) -> web.Response:
    t = request.app[UI_KEY].traces.get(request.match_info["id"])
    n = request.match_info["n"]
    hop = None
    if t is not None:
        hop = next((h for p in t["journey"]["paths"] for h in p["hops"] if str(h["n"]) == n),
                   None)
    if hop is None:
        return web.json_response({"error": "no such hop"}, status=404)
    decoded = await asyncio.to_thread(frames.decode, hop["headers"])
    return web.json_response({"hop": hop, **decoded})


def make_app(ui: UI, live: bool = True) -> web.Application:
    """The app; `live`: also follow the flow rings and the state file (off in unit tests)."""
    app = web.Application(middlewares=[guard])
    app[UI_KEY] = ui
    app[TRACE_LOCK] = asyncio.Lock()
    app.router.add_get("/", index)
    app.router.add_static("/static", STATIC)
    app.router.add_get("/api/map", get_map)
    app.router.add_get("/api/flows", get_flows)
    app.router.add_get("/api/events", events)
    app.router.add_post("/api/trace", post_trace)
    app.router.add_get("/api/trace/{id}.pcap", get_pcap)
    app.router.add_get("/api/hop/{id}/{n}", get_hop)

    async def background(app: web.Application) -> Any:
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(ui.watch_state()), loop.create_task(ui.watch_flows())]
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if live:
        app.cleanup_ctx.append(background)
    return app


async def serve(port: int, ready: Any = None) -> None:
    """Serve on 127.0.0.1:`port` until cancelled; `ready(url)` once listening."""
    # A bystander's priority: on a small machine the CPU the server takes while a thousand
    # flows a second stream is the node agents' (the datapath's), and issue 18 asks the
    # datapath to run as fast with the UI open as closed. At nice 10 the scheduler serves the
    # agents first and the server from what is left; its work (a few parses per half second,
    # a trace when asked) is small and not urgent. (A trace's probe, started from here,
    # inherits it: its timing is the datapath's, its own start-up may wait on a busy machine.)
    with contextlib.suppress(OSError):
        os.nice(NICE)
    ui = UI(naming.run_dir(), port)
    runner = web.AppRunner(make_app(ui), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    try:
        await site.start()
        if ready is not None:
            ready(f"http://127.0.0.1:{port}/?token={ui.token}")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
