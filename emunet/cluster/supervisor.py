"""The supervisor: the background process `emunet up` leaves running.

It owns the node agents and the DNS responder (child processes, restarted when they die), runs
every pod's workload, keeps `state.json` current (pod readiness drives endpoints) and answers the
CLI on the root-only control socket (status, apply, delete, shutdown). Every process it starts is
recorded in the manifest first, so `emunet down` can end it even if the supervisor itself died.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time

from emunet import control, naming
from emunet.cluster import adopt, controlserver, nodepower
from emunet.cluster.apply import (
    Change,
    apply_config,
    apply_objects,
    canonical_kind,
    delete_config,
    delete_object,
)
from emunet.cluster.child import Child, stop_all
from emunet.cluster.controllers import Controllers
from emunet.cluster.workloads import Workloads
from emunet.host import kernelnode, netlink, tc
from emunet.l7 import listeners
from emunet.model import Impairment
from emunet.state import loaded, store
from emunet.state.cluster import KUBE_SYSTEM, PodState, StateError
from emunet.state.deploy import owned_pods
from emunet.state.labels import label

log = logging.getLogger("emunet.cluster.supervisor")
_TICK = 0.25  # how often children are checked; a dead agent is back well within 1 s
# How long a change waits for the agents, proxies and DNS responder to load the state it
# published (they take milliseconds); a stuck child delays the answer this long, no longer.
LOAD_WAIT = 2.0
# the tick publishes readiness changes no sooner than this many times the last publish's
# duration after it (refresh_ready); writes (apply, delete, label, ...) publish at once
PUBLISH_GAP_FACTOR = 4.0
START_WAIT = 10.0  # ... and a child that has just started, this long after its start


class Supervisor:
    def __init__(self, adopting: bool = False, restarts: int = 0) -> None:
        # adopting: a restart (emunet.cluster.watchdog) takes over what the last one left
        self.adopting, self.restarts = adopting, restarts
        self.state = store.read()
        self.publisher = store.Publisher()
        self.manifest = netlink.Manifest.open(naming.run_dir() / "manifest.json")
        (naming.run_dir() / "logs").mkdir(exist_ok=True)
        self.workloads = Workloads(naming.run_dir() / "logs", self.manifest.add_process)
        self.workloads.on_exit = self._container_exited
        self.state_path = state_path = str(naming.run_dir() / "state.json")
        self.children: dict[str, Child] = {}
        for n in self.state.nodes:
            if kernelnode.is_kernel(self.state, n.name):
                continue  # Linux forwards there; its Services are nftables (publish)
            self.children[f"agent-{n.name}"] = Child(
                f"agent-{n.name}", n.netns,
                ["emunet.agent", "--state", state_path, "--node", n.name])
        # Cilium's per-node Envoy (HTTP rules of CiliumNetworkPolicy, emunet.l7.proxy): only on
        # nodes with a pod an L7 rule selects, from the first such rule on (`_l7_children`); a
        # restart takes over every proxy the last supervisor started
        self._l7_children(self.manifest.processes() if adopting else [])
        dns_pod = self._dns_pod()
        if dns_pod is not None:
            self.children["dns"] = Child("dns", dns_pod.netns,
                                         ["emunet.dns.server", "--state", state_path])
        # The Kubernetes API server (emunet.api): a view of the state file, writes come back here
        self.children["apiserver"] = Child(
            "apiserver", None, ["emunet.api", "--state", state_path,
                                "--port", str(self.state.cluster.api_port)])
        self.lock = asyncio.Lock()
        self.stopping = asyncio.Event()
        self.controllers = Controllers(self)  # Deployments, probes, termination, events
        self.stopped_nodes: set[str] = set()  # `emunet node stop` (emunet/cluster/nodepower.py)
        self.paused: set[str] = set()  # children not to restart: their node is stopped
        self.started = time.time()
        # publish pacing (refresh_ready): a readiness change not yet published, when the last
        # publish ended and how long it took
        self._pending, self._published_at, self._publish_cost = False, 0.0, 0.0

    def _l7_children(self, recorded: list[dict] | None = None) -> list[Child]:
        """Add an L7 proxy child for each emunet node that now needs one (a pod there is
        selected by an L7 rule) or has one recorded (`recorded`: a restart's manifest); the
        new ones, not yet started. A proxy stays once started (its rules may come back; an
        idle proxy sleeps): ~40 MB per node is saved on every node that never had L7 rules."""
        nodes = set(listeners.expected(self.state))
        nodes |= {e["role"].removeprefix("l7proxy-") for e in recorded or ()
                  if str(e.get("role", "")).startswith("l7proxy-")}
        new = []
        for n in self.state.nodes:
            role = f"l7proxy-{n.name}"
            if n.name in nodes and role not in self.children \
                    and not kernelnode.is_kernel(self.state, n.name):
                self.children[role] = Child(role, n.netns, [
                    "emunet.l7.proxy", "--state", self.state_path, "--node", n.name])
                new.append(self.children[role])
        return new

    def _dns_pod(self):
        for p in self.state.pods.values():
            if p.pod.namespace == KUBE_SYSTEM and p.pod.labels.get("k8s-app") == "kube-dns":
                return p
        return None

    # ---- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        sock = control.socket_path()
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        old = os.umask(0o077)  # the control socket is root-only
        server = await asyncio.start_unix_server(
            lambda r, w: controlserver.serve(self._handler, r, w), path=str(sock),
            limit=controlserver.MAX_LINE)
        os.umask(old)
        recorded = self.manifest.processes() if self.adopting else []
        if self.adopting:
            nodepower.restore(self)  # stopped nodes stay stopped
        for role, child in self.children.items():
            if role not in self.paused and not (self.adopting and child.adopt(recorded)):
                child.start(self)
        for ps in list(self.state.pods.values()):
            if ps.node not in self.stopped_nodes:
                await self.start_pod(ps, recorded if self.adopting else None)
        if self.adopting:
            log.warning("supervisor restart %d: adopted %s", self.restarts, ", ".join(
                r for r, c in self.children.items() if c.alive()))
            self.controllers.adopted()
            self.publish()  # the agents learn of this generation; endpoints follow readiness
        self.refresh_ready()
        try:
            while not self.stopping.is_set():
                self._tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), _TICK)
        finally:
            server.close()
            await self.workloads.stop_all()
            stop_all(list(self.children.values()))
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()

    async def start_pod(self, ps, recorded: list[dict] | None = None) -> None:
        """Start the pod's workload, or adopt it (`recorded`: the manifest's processes)."""
        builtin = ps.pod.labels.get("k8s-app") != "kube-dns"  # coredns is served by `dns`
        try:
            if recorded is not None:
                await adopt.adopt_pod(self.workloads, ps, recorded, builtin=builtin)
            else:
                await self.workloads.start(ps, builtin=builtin)
        except Exception as e:  # a workload failing must not take the cluster down
            log.error("pod %s/%s: workload failed to start: %s", *ps.key, e)
        self.controllers.pod_started(ps)

    def _tick(self) -> None:
        for child in self.children.values():
            if not child.alive() and child.role not in self.paused:
                if child.popen is not None:
                    child.restarts += 1
                    log.warning("%s exited (%s); restarting", child.role,
                                child.popen.returncode)
                child.start(self)
        moved = self.workloads.reap(time.time())
        if moved or self._pending:
            self.refresh_ready(coalesce=True)
        else:
            # only pods not Ready yet can become Ready by themselves; a Ready pod changes
            # through what calls refresh_ready for every pod (a container exit: `moved`, a
            # probe flip, a node stop): at 2,000 pods, walking them all each tick was the
            # supervisor's idle load whenever one pod stayed unready (a Completed pod)
            waiting = [ps for ps in self.state.pods.values() if not ps.ready]
            if waiting:
                self.refresh_ready(coalesce=True, only=waiting)
        self.controllers.tick(time.time())

    def _container_exited(self) -> None:
        if self.workloads.reap(time.time()):
            self.refresh_ready()

    def refresh_ready(self, coalesce: bool = False, publish: bool = True,
                      only: list[PodState] | None = None) -> None:
        """Recompute pod readiness; on any change publish the state (endpoints follow).

        `coalesce` (the tick): publish no sooner than PUBLISH_GAP_FACTOR times the last
        publish took after it, the change waiting for the next tick: while a thousand pods
        become Ready one after another, each publish (the whole state written, and re-read by
        every agent and the DNS responder) carries many of them instead of one each.
        `publish` False: the caller publishes next (the change is left pending until then).
        `only`: look at these pods alone (the tick's pods not Ready yet)."""
        changed = self._pending
        dns = self.children.get("dns")
        for ps in self.state.pods.values() if only is None else only:
            if ps.terminating:
                continue  # out of the endpoints for good (controllers.terminate)
            if ps.pod.labels.get("k8s-app") == "kube-dns" and ps.pod.namespace == KUBE_SYSTEM:
                ready = dns is not None and dns.alive()
            else:  # readiness probes, where declared, have the last word (as in the kubelet)
                ready = self.workloads.ready(ps.key) and self.controllers.probes_ready(ps.key)
            wl = self.workloads.pods.get(ps.key)
            restarts = wl.restarts if wl else 0
            running = ready or self.workloads.running(ps.key)
            statuses = self.workloads.statuses(ps.key)
            if running != ps.running or statuses != ps.containers:
                # the API's phase and container states (emunet.state.podphase)
                ps.running, ps.containers, changed = running, statuses, True
            if ready != ps.ready or restarts != ps.restarts:
                self.controllers.observed(ps, ready, restarts)
                ps.ready, ps.restarts = ready, restarts
                changed = True
        if changed:
            gap = max(_TICK, PUBLISH_GAP_FACTOR * self._publish_cost)
            if not publish or (coalesce and time.monotonic() < self._published_at + gap):
                self._pending = True
            else:
                self.publish()

    def publish(self) -> None:
        t0 = time.monotonic()
        self._pending = False
        self.state.stamp(time.time())  # the next generation: resourceVersion, loaded reports
        self.publisher.publish(self.state)  # the state, then its delta (emunet.state.follow)
        self.controllers.published()
        for n in self.state.nodes:
            if kernelnode.is_kernel(self.state, n.name):
                try:
                    kernelnode.sync_services(self.state, n)
                except kernelnode.KernelNodeError as e:
                    log.error("%s", e)
        for child in self.children.values():
            child.signal(signal.SIGHUP)
        if self.state.cilium_policies:
            for child in self._l7_children():  # the first L7 rule for a node: its proxy
                if child.netns is not None and child.role.removeprefix("l7proxy-") in \
                        self.stopped_nodes:
                    self.paused.add(child.role)  # started with its node (nodepower.start)
                else:
                    child.start(self)  # reads the state just written: no SIGHUP needed
        self._published_at = time.monotonic()
        self._publish_cost = self._published_at - t0
        log.info("published generation %d in %.3fs", self.state.generation, self._publish_cost)

    async def wait_loaded(self) -> None:
        """Until every running child (agents, L7 proxies, the DNS responder) has loaded the
        state last published, so a change is in effect when the CLI hears it is done. A child
        that is down is not waited for (it reads the newest state when it starts); one that
        does not catch up within LOAD_WAIT is logged and the answer goes out anyway."""
        # a child started just now (an L7 proxy for the first rule on its node) is given the
        # time a Python process takes to start, not only the time a reload takes
        now = time.time()
        wait = max([LOAD_WAIT] + [c.started + START_WAIT - now for c in self.children.values()
                                  if c.alive()])
        t0 = time.monotonic()
        late = await loaded.wait(naming.run_dir(), self.state.generation, self._readers, wait)
        log.info("generation %d loaded by the readers in %.3fs", self.state.generation,
                 time.monotonic() - t0)
        if late:
            log.warning("state %d not loaded by %s within %.1fs", self.state.generation,
                        ", ".join(late), LOAD_WAIT)

    def _readers(self) -> list[str]:
        """The children to wait for: running, and their node not stopped."""
        return [role for role, c in self.children.items()
                if c.alive() and role not in self.paused]

    # ---- control socket ----------------------------------------------------------------------

    def _handler(self, op: str) -> controlserver.Handler:
        """The coroutine serving a checked request (controlserver checks it against OPS)."""
        if op in ("scale", "events"):  # served by the controllers
            return getattr(self.controllers, f"op_{op}")
        return getattr(self, f"_op_{op}")

    async def _op_ping(self, req, say) -> dict:
        return {"pid": os.getpid()}

    async def _op_status(self, req, say) -> dict:
        # The published state, as the tick keeps it (at most a tick or a publish gap behind):
        # `up` polls this, and a publish per poll kept a 1,000-pod supervisor busy writing the
        # state and every reader re-reading it (pods became Ready at ~1 a second)
        children = {}
        for name, c in self.children.items():
            children[name] = {"alive": c.alive(), "pid": c.popen.pid if c.popen else None,
                              "restarts": c.restarts, "since": c.started}
        return {"children": children, "uptime": time.time() - self.started,
                "supervisor": {"pid": os.getpid(), "restarts": self.restarts,
                               "watchdog": os.getppid()},
                "pods_ready": sum(p.ready for p in self.state.pods.values()),
                "pods_held": self.controllers.held_by_probes(),
                "pods": len(self.state.pods), "generation": self.state.generation,
                # readers not yet forwarding by this state (`up` waits for none)
                # (and the supervisor itself while a readiness change waits to be published)
                "behind": loaded.behind(naming.run_dir(), self._readers(),
                                        self.state.generation)
                + (["supervisor"] if self._pending else [])}

    async def _op_shutdown(self, req, say) -> dict:
        self.stopping.set()
        return {}

    async def _op_node(self, req, say) -> dict:
        """`emunet node stop|start NODE`: a node failure and its recovery."""
        if req.get("action") not in ("stop", "start"):
            raise StateError(f"unknown node action {req.get('action')!r}: use stop or start")
        async with self.lock:
            fn = nodepower.stop if req["action"] == "stop" else nodepower.start
            msg = await fn(self, req["node"])
            await self.wait_loaded()
            return {"changes": [msg]}

    async def _op_link(self, req, say) -> dict:
        """`emunet link set|reset NODE`: tc for the rate, the state for the agents (faults)."""
        imp = Impairment(**req["impairment"]) if req.get("impairment") else None
        async with self.lock:
            msg = await asyncio.to_thread(tc.set_link, self.state, req["node"], imp)
            self.publish()
            await self.wait_loaded()
            return {"changes": [msg]}

    async def _op_label(self, req, say) -> dict:
        """Relabel a pod or namespace; agents recompile identities and policies on SIGHUP
        (answered once they have)."""
        async with self.lock:
            # label() checks everything before it changes anything: all-or-nothing
            msg = label(self.state, req["kind"], req["name"], req.get("namespace"),
                        req["labels"], bool(req.get("overwrite")))
            self.publish()
            await self.wait_loaded()
            return {"changes": [msg]}

    async def _op_apply(self, req, say) -> dict:
        async with self.lock:
            changes = apply_config(self.state, req["file"])
            return await self._carry_out(changes, say)

    async def _op_apply_objects(self, req, say) -> dict:
        """Objects written through the Kubernetes API (JSON bodies, not a file): the same
        validation and all-or-nothing apply as `_op_apply`."""
        async with self.lock:
            changes = apply_objects(self.state, req["objects"])
            return await self._carry_out(changes, say)

    async def _op_delete(self, req, say) -> dict:
        """`grace` (gracePeriodSeconds) and `propagation` (Background, the default; Orphan:
        a Deployment's pods stay; Foreground: they go first) come from the API's DELETE."""
        grace, policy = req.get("grace"), req.get("propagation") or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise StateError(f"propagationPolicy {policy!r}: use Foreground, Background or "
                             "Orphan")
        if policy == "Foreground" and not req.get("file") \
                and canonical_kind(req.get("kind") or "") == "Deployment":
            return await self._delete_foreground(req["name"], req.get("namespace"), grace, say)
        async with self.lock:
            if req.get("file"):
                changes = delete_config(self.state, req["file"])
            else:
                changes = delete_object(self.state, req["kind"], req["name"],
                                        req.get("namespace"), orphan=policy == "Orphan")
            return await self._carry_out(changes, say, grace)

    async def _delete_foreground(self, name: str, namespace: str | None, grace: int | None,
                                 say) -> dict:
        """The garbage collector's foreground deletion: the Deployment stays (its controller
        paused) until its pods have terminated, then it goes."""
        key = (namespace or "default", name)
        async with self.lock:
            d = self.state.deployments.get(key)
            if d is None:
                raise StateError(f"deployment {name!r} not found in namespace {key[0]}")
            self.controllers.deleting.add(key)
            pods = [p.key for p in owned_pods(self.state, d)]
            gone = [self.state.remove_pod(k) for k in pods
                    if not self.state.pods[k].terminating]
            self.controllers.terminate([p for p in gone if p is not None], grace)
            self.publish()
        try:
            while any(k in self.state.pods for k in pods):
                await asyncio.sleep(_TICK)
        finally:
            self.controllers.deleting.discard(key)
        async with self.lock:
            changes = [Change(f"pod/{k[1]} deleted") for k in pods]
            if key in self.state.deployments:
                changes += delete_object(self.state, "Deployment", name, key[0])
            return await self._carry_out(changes, say)

    async def _carry_out(self, changes: list[Change], say, grace: int | None = None) -> dict:
        """Make the kernel and the workloads match a state change computed by `apply`."""
        # Removed pods leave the endpoints now and stop after a grace period, as Kubernetes
        # terminates pods: clients of their Services never meet a stopped backend.
        # One publish per change where it can be (each is re-read by every agent and the DNS
        # responder: at 1,000 pods three publishes were most of an apply's 7 s): a second one
        # first only when pods leave, so they are out of the endpoints before they stop.
        removed = [ch.removed_pod for ch in changes if ch.removed_pod]
        self.controllers.terminate(removed, grace)
        if removed:
            self.publish()
        for ch in changes:
            if ch.added_pod is not None:
                await asyncio.to_thread(netlink.add_pod, self.state, ch.added_pod, self.manifest)
                await self.start_pod(ch.added_pod)
        self.refresh_ready(publish=False)  # a new pod's readiness goes out in this publish
        self.publish()
        await self.wait_loaded()  # the answer means: the datapath already works by it
        for ch in changes:
            say({"progress": ch.message})
        return {"changes": [ch.message for ch in changes]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="emunet-supervisor")
    ap.add_argument("--debug", action="store_true")
    ap.add_argument("--adopt", action="store_true",
                    help="a restart: take over the running cluster (emunet.cluster.adopt)")
    ap.add_argument("--restarts", type=int, default=0, help="how many restarts this is")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # `up` records our pid in the manifest, then says go: only then may we write to it.
    if sys.stdin.readline() != "go\n":
        return 1  # whoever started us died first (its stdin closed): nothing to run
    # Children inherit an ignored SIGHUP until they install their reload handler: a state
    # published while one is still starting must not kill it (it reads the state after).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Everything the cluster writes (state, counters, conntrack snapshots, logs) is root-only;
    # agents and the DNS responder inherit this, container processes get 022 back (workloads).
    os.umask(0o077)
    asyncio.run(Supervisor(args.adopt, args.restarts).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
