"""`python -m emunet.api --state FILE --port N`: the API server process the supervisor runs.

Binds 127.0.0.1 (or another loopback address; anything else is refused: DESIGN.md section 7,
faces bind to loopback only). Reloads the state on SIGHUP (the supervisor's publish), checks
the file and the node agents' liveness (the supervisor's `status` op) every second, and on
SIGTERM ends every watch cleanly before it exits.

Pods reach it as `kubernetes.default` (10.43.0.1:443): the API server also listens on the
address its `default/kubernetes` Endpoints names, the first node's underlay IP, port 6443
(k3s's endpoint), on a socket created inside that node's namespace (a socket stays in the
namespace it was made in), so the node agent delivers the DNAT'ed connections to the node's
own stack (emunet.datapath.nodeport.process_host). Plain HTTP there too (k3s: TLS), and only
for pods: a client outside the cluster CIDR (the outside namespace on the underlay) is 403.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
import sys
from pathlib import Path

from aiohttp import web

from emunet import control
from emunet.api.server import make_app
from emunet.api.status import forbidden, response
from emunet.api.view import View
from emunet.host.netns import socket_in_netns
from emunet.model.endpoints import ENDPOINTS
from emunet.state.cluster import ClusterState

log = logging.getLogger("emunet.api")
POLL = 1.0


def node_ready() -> dict[str, bool]:
    """node -> its agent is alive (kernel-mode nodes have none: absent, so Ready)."""
    try:
        st = control.request("status", timeout=2)
    except (control.ControlError, OSError):
        return {}
    return {name.removeprefix("agent-"): c["alive"] for name, c in st["children"].items()
            if name.startswith("agent-")}


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def in_cluster_sockets(st: ClusterState) -> list[socket.socket]:
    """Listening sockets on the node addresses of the `kubernetes` Endpoints, each made in its
    node's namespace (none when the namespace is missing: an API run without a cluster)."""
    es = st.endpoint_sets.get((ENDPOINTS, "default", "kubernetes"))
    nodes = {n.underlay_ip: n for n in st.nodes}
    out = []
    for g in es.groups if es else ():
        for a in g.addresses:
            n = nodes.get(a.ip)
            for p in g.ports:
                if n is None or p.port is None:
                    continue
                try:
                    s = socket_in_netns(n.netns, socket.AF_INET, socket.SOCK_STREAM)
                except Exception as e:  # noqa: BLE001 - HostError or OSError: serve loopback
                    log.warning("no in-cluster listener in %s: %s", n.netns, e)
                    continue
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((a.ip, p.port))
                s.listen(128)
                s.setblocking(False)
                out.append(s)
    return out


def pods_only(st: ClusterState, sockets: list[socket.socket]):  # noqa: ANN201 - middleware
    """On the in-cluster listeners, answer pods (cluster CIDR sources) only."""
    local = {s.getsockname() for s in sockets}
    net = ipaddress.IPv4Network(st.cluster.cluster_cidr)

    @web.middleware
    async def check(request: web.Request, handler):  # noqa: ANN001, ANN202
        tr = request.transport
        if tr is not None and tr.get_extra_info("sockname") in local:
            peer = (tr.get_extra_info("peername") or ("0.0.0.0", 0))[0]
            if ipaddress.IPv4Address(peer) not in net:
                return response(forbidden("", request.path, f"{peer} is not a pod address"))
        return await handler(request)
    return check


async def serve(state: Path, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    view = View(state, node_ready=node_ready)
    view.node_ready = await asyncio.to_thread(node_ready)
    view.refresh(view.state)
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, view.reload)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    app = make_app(view)
    inside = in_cluster_sockets(view.state)
    app.middlewares.append(pods_only(view.state, inside))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    for sock in inside:
        await web.SockSite(runner, sock).start()
        log.info("Kubernetes API for pods on http://%s:%d", *sock.getsockname())
    log.info("Kubernetes API on http://%s:%d (resourceVersion %d)", host, port, view.rv)
    try:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), POLL)
            ready = await asyncio.to_thread(node_ready)
            view.node_ready_fn = lambda r=ready: r
            view.poll()
    finally:
        view.close_watches()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="emunet-api")
    ap.add_argument("--state", required=True, type=Path)
    ap.add_argument("--port", required=True, type=int)
    ap.add_argument("--host", default="127.0.0.1")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not loopback(a.host):
        print(f"emunet-api: refusing to listen on {a.host}: the API has no authentication, "
              "so it binds loopback addresses only", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(a.state, a.host, a.port))
    except OSError as e:
        print(f"emunet-api: cannot listen on {a.host}:{a.port}: {e.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
