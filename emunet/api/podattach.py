"""pods/attach: join a running container's own stdio, as `kubectl attach` and `kubectl run -i`
do, for a client on WebSocket or SPDY (emunet.api.channels, the carrier chosen as exec's).

The client's stdin, its end and its terminal sizes go to the container; its stdout and stderr
(not with a tty) come back, then a Success Status when the container's output ends. Attach
reports no exit code (the kubelet's does not either): kubectl run reads it from the pod's status.

A container with `stdin` or `tty` has its stdio held by the supervisor (emunet.cluster.stdio):
this relays between the WebSocket and the container's attach socket, so the output is live and
the input reaches the process. Any other container writes straight into its log file: an attach
to it follows that file from now on (stdout and stderr interleaved, as they are there) until
the container's run ends. A container that is not running cannot be attached to (kubectl run
then falls back to the logs, as with the kubelet's "container not found").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from emunet import naming
from emunet.api import status
from emunet.api.channels import Client, Options, exit_status
from emunet.api.podexec import check_upgrade, open_client
from emunet.api.target import Target, container_of
from emunet.api.view import View
from emunet.cluster import stdio
from emunet.cluster.workloads import log_appended, log_path

FOLLOW_POLL = 0.2
CONNECT_TIMEOUT = 5.0


def _run_of(view: View, key: tuple[str, str], container: str) -> tuple[str, int] | None:
    """The container's current run (start time, restart count), None if it is not running."""
    pod = view.objs.get("pods", {}).get(key)
    for cs in pod["status"].get("containerStatuses", []) if pod else ():
        if cs["name"] == container and "running" in cs.get("state", {}):
            return cs["state"]["running"].get("startedAt", ""), cs.get("restartCount", 0)
    return None


def _running(view: View, key: tuple[str, str], container: str) -> bool:
    return _run_of(view, key, container) is not None


async def serve(request: web.Request, view: View, t: Target,
                pod: dict[str, Any]) -> web.StreamResponse:
    name = container_of(pod, request.query.get("container"))
    ps = view.state.pods[t.key]
    c = next(c for c in ps.pod.containers if c.name == name)
    run_dir = view.path.parent if view.path else naming.run_dir()
    if not _running(view, t.key, name):
        # the kubelet's answer for a container it does not find running
        raise status.bad_request(f"container {name} not found in pod {t.key[1]}_{t.key[0]}")
    check_upgrade(request)
    opts = Options.of(request)
    stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    if stdio.wants_stdio(c):
        stream = await _connect(stdio.attach_socket(run_dir, *t.key, name), opts.stdin, name,
                                t.key)
    client: Client | None = None
    try:
        client = await open_client(request, opts, f"attach {t.key[0]}/{t.key[1]}")
        if client.connected:
            if stream is not None:
                await _relay(client, *stream)
            else:
                await _follow(client, view, t.key, name, log_path(run_dir / "logs", ps, name))
            await client.finish(exit_status(0))
    finally:
        if stream is not None:
            stream[1].close()
        if client is not None:
            await client.close()
    return client.response


async def _connect(path, want_stdin: bool, name: str, key: tuple[str, str]
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The supervisor's attach socket, after its hello (or the reason it refused)."""
    gone = status.bad_request(f"container {name} not found in pod {key[1]}_{key[0]}")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)),
                                                CONNECT_TIMEOUT)
        writer.write(json.dumps({"stdin": want_stdin}).encode() + b"\n")
        reply = json.loads(await asyncio.wait_for(reader.readline(), CONNECT_TIMEOUT) or b"{}")
    except (OSError, TimeoutError, ValueError):
        raise gone from None
    if not reply.get("ok"):
        writer.close()
        raise gone
    return reader, writer


async def _relay(client: Client, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    async def down() -> None:  # the container's output to the client (which drops stderr
        while (msg := await stdio.read_frame(reader)) is not None:  # unless it asked for it)
            channel, data = msg
            if channel == stdio.END:
                return
            await client.send(channel, data)

    async def up() -> None:  # the client's input and terminal size to the container
        async for channel, data in client.inputs():
            if channel in (stdio.STDIN, stdio.RESIZE):
                writer.write(stdio.frame(channel, data))
            elif channel == stdio.CLOSE:
                writer.write(stdio.frame(stdio.CLOSE, bytes([stdio.STDIN])))
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _follow(client: Client, view: View, key: tuple[str, str], name: str,
                  path) -> None:
    """A container without held stdio: its log file from its current end, while it runs (or
    until the client leaves)."""
    try:
        pos = path.stat().st_size
    except FileNotFoundError:
        pos = 0
    closed = asyncio.create_task(_drain(client))
    run = _run_of(view, key, name)
    try:  # this run only: an attach ends when its container does (a restart is a new one)
        while not closed.done() and run is not None and _run_of(view, key, name) == run:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(closed), FOLLOW_POLL)
            more = log_appended(path, pos)
            if more is None:
                break
            if more:
                pos += len(more)
                await client.send(stdio.STDOUT, more)
    finally:
        closed.cancel()


async def _drain(client: Client) -> None:
    async for _ in client.inputs():  # nothing to feed: input is dropped; the client's end
        pass  # ends the attach
        pass
