"""`emunet ui`: serve the live web view on 127.0.0.1 until Ctrl-C (emunet.ui.server)."""

from __future__ import annotations

import argparse
import asyncio
import errno

from emunet.cli.common import CLIError, load_state, need_root


def cmd_ui(a: argparse.Namespace) -> int:
    if not 1 <= a.port <= 65535:
        raise CLIError(f"--port {a.port}: use a port from 1 to 65535", code=2)
    need_root("the web view shows the cluster's flows and state, which are root's")
    load_state()  # "no cluster is up" before a server that would show nothing
    from emunet.ui import server  # aiohttp: only this verb loads it

    def ready(url: str) -> None:
        print(f"emunet ui: open {url}\n(loopback only: from another machine, ssh -L "
              f"{a.port}:127.0.0.1:{a.port}; the token lets a non-root browser in; "
              "Ctrl-C stops it)", flush=True)
    try:
        asyncio.run(server.serve(a.port, ready))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise CLIError(f"port {a.port} is in use: choose another with --port") from None
        raise
    except KeyboardInterrupt:
        pass
    return 0
