"""`python -m emunet.api --state FILE --port N`: the API server process the supervisor runs.

Binds 127.0.0.1 (or another loopback address; anything else is refused: DESIGN.md section 7,
faces bind to loopback only). Reloads the state on SIGHUP (the supervisor's publish), checks
the file and the node agents' liveness (the supervisor's `status` op) every second, and on
SIGTERM ends every watch cleanly before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from emunet import control
from emunet.api.server import make_app
from emunet.api.view import View

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


async def serve(state: Path, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    view = View(state, node_ready=node_ready)
    view.node_ready = await asyncio.to_thread(node_ready)
    view.refresh(view.state)
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, view.reload)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    runner = web.AppRunner(make_app(view), access_log=None, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
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
