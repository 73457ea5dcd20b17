"""The supervisor's controllers: Deployments, probes, graceful pod termination, events.

What kube-controller-manager and the kubelet do for a living cluster, carried out in the
supervisor's event loop on each tick:

- Deployments: `deploy.reconcile` decides; new pods are added to the state, built on the host
  and started; deleted pods terminate gracefully.
- Termination (Kubernetes' terminating-endpoint behaviour): a deleted pod is first marked
  terminating, which takes it out of every Service's endpoints and DNS; the state is published
  (agents and DNS reload on SIGHUP), and only after a grace period is the pod stopped and its
  namespace removed. A client looping over the Service never meets a stopped backend.
- Probes: readiness decides endpoint membership, a liveness failure restarts the container.
- Events: everything above is recorded in a bounded `EventLog` served to `emunet get events`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import random
import time
from collections.abc import Coroutine
from typing import Any

from emunet import naming
from emunet.cluster import prober
from emunet.cluster.events import WARNING, EventLog
from emunet.cluster.runtime import Runtime
from emunet.host import netlink
from emunet.state import deploy
from emunet.state.cluster import PodIpam, PodState, StateError, pod_capacity

log = logging.getLogger("emunet.cluster.controllers")
GRACE = 1.0  # seconds a terminating pod keeps serving after it left the endpoints
MAX_GRACE = 30.0  # a deletion's gracePeriodSeconds is capped here (upstream's default period)
MAX_BACKOFF = 30.0  # seconds between syncs of a Deployment whose pods do not fit


class Controllers:
    def __init__(self, sup: Runtime, rng: random.Random | None = None) -> None:
        self.sup = sup
        self.events = EventLog()
        self.rng = rng or random.Random()
        self.trackers: dict[tuple[str, str], list[prober.ProbeTracker]] = {}
        self.tasks: set[asyncio.Task] = set()
        self.reconciling = False
        self.endpoints: dict[tuple[str, str], tuple[str, ...]] = {}
        self.restarts: dict[tuple[str, str], int] = {}
        # Deployment -> (its spec then, next try, delay): pods that did not fit
        self.backoff: dict[tuple[str, str], tuple[deploy.Deployment, float, float]] = {}
        self.deleting: set[tuple[str, str]] = set()  # Deployments in a foreground deletion

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("controller task failed", exc_info=task.exception())

    def event(self, ps_or_ns: PodState | str, kind: str, name: str, reason: str, message: str,
              type: str = "Normal") -> None:
        ns = ps_or_ns.pod.namespace if isinstance(ps_or_ns, PodState) else ps_or_ns
        self.events.record(time.time(), ns, kind, name, reason, message, type)

    # ---- hooks the supervisor calls ---------------------------------------------------------

    def pod_started(self, ps: PodState) -> None:
        now = time.time()
        self.trackers[ps.key] = prober.trackers_for(ps.pod.containers, now)
        self.restarts[ps.key] = 0
        self.event(ps, "Pod", ps.pod.name, "Scheduled",
                   f"Successfully assigned {ps.pod.namespace}/{ps.pod.name} to {ps.node}")
        for c in ps.pod.containers:
            self.event(ps, "Pod", ps.pod.name, "Started", f"Started container {c.name}")

    def probes_ready(self, key: tuple[str, str]) -> bool:
        if key not in self.trackers:
            return False  # not started yet: its probes do not exist yet either
        # Ready: started (startup probe passed, if any) and every readiness probe passing
        return all(t.result for t in self.trackers.get(key, ())
                   if t.kind in (prober.READINESS, prober.STARTUP))

    def held_by_probes(self) -> int:
        """Pods that run but whose readiness or startup probe has failed (it has spoken)."""
        return sum(1 for key, ts in self.trackers.items()
                   if (ps := self.sup.state.pods.get(key)) is not None and not ps.ready
                   and not ps.terminating and self.sup.workloads.ready(key)
                   and any(t.kind in (prober.READINESS, prober.STARTUP) and t.failures
                           and not t.result
                           for t in ts))

    def observed(self, ps: PodState, ready: bool, restarts: int) -> None:
        """Called by the supervisor's readiness refresh before it stores a change."""
        if restarts > self.restarts.get(ps.key, 0):
            self.restarts[ps.key] = restarts
            for t in self.trackers.get(ps.key, ()):
                t.reset(time.time())  # a restarted container is probed from scratch
            self.event(ps, "Pod", ps.pod.name, "Started", f"Restarted (restart {restarts})")
        if ready != ps.ready:
            self.event(ps, "Pod", ps.pod.name, "Ready" if ready else "NotReady",
                       f"Pod is {'' if ready else 'not '}Ready: "
                       f"{'in' if ready else 'out of'} the endpoints of its Services")

    def published(self) -> None:
        """After each state publish: an EndpointsChanged event per Service whose ready
        endpoints moved (the story's lesson: pod IPs shift, the Service stays)."""
        st = self.sup.state
        now: dict[tuple[str, str], tuple[str, ...]] = {}
        index = st.pod_index()  # one pass over the pods, not one per Service
        for key in st.services:
            eps = sorted({e.ip for lst in st.endpoints(key, index).values() for e in lst
                          if e.ready},
                         key=_ip_order)
            now[key] = tuple(eps)
            before = self.endpoints.get(key)
            if before is not None and before != now[key]:
                added = sorted(set(now[key]) - set(before))
                gone = sorted(set(before) - set(now[key]))
                delta = "; ".join(x for x in (f"+{','.join(added)}" if added else "",
                                              f"-{','.join(gone)}" if gone else "") if x)
                self.event(key[0], "Service", key[1], "EndpointsChanged",
                           f"ready addresses: {','.join(eps) or '<none>'} ({delta})")
        self.endpoints = now

    def tick(self, now: float) -> None:
        self._run_probes(now)
        self.events.maybe_save(naming.run_dir() / "events.json", now)
        if self.sup.state.deployments and not self.reconciling and not self.sup.lock.locked():
            self.reconciling = True
            self._spawn(self._reconcile())

    # ---- Deployments ------------------------------------------------------------------------

    async def _reconcile(self) -> None:
        try:
            async with self.sup.lock:
                for key in list(self.sup.state.deployments):
                    d = self.sup.state.deployments.get(key)
                    if d is None or key in self.deleting or self._backing_off(key, d):
                        continue
                    short = await self._sync(d)
                    self._note_short(key, d, short)
        finally:
            self.reconciling = False

    def _backing_off(self, key: tuple[str, str], d: deploy.Deployment) -> bool:
        """A Deployment whose last sync could not create every pod is synced again only after
        its back-off (the ReplicaSet controller's rate-limited requeue), unless it changed."""
        b = self.backoff.get(key)
        if b is None:
            return False
        if b[0] != d:  # scaled or edited: try at once
            del self.backoff[key]
            return False
        return time.monotonic() < b[1]

    def _note_short(self, key: tuple[str, str], d: deploy.Deployment, short: int) -> None:
        if not short:
            self.backoff.pop(key, None)
            return
        prev = self.backoff.get(key)
        delay = min(MAX_BACKOFF, prev[2] * 2) if prev is not None and prev[0] == d else 1.0
        self.backoff[key] = (d, time.monotonic() + delay, delay)

    async def _sync(self, d: deploy.Deployment) -> int:
        """One reconcile of one Deployment, carried out; returns how many of the pods it
        wanted the pod ranges could not hold."""
        st = self.sup.state
        # Planning is linear, but thousands of replicas still take a while: it runs in a
        # thread, on a copy of the pod table (the lock keeps other writers out meanwhile), so
        # the loop keeps restarting agents and answering the socket.
        view = dataclasses.replace(st, pods=dict(st.pods))
        plan = await asyncio.to_thread(deploy.reconcile, view, d, self.rng)
        if not plan.create and not plan.delete:
            for e in plan.events:  # a FailedCreate alone
                self.event(d.namespace, e.kind, e.name, e.reason, e.message, e.type)
            return plan.short
        for e in plan.events:
            self.event(d.namespace, e.kind, e.name, e.reason, e.message, e.type)
        created: list[PodState] = []
        ipam = PodIpam(st)
        for i, pod in enumerate(plan.create):
            try:
                created.append(st.add_pod(pod, ipam))
            except StateError as e:  # a pod range filled meanwhile: the next sync retries
                self.event(d.namespace, "ReplicaSet", pod.owner or d.name, "FailedCreate",
                           f"Error creating: {e}", WARNING)
                plan.short += len(plan.create) - i
                break
            if i % 256 == 255:
                await asyncio.sleep(0)  # let the loop breathe between batches
        self.terminate(plan.delete)
        for ps in created:
            try:
                await asyncio.to_thread(netlink.add_pod, st, ps, self.sup.manifest)
            except Exception as e:  # the pod goes again; the next sync retries
                log.error("pod %s/%s: cannot build: %s", *ps.key, e)
                st.remove_pod(ps.key)
                self.event(ps, "Pod", ps.pod.name, "FailedCreatePodSandBox", str(e), WARNING)
                continue
            await self.sup.start_pod(ps)
        self.sup.refresh_ready()
        self.sup.publish()
        return plan.short

    async def op_events(self, req: dict[str, Any], say: Any) -> dict[str, Any]:
        return {"events": self.events.list(req.get("namespace")), "now": time.time()}

    async def op_scale(self, req: dict[str, Any], say: Any) -> dict[str, Any]:
        key = (req.get("namespace") or "default", req["name"])
        async with self.sup.lock:
            d = self.sup.state.deployments.get(key)
            if d is None:
                raise StateError(f"deployment {key[1]!r} not found in namespace {key[0]}")
            replicas = req.get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise StateError(f"spec.replicas: must be an integer, 0 or more, got "
                                 f"{replicas!r}"[:200])
            most = sum(pod_capacity(n) for n in self.sup.state.nodes)
            if replicas > most:  # a replica count no pod range can ever hold
                raise StateError(f"spec.replicas: {replicas} pods do not fit: the nodes' pod "
                                 f"ranges hold {most} pods in all")
            self.sup.state.deployments[key] = dataclasses.replace(d, replicas=replicas)
            self.sup.publish()
        return {"changes": [f"deployment.apps/{key[1]} scaled"]}

    # ---- termination ------------------------------------------------------------------------

    def adopted(self) -> None:
        """After a supervisor restart (emunet.cluster.adopt): the published restart counts
        are not news, a pod the dead supervisor was terminating finishes terminating, and
        the events it recorded are still listed (as events outlive a kubelet in etcd)."""
        self.events.load(naming.run_dir() / "events.json")
        for key, ps in list(self.sup.state.pods.items()):
            self.restarts[key] = ps.restarts
            if ps.terminating:
                self._spawn(self._finish_later(key, 0.0))

    def terminate(self, keys: list[tuple[str, str]] | list[PodState],
                  grace: float | None = None) -> None:
        """Take pods out of the endpoints now; stop them after the grace period.

        Pods already removed from the state by `apply`/`delete` are passed as PodStates and
        put back as terminating for their grace period. `grace`: a deletion's
        gracePeriodSeconds (capped at MAX_GRACE): the pod serves min(GRACE, grace) more, then
        its processes get SIGTERM and up to `grace` seconds before SIGKILL (0: killed at
        once); None is emunet's own (GRACE, then container.TERM_WAIT). The caller publishes."""
        st = self.sup.state
        for k in keys:
            if isinstance(k, PodState):
                st.pods[k.key] = k
                k = k.key
            ps = st.pods.get(k)
            if ps is None or ps.terminating:
                continue
            ps.terminating, ps.ready = True, False
            for c in ps.pod.containers:
                self.event(ps, "Pod", ps.pod.name, "Killing", f"Stopping container {c.name}")
            self._spawn(self._finish_later(k, None if grace is None
                                           else max(0.0, min(grace, MAX_GRACE))))

    async def _finish_later(self, key: tuple[str, str], grace: float | None) -> None:
        await asyncio.sleep(GRACE if grace is None else min(GRACE, grace))
        async with self.sup.lock:
            ps = self.sup.state.pods.get(key)
            if ps is None or not ps.terminating:
                return
            # The agents let go of the pod's veth before it is deleted under them.
            self.sup.state.pods.pop(key, None)
            self.sup.publish()
            await self.sup.wait_loaded()  # the agents have closed its veth's socket
            await self.sup.workloads.stop(key, grace)
            self.trackers.pop(key, None)
            self.restarts.pop(key, None)
            await asyncio.to_thread(netlink.remove_pod, ps, self.sup.manifest)

    # ---- probes -----------------------------------------------------------------------------

    def _run_probes(self, now: float) -> None:
        for key, trackers in self.trackers.items():
            ps = self.sup.state.pods.get(key)
            if ps is None or ps.terminating:
                continue
            for t in trackers:
                if t.kind != prober.STARTUP and not prober.started(trackers, t.container):
                    continue  # kubelet: other probes are off until the startup probe passes
                if t.due(now):
                    t.running = True
                    self._spawn(self._probe(ps, t))

    async def _probe(self, ps: PodState, t: prober.ProbeTracker) -> None:
        container = next(c for c in ps.pod.containers if c.name == t.container)
        try:
            ok, message = await prober.run(
                t.probe, container, ps.pod, ps.netns, ps.ip,
                self.sup.workloads.container_pid(ps.key, container.name))
        except Exception as e:  # a probe that cannot run is a failed probe
            ok, message = False, str(e)
        if t not in self.trackers.get(ps.key, ()):
            return  # the pod went away meanwhile
        now = time.time()
        if not ok:
            self.event(ps, "Pod", ps.pod.name, "Unhealthy", f"{t.kind} probe failed: {message}",
                       WARNING)
        flipped = t.record(ok, now, message)
        if t.gives_up or (flipped and t.kind == prober.LIVENESS and not t.result):
            self.event(ps, "Pod", ps.pod.name, "Killing", f"Container {t.container} failed "
                       f"{t.kind.lower()} probe, will be restarted")
            await self.sup.workloads.restart(ps.key, t.container)
            for other in self.trackers.get(ps.key, ()):
                if other.container == t.container:
                    other.reset(time.time())
        elif not flipped:
            return
        self.sup.refresh_ready()


def _ip_order(ip: str) -> tuple[int, ...]:
    """IPv4 endpoints first, in numeric order, then IPv6 ones (dual-stack: one endpoint per
    family of a pod, EndpointSlices per family)."""
    if ":" in ip:
        return (6, *ipaddress.IPv6Address(ip).packed)
    return (4, *(int(x) for x in ip.split(".")))
