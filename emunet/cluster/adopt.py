"""A restarted supervisor (`--adopt`, started by emunet.cluster.watchdog) taking over what the
dead one left running, as a restarted kubelet takes over its pods' containers.

The manifest records every process with its role, pid and start time: agents, L7 proxies, the
DNS responder and the API server (`Child` roles), each pod's sandbox and container processes.
What still runs as recorded is adopted (emunet.host.adopted: polled by pid and start time, not
waited on) and keeps running, so the datapath never stops forwarding and established
connections through it survive. What died meanwhile is started again. The built-in servers
lived in the dead supervisor's event loop, so their sockets went with it: they are bound anew.
A container with held stdio (`stdin`/`tty`) lost its stdio with the old supervisor: it is
ended and started again, as the kubelet restarts a container whose status it lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from emunet.cluster import stdio
from emunet.cluster.container import ContainerProc, end_process
from emunet.cluster.workloads import PodWorkload, Workloads
from emunet.host import adopted, sandbox
from emunet.host.manifest import process_start_time
from emunet.model import Container
from emunet.state import podphase
from emunet.state.cluster import PodState

log = logging.getLogger("emunet.cluster.adopt")

StartTime = Callable[[int], int | None]
LOST_CODE = podphase.exit_code(adopted.LOST)  # 137, as the kubelet reports a lost container


def starts(processes: list[dict[str, Any]], role: str) -> int:
    """How many times a process of `role` was started (each start is recorded once)."""
    return sum(e.get("role") == role for e in processes)


def container_plan(ps: PodState, c: Container, processes: list[dict[str, Any]],
                   start_time: StartTime = process_start_time
                   ) -> tuple[str, adopted.Adopted | None]:
    """What to do with a process container of a pod being adopted:
    'adopt' (it runs as recorded: keep it), 'restart' (it runs, but its held stdio died with
    the old supervisor: end it, start it again), 'done' (it had terminated for good: the
    published status says so, restartPolicy keeps it down) or 'start' (it is gone)."""
    found = adopted.find(processes, sandbox.container_role(ps.pod, c), start_time)
    if found is not None:
        return ("restart" if stdio.wants_stdio(c) else "adopt"), found
    if (ps.containers.get(c.name) or {}).get("state") == "terminated":
        return "done", None
    return "start", None


async def adopt_pod(wls: Workloads, ps: PodState, processes: list[dict[str, Any]],
                    builtin: bool = True) -> PodWorkload:
    """Take over a pod's workload: adopt its sandbox and containers, reopen its built-in
    servers; what is gone is started by the next `reap` (the kubelet's restart rules)."""
    wl = PodWorkload(ps)
    wls.pods[ps.key] = wl
    now = time.time()
    box = adopted.find(processes, sandbox.sandbox_role(ps.pod))
    wl.sandbox = box  # type: ignore[assignment]  (a Popen look-alike)
    for c in ps.pod.containers:
        if not (c.command or c.args):
            if builtin:
                await wls.open_builtin(wl, c)
            continue
        p = ContainerProc(c, restarts=max(0, starts(processes, sandbox.container_role(
            ps.pod, c)) - 1))
        status = ps.containers.get(c.name) or {}
        p.last = status.get("last") if status.get("state") != "terminated" else {
            k: status[k] for k in ("exitCode", "reason", "startedAt", "finishedAt")
            if k in status}
        action, found = container_plan(ps, c, processes)
        if box is None and found is not None:
            action = "start"  # its sandbox is gone: a new one, and the container in it
        if action == "adopt":
            p.popen = found  # type: ignore[assignment]
            p.started_at = status.get("startedAt") or now
        elif action == "done":
            p.done = True
        else:
            if found is not None:
                await asyncio.to_thread(end_process, found, 0)  # type: ignore[arg-type]
            if starts(processes, sandbox.container_role(ps.pod, c)):
                # it ran and is gone (or had to go), its exit status lost with the old
                # supervisor: the kubelet's ContainerStatusUnknown, then restartPolicy
                p.last = {"exitCode": LOST_CODE, "reason": "ContainerStatusUnknown",
                          "startedAt": status.get("startedAt") or now, "finishedAt": now}
                if podphase.restarts_after(ps.pod.restart_policy, LOST_CODE):
                    p.restarts += 1
                else:
                    p.done = True
        log.info("pod %s/%s container %s: %s%s", *ps.key, c.name, action,
                 f" (pid {found.pid})" if found else "")
        wl.procs.append(p)
    # liveness restarts of built-in containers are counted nowhere else than the state
    wl.builtin_restarts = max(0, ps.restarts - sum(p.restarts for p in wl.procs))
    await wls.open_attach(wl)
    if box is None and any(not p.done for p in wl.procs):
        await asyncio.to_thread(wls.start_sandbox, wl)
    return wl
