"""The client of one exec or attach session, whatever carries it: the Kubernetes stream
protocol's channels (k8s.io/apimachinery pkg/util/remotecommand) as one interface, so the exec
and attach back ends (emunet.api.podexec, emunet.api.podattach) never see the framing.

Two carriers implement `Client`: WebSocket `v5`/`v4.channel.k8s.io` (emunet.api.channelws,
kubectl >= 1.30 and the Python client) and SPDY/3.1 streams `v4`..`channel.k8s.io`
(emunet.api.channelspdy, kubectl <= 1.29 and the fallback of newer ones). Both give the back end
the same things: `send(STDOUT|STDERR, bytes)`; `inputs()`, the client's (STDIN, bytes),
(CLOSE, b"\\0") when its stdin ended and (RESIZE, b'{"Width":..,"Height":..}'), ending when the
client goes away; and `finish(status)` with the final metav1.Status.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def flag(request: web.Request, name: str) -> bool:
    return request.query.get(name) in ("true", "1")


@dataclass(frozen=True)
class Options:
    """Which streams the client asked for (core/v1 PodExecOptions, PodAttachOptions)."""

    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    @classmethod
    def of(cls, request: web.Request) -> Options:
        # stdout defaults on (kubectl always asks for it); a tty has no stderr (the kubelet
        # drops it: "Access to exec with tty and stderr is not supported")
        tty = flag(request, "tty")
        return cls(flag(request, "stdin"), request.query.get("stdout", "true") in ("true", "1"),
                   flag(request, "stderr") and not tty, tty)


def exit_status(rc: int) -> dict[str, Any]:
    """The final Status for an exit code (a signal: 128 + its number, as a shell says)."""
    if rc < 0:
        rc = 128 - rc
    if rc == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: exit status {rc}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(rc)}]}}


def failure(message: str) -> dict[str, Any]:
    return {"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError"}


class Client(abc.ABC):
    """One connected exec/attach client (see the module doc)."""

    response: web.StreamResponse  # what the aiohttp handler returns
    connected = True  # false: the connection came up but the session did not (nothing to do)

    @abc.abstractmethod
    async def send(self, channel: int, data: bytes) -> None:
        """Output on STDOUT or STDERR; dropped when the client did not ask for that stream or
        has gone."""

    @abc.abstractmethod
    def inputs(self) -> AsyncIterator[tuple[int, bytes]]:
        """The client's input, until it goes away."""

    @abc.abstractmethod
    async def finish(self, status: dict[str, Any]) -> None:
        """The session's end: the final Status, then the connection closes."""

    @abc.abstractmethod
    async def close(self) -> None:
        """End the connection (also when the session ended early)."""
