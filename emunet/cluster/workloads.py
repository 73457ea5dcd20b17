"""Pod workloads: start, supervise and stop emunet's built-in servers and real containers.

A container without `command` gets emunet's built-in server (emunet.cluster.builtin) on each
declared containerPort. All built-in servers of all pods live in the supervisor's one event
loop: a socket belongs to the network namespace it was created in, so one process can serve
every pod (no Python process per pod). A container with `command`/`args` runs that real process
in the pod's sandbox (emunet.host.sandbox: its own PID, UTS, IPC and mount namespaces beside
the pod's network namespace). When it exits, the pod's restartPolicy decides (emunet.state.
podphase): started again with the kubelet's back-off, or terminated for good with its exit code
(a pod whose containers all did is Succeeded or Failed, and its sandbox ends). A container with
`stdin` or `tty` has its stdio held here for `kubectl attach` (emunet.cluster.stdio).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from emunet.cluster import stdio
from emunet.cluster.builtin import UDPIdentity, identity, listen, listen_families, serve_tcp
from emunet.cluster.container import TERM_WAIT, ContainerProc, end_process, end_processes
from emunet.host import sandbox
from emunet.host.netns import socket_in_netns
from emunet.model import Container
from emunet.state import podphase
from emunet.state.cluster import KUBE_SYSTEM, PodState

log = logging.getLogger("emunet.cluster.workloads")

SANDBOX_TIMEOUT = 5.0  # seconds for a pod sandbox to set up its namespaces
_BACKOFF_MAX = 300.0  # kubelet's CrashLoopBackOff cap (5 minutes)


def log_path(log_dir: Path, ps: PodState, container: str) -> Path:
    """Where a container's output goes (`emunet logs` and the API's pods/log read it)."""
    if ps.pod.namespace == KUBE_SYSTEM and ps.pod.labels.get("k8s-app") == "kube-dns":
        return log_dir / "dns.log"  # CoreDNS is the supervisor's `dns` child
    return log_dir / f"{ps.pod.namespace}_{ps.pod.name}_{container}.log"


def log_appended(path: Path, pos: int) -> bytes | None:
    """What a container log gained past byte `pos` (b"" if nothing), None once it is gone:
    what `logs -f` and an attach that follows a log send next."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size <= pos:
        return b""
    with open(path, "rb") as f:
        f.seek(pos)
        return f.read(size - pos)


@dataclass
class PodWorkload:
    """Everything running for one pod: built-in listeners and container processes."""

    ps: PodState
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    transports: list[asyncio.BaseTransport] = field(default_factory=list)
    procs: list[ContainerProc] = field(default_factory=list)
    logs: list[TextIO] = field(default_factory=list)  # built-in servers' access logs
    builtin_restarts: int = 0  # liveness restarts of built-in containers
    sandbox: subprocess.Popen | None = None  # the pod's pause process (emunet.host.sandbox)
    sandbox_pid: int | None = None  # its PID 1 (the pause), what containers nsenter

    @property
    def restarts(self) -> int:
        return sum(p.restarts for p in self.procs) + self.builtin_restarts


class Workloads:
    """Starts, supervises and stops pod workloads inside the supervisor's event loop."""

    def __init__(self, log_dir: Path, on_process: Callable[..., None]) -> None:
        self.log_dir = log_dir
        self.on_process = on_process  # records each started pid (for `emunet down`)
        self.pods: dict[tuple[str, str], PodWorkload] = {}
        # called when a held-stdio container has exited (its output ended): the supervisor
        # reaps and publishes at once, not at its next tick, so `kubectl run -i` of a short
        # command mostly finds the pod completed (and reads the logs) instead of racing it
        self.on_exit: Callable[[], None] = lambda: None

    async def start(self, ps: PodState, builtin: bool = True) -> None:
        """Open the pod's listeners and start its processes (idempotent per pod)."""
        if ps.key in self.pods:
            return
        wl = PodWorkload(ps)
        self.pods[ps.key] = wl
        for c in ps.pod.containers:
            if c.command or c.args:
                # not due for `reap` until the sandbox is up and they are started below (a
                # tick during the await would start them a second time, in a second sandbox)
                wl.procs.append(ContainerProc(c, next_start=float("inf")))
            elif builtin:
                await self.open_builtin(wl, c)
        await self.open_attach(wl)
        if wl.procs:
            await asyncio.to_thread(self.start_sandbox, wl)
        for p in wl.procs:
            self._spawn(wl, p, time.time())

    async def open_attach(self, wl: PodWorkload) -> None:
        """The attach sockets of its containers with held stdio (`kubectl attach`)."""
        for p in wl.procs:
            if stdio.wants_stdio(p.container):
                p.attach = stdio.AttachServer(
                    stdio.attach_socket(self.log_dir.parent, *wl.ps.key, p.container.name),
                    p.container.name, p.current_io)
                await p.attach.start()

    def start_sandbox(self, wl: PodWorkload) -> None:
        """Start the pod's pause process and wait (SANDBOX_TIMEOUT at most) until its
        namespaces are set up. A sandbox slower than that is not given up: its containers
        start once it is (`_sandbox_ready`, checked again on each reap)."""
        self._launch_sandbox(wl)
        deadline = time.monotonic() + SANDBOX_TIMEOUT
        while time.monotonic() < deadline and wl.sandbox is not None \
                and wl.sandbox.poll() is None:
            if self._sandbox_ready(wl):
                return
            time.sleep(0.005)
        if not self._sandbox_ready(wl):
            log.warning("%s/%s: the pod sandbox is not up after %.0fs (see %s)",
                        wl.ps.pod.namespace, wl.ps.pod.name, SANDBOX_TIMEOUT,
                        self._sandbox_log(wl))

    def _sandbox_log(self, wl: PodWorkload) -> Path:
        return self.log_dir / f"{wl.ps.pod.namespace}_{wl.ps.pod.name}_sandbox.log"

    def _launch_sandbox(self, wl: PodWorkload) -> None:
        """Start the pause process (no waiting)."""
        ps = wl.ps
        wl.sandbox, wl.sandbox_pid = None, None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self._sandbox_log(wl), "ab") as out:
            try:
                wl.sandbox = subprocess.Popen(
                    sandbox.sandbox_argv(ps.pod, ps.netns), stdin=subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                    env={"PATH": sandbox.PATH})
            except OSError as e:
                out.write(f"emunet: cannot start the pod sandbox: {e}\n".encode())
                return
        self.on_process(wl.sandbox.pid, sandbox.sandbox_role(ps.pod), netns=ps.netns)

    @staticmethod
    def _sandbox_ready(wl: PodWorkload) -> bool:
        """The pause process runs: the hostname and /tmp are set up before its exec."""
        if wl.sandbox is None or wl.sandbox.poll() is not None:
            wl.sandbox_pid = None
            return False
        if wl.sandbox_pid is None:
            pid = sandbox.child_pid(wl.sandbox.pid)
            if pid is not None and _exe_name(pid) == sandbox.PAUSE:
                wl.sandbox_pid = pid
        return wl.sandbox_pid is not None

    async def open_builtin(self, wl: PodWorkload, c: Container) -> None:
        """A built-in container's listeners; like a web server it logs one line per request
        to its container log (what `emunet logs` shows)."""
        ps = wl.ps
        loop = asyncio.get_running_loop()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"{ps.pod.namespace}_{ps.pod.name}_{c.name}.log"
        out = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        wl.logs.append(out)
        for cp in c.ports:
            out.write(f"emunet built-in server: listening on {cp.container_port}/{cp.protocol}"
                      f" ({identity(ps)})\n")
            if cp.protocol == "TCP":
                for family in listen_families(ps):
                    sock = await asyncio.to_thread(listen, ps.netns, socket.SOCK_STREAM,
                                                   cp.container_port, family)
                    srv = await asyncio.start_server(
                        lambda r, w, ps=ps, out=out: serve_tcp(
                            ps, r, w, lambda line: out.closed or out.write(line)), sock=sock)
                    wl.servers.append(srv)
            elif cp.protocol == "UDP":
                for family in listen_families(ps):
                    sock = await asyncio.to_thread(listen, ps.netns, socket.SOCK_DGRAM,
                                                   cp.container_port, family)
                    tr, _ = await loop.create_datagram_endpoint(lambda ps=ps: UDPIdentity(ps),
                                                                sock=sock)
                    wl.transports.append(tr)
            else:
                log.warning("%s/%s: built-in server has no %s support; port %d not served",
                            ps.pod.namespace, ps.pod.name, cp.protocol, cp.container_port)

    async def restart(self, key: tuple[str, str], container: str) -> None:
        """Restart one container (a failed liveness probe): a process is ended and `reap`
        starts it again (with kubelet's back-off); built-in listeners are closed and reopened."""
        wl = self.pods.get(key)
        if wl is None:
            return
        for p in wl.procs:
            if p.container.name == container and p.popen is not None:
                await asyncio.to_thread(end_process, p.popen)
                return
        c = next((c for c in wl.ps.pod.containers if c.name == container), None)
        if c is None or c.command or c.args:
            return
        self._close_builtin(wl)
        wl.builtin_restarts += 1
        for c in wl.ps.pod.containers:
            if not (c.command or c.args):
                await self.open_builtin(wl, c)

    @staticmethod
    def _close_builtin(wl: PodWorkload) -> None:
        for srv in wl.servers:
            srv.close()
        for tr in wl.transports:
            tr.close()
        for f in wl.logs:
            f.close()
        wl.servers, wl.transports, wl.logs = [], [], []

    def _await_sandbox(self, wl: PodWorkload, p: ContainerProc, now: float) -> None:
        """A container cannot start before its sandbox: retry soon while the sandbox sets
        up; a sandbox that exited is recreated, as the kubelet recreates a dead pod sandbox,
        with the container's back-off, and why it went is said once in the container log."""
        if wl.sandbox is not None and wl.sandbox.poll() is None:
            p.next_start = now + 0.2  # still setting up
            return
        if p.backoff == 0.0 or wl.sandbox is not None:
            status = "could not start" if wl.sandbox is None else \
                f"exited with status {wl.sandbox.returncode}"
            last = _last_line(self._sandbox_log(wl))
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with open(self.log_dir / f"{wl.ps.pod.namespace}_{wl.ps.pod.name}_"
                      f"{p.container.name}.log", "ab") as out:
                out.write(f"emunet: the pod sandbox {status}{': ' + last if last else ''};"
                          f" container not started, sandbox recreated\n".encode())
        p.backoff = min(_BACKOFF_MAX, max(10.0, p.backoff * 2))
        p.next_start = now + p.backoff
        self._launch_sandbox(wl)

    def _spawn(self, wl: PodWorkload, p: ContainerProc, now: float) -> None:
        ps = wl.ps
        if not self._sandbox_ready(wl):
            self._await_sandbox(wl, p, now)
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        logf = self.log_dir / f"{ps.pod.namespace}_{ps.pod.name}_{p.container.name}.log"
        cmd = [*p.container.command, *p.container.args]
        out = open(logf, "ab")  # noqa: SIM115 (a held stdio keeps it: the output passes here)
        io = stdio.Stdio(p.container, out) if stdio.wants_stdio(p.container) else None
        fds = io.child if io else (subprocess.DEVNULL, out.fileno(), subprocess.STDOUT)
        argv = sandbox.container_argv(ps.pod, p.container, wl.sandbox_pid, cmd)
        env = sandbox.env(ps.pod, p.container)
        try:
            # Own session: `down` can end the process group (a shell and its children).
            p.popen = subprocess.Popen(argv, stdin=fds[0], stdout=fds[1], stderr=fds[2],
                                       env=env, start_new_session=True, umask=0o022)
        except OSError as e:
            out.write(f"emunet: cannot start {cmd}: {e}\n".encode())
            out.close()
            if io is not None:
                io.started()
                io.close()
            p.popen = None
            self._exited(wl, p, podphase.START_ERROR, now)
            return
        p.started_at, p.io = now, io
        if io is not None:
            io.on_end = lambda popen=p.popen: self._when_exited(popen)
            io.started()
        else:
            out.close()
        self.on_process(p.popen.pid, sandbox.container_role(ps.pod, p.container),
                        netns=ps.netns)

    def _when_exited(self, popen: subprocess.Popen, tries: int = 50) -> None:
        """Its output ended: once the process is gone too (a few ms later), on_exit."""
        if popen.poll() is not None:
            self.on_exit()
        elif tries:
            asyncio.get_running_loop().call_later(0.02, self._when_exited, popen, tries - 1)

    def _exited(self, wl: PodWorkload, p: ContainerProc, code: int, now: float) -> None:
        """A run ended: recorded; started again or not by the pod's restartPolicy."""
        p.last = {"exitCode": code, "reason": podphase.reason(code),
                  "startedAt": p.started_at or now, "finishedAt": now}
        if not podphase.restarts_after(wl.ps.pod.restart_policy, code):
            p.done = True
            if all(q.done for q in wl.procs) and not wl.servers and not wl.transports:
                # the pod ran to completion: the kubelet then removes its sandbox
                if wl.sandbox is not None and wl.sandbox.poll() is None:
                    asyncio.get_running_loop().run_in_executor(None, end_process, wl.sandbox)
            return
        p.restarts += 1
        p.backoff = min(_BACKOFF_MAX, max(10.0, p.backoff * 2))  # kubelet: 10s, x2
        p.next_start = now + (0 if p.restarts == 1 else p.backoff)

    def reap(self, now: float) -> bool:
        """Record exited containers; restart them by the pod's restartPolicy, with the
        kubelet's back-off. True if any moved."""
        changed = False
        for wl in self.pods.values():
            for p in wl.procs:
                if p.popen is not None and p.popen.poll() is not None:
                    code = podphase.exit_code(p.popen.returncode)
                    p.popen = None
                    self._exited(wl, p, code, now)
                    changed = True
                if p.popen is None and not p.done and now >= p.next_start:
                    self._spawn(wl, p, now)
                    changed = True
        return changed

    def statuses(self, key: tuple[str, str]) -> dict[str, dict]:
        """Each process container's runtime status (PodState.containers)."""
        wl = self.pods.get(key)
        return {p.container.name: p.status() for p in wl.procs} if wl else {}

    def container_pid(self, key: tuple[str, str], container: str) -> int | None:
        """The container's first process (PID 1 of its PID namespace), None if not running."""
        wl = self.pods.get(key)
        for p in wl.procs if wl else ():
            if p.container.name == container and p.popen is not None:
                return sandbox.child_pid(p.popen.pid)
        return None

    def running(self, key: tuple[str, str]) -> bool:
        """Its workload is up: listeners open, every container process alive (ports aside)."""
        wl = self.pods.get(key)
        now = time.time()
        return wl is not None and all(p.reported(now) for p in wl.procs)

    def ready(self, key: tuple[str, str]) -> bool:
        """Ready when built-in listeners are open, every container process runs, and every TCP
        containerPort a command container declares accepts connections (its ports listen)."""
        wl = self.pods.get(key)
        if wl is None or not self.running(key):
            return False
        return all(_listens(wl.ps, cp.container_port) for p in wl.procs
                   for cp in p.container.ports if cp.protocol == "TCP")

    async def stop(self, key: tuple[str, str], grace: float | None = None) -> None:
        """End the pod's containers (together: one grace period for all, as the kubelet's
        killPod), then its sandbox."""
        wl = self.pods.pop(key, None)
        if wl is None:
            return
        await self._end([wl], TERM_WAIT if grace is None else grace)

    async def stop_all(self) -> None:
        """Every pod at once (`down`): one short grace period for all containers, then the
        sandboxes, rather than a grace period per pod in turn. `down` tears the whole cluster
        down (k3s-killall.sh SIGKILLs outright); 0.5 s is for processes that exit on SIGTERM."""
        await self._end([self.pods.pop(key) for key in list(self.pods)], grace=0.5)

    async def _end(self, wls: list[PodWorkload], grace: float = TERM_WAIT) -> None:
        for wl in wls:
            self._close_builtin(wl)
        procs = [p for wl in wls for p in wl.procs]
        await asyncio.to_thread(end_processes, [p.popen for p in procs
                                                if p.popen is not None and p.popen.poll() is None],
                                grace)
        for p in procs:
            for held in (p.io, p.attach):
                if held is not None:
                    held.close()
        # each pod's PID 1: what was left in its PID namespace goes too
        await asyncio.to_thread(end_processes, [wl.sandbox for wl in wls if wl.sandbox is not None
                                                and wl.sandbox.poll() is None], grace)



def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def _exe_name(pid: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return ""


def _listens(ps: PodState, port: int) -> bool:
    """A TCP connect to the pod's own IP from inside its namespace (over its loopback)."""
    try:
        sock = socket_in_netns(ps.netns, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return False
    with sock:
        sock.settimeout(0.2)
        return sock.connect_ex((ps.ip, port)) == 0
