"""The API's view of the cluster: every object derived from the state file, with the
resourceVersions and watch events found by diffing one reload against the last.

No second store: the objects are recomputed from `state.json` on every reload (SIGHUP from the
supervisor's publish, a changed file, a node agent's liveness). resourceVersion is
1000 x the state's generation (`ClusterState.generation`, bumped by every publish), plus the
changes the view saw between two publishes (node liveness is not in the state); an object's
resourceVersion is the one of the reload that last changed it, as etcd's modRevision is. The
history of changes since this process started answers watches from a resourceVersion (older:
410 Gone, as the API server answers a compacted revision; clients then list again).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emunet.api import apps, objects, stored
from emunet.api import endpoints as user_eps
from emunet.model.endpoints import ENDPOINTS
from emunet.state import loaded, store
from emunet.state.cluster import KUBE_SYSTEM, ClusterState, PodState
from emunet.state.follow import Follower

Key = tuple[str, str]  # (namespace or "", name)
HISTORY = 20000  # watch events kept; a watch from an older resourceVersion gets 410 Gone
RV_PER_GENERATION = 1000
WRITTEN = {"namespaces": "Namespace", "pods": "Pod", "services": "Service",
           "deployments": "Deployment", "networkpolicies": "NetworkPolicy",
           "ciliumnetworkpolicies": "CiliumNetworkPolicy", "endpoints": "Endpoints",
           "endpointslices": "EndpointSlice", "configmaps": "ConfigMap"}


@dataclass
class Change:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    plural: str
    obj: dict[str, Any]
    old: dict[str, Any] | None  # the object before (watch filters: did it match before?)


# pod key -> (what its object was built from, the object): View's reuse of pod objects
PodMemo = dict[Key, tuple[tuple, dict[str, Any]]]


def _pod_inputs(st: ClusterState, ps: PodState, deleted_at: float | None) -> tuple | None:
    """Everything `objects.pod` reads (compared by identity first: the state's reader keeps
    unchanged objects, emunet.state.follow); None: not reusable (a terminating pod's
    deletionTimestamp may be now; a body written through the API is overlaid in place)."""
    ns, name = ps.key
    if ps.terminating or f"Pod/{ns}/{name}" in st.manifests:
        return None
    owner = ps.pod.owner
    # a shallow copy of the PodState (mutable: a caller may change it in place and refresh),
    # compared by value; its Pod is frozen and replaced on every change
    return (copy.copy(ps), st.cluster, st.node(ps.node), st.created.get(f"Pod/{ns}/{name}"),
            st.created.get(f"ReplicaSet/{ns}/{owner}") if owner else None)


def _pods(st: ClusterState, deleting: dict[Key, float], memo: PodMemo | None
          ) -> dict[Key, dict]:
    """Every pod's object; with `memo`, a pod whose inputs are the very objects of the last
    build keeps its object (issue 17: 2,000 pod objects rebuilt per publish were most of the
    API server's reload). A reused object is unchanged, so no watch event follows."""
    out: dict[Key, dict] = {}
    fresh: PodMemo = {}
    for key, ps in st.pods.items():
        inputs = _pod_inputs(st, ps, deleting.get(key)) if memo is not None else None
        hit = memo.get(key) if memo is not None and inputs is not None else None
        if hit is not None and len(hit[0]) == len(inputs) and all(  # type: ignore[arg-type]
                a is b or a == b for a, b in zip(hit[0], inputs, strict=True)):  # type: ignore[arg-type]
            obj = hit[1]
        else:
            obj = objects.pod(st, ps, deleting.get(key))
        if inputs is not None:
            fresh[key] = (inputs, obj)
        out[key] = obj
    if memo is not None:
        memo.clear()
        memo.update(fresh)
    return out


def build(st: ClusterState, node_ready: dict[str, bool],
          deleting: dict[Key, float] | None = None,
          memo: PodMemo | None = None) -> dict[str, dict[Key, dict]]:
    """Every served object of the state, by plural, then (namespace, name); `deleting`: when
    each terminating pod was first seen terminating (its deletionTimestamp); `memo`: pod
    objects of the last build, reused where nothing they derive from changed."""
    out: dict[str, dict[Key, dict]] = collections.defaultdict(dict)
    for n in st.namespaces:
        out["namespaces"][("", n)] = objects.namespace(st, n)
    for n in st.nodes:
        out["nodes"][("", n.name)] = objects.node(st, n.name, node_ready.get(n.name, True))
    out["pods"] = _pods(st, deleting or {}, memo)
    for es in st.endpoint_sets.values():  # a user's: first, a controller's overwrites them
        if es.kind == ENDPOINTS:
            out["endpoints"][(es.namespace, es.name)] = user_eps.endpoints(st, es)
            for sl in user_eps.mirrored_slices(st, es):
                out["endpointslices"][(es.namespace, sl["metadata"]["name"])] = sl
        else:
            out["endpointslices"][(es.namespace, es.name)] = user_eps.endpoint_slice(st, es)
    index = st.pod_index()  # one pass over the pods, not one per Service
    for key, ss in st.services.items():
        out["services"][key] = objects.service(st, ss)
        if ss.service.selector is None:
            continue  # no controller: its Endpoints and slices are the user's (above)
        out["endpoints"][key] = objects.endpoints(st, key, index)
        for sl in objects.endpoint_slices(st, key, index):
            out["endpointslices"][(key[0], sl["metadata"]["name"])] = sl
    for d in st.deployments.values():
        out["deployments"][d.key] = apps.deployment(st, d)
        for rs in apps.replicasets(st, d):
            out["replicasets"][(d.namespace, rs["metadata"]["name"])] = rs
    for pol in st.policies.values():
        out["networkpolicies"][pol.key] = apps.network_policy(st, pol)
    for o in st.others:
        if o.kind == "CiliumNetworkPolicy":
            cnp = apps.cilium_policy(st, o.body)
            out["ciliumnetworkpolicies"][(o.namespace or "default", o.name)] = cnp
    if KUBE_SYSTEM in st.namespaces:
        out["configmaps"][(KUBE_SYSTEM, "coredns")] = apps.coredns_configmap(st)
    if st.manifests:  # what the last write through the API said of the unmodelled fields
        for plural, kind in WRITTEN.items():
            for (ns, name), obj in out.get(plural, {}).items():
                stored.overlay(obj, st.manifests.get(stored.key_of(kind, ns, name)))
    return out


class View:
    """The current objects, the resourceVersion, and the change history for watches."""

    def __init__(self, state_path: Path | None,
                 node_ready: Callable[[], dict[str, bool]] | None = None,
                 state: ClusterState | None = None) -> None:
        self.path = state_path
        self.node_ready_fn = node_ready or (lambda: {})
        self.node_ready: dict[str, bool] = {}
        # the published state, from deltas when they follow (emunet.state.follow)
        self.follow = Follower(state_path) if state_path is not None else None
        if state is None:
            if self.follow is None:
                raise ValueError("View needs a state or a state file")
            try:
                self.follow.load()
            except FileNotFoundError:
                raise store.NotUpError(store.NOT_UP) from None
            assert self.follow.state is not None
            state = self.follow.state
        self.state: ClusterState = state
        self.objs: dict[str, dict[Key, dict]] = {}
        self.pod_memo: PodMemo = {}  # build's reuse of unchanged pods' objects
        self.rv = 0
        self.history: collections.deque[Change] = collections.deque(maxlen=HISTORY)
        self.oldest = 0  # a watch from below this resourceVersion is too old
        self.watchers: set[asyncio.Queue[Change | None]] = set()
        self.deleting: dict[Key, float] = {}
        # (plural, key) -> (object, when): objects a namespace deletion took with it
        # (emunet.api.writes answers their own DELETE as upstream does while it terminates)
        self.cascaded: dict[tuple[str, Key], tuple[dict[str, Any], float]] = {}
        self.refresh(self.state)
        self.oldest = self.rv
        self._report()

    def _report(self) -> None:
        """Tell the supervisor which state this view serves (emunet.state.loaded): a write
        through any face is answered once kubectl would see it here too."""
        if self.path is not None:
            with contextlib.suppress(OSError):
                loaded.report(self.path.parent, "apiserver", self.state.generation)

    def reload(self) -> None:
        """Read the state file again (SIGHUP) and publish what changed to the watchers."""
        if self.follow is None:
            return
        try:
            self.follow.load()
        except Exception:  # noqa: BLE001 - gone during `down`: keep serving the last state
            self.follow.seen = self.follow.current()  # tried once per publish
            return
        assert self.follow.state is not None
        self.refresh(self.follow.state)
        self._report()

    def poll(self) -> None:
        """A changed state file without a SIGHUP (one sent before our handler was installed),
        or a node agent that stopped or started: refresh."""
        ready = self.node_ready_fn()
        if self.follow is not None and self.follow.changed():
            self.node_ready = ready
            self.reload()
        elif ready != self.node_ready:
            self.node_ready = ready
            self.refresh(self.state)

    def refresh(self, st: ClusterState) -> None:
        self.state = st
        now = time.time()
        self.deleting = {k: self.deleting.get(k, now) for k, ps in st.pods.items()
                         if ps.terminating}
        new = build(st, self.node_ready, self.deleting, self.pod_memo)
        base = st.generation * RV_PER_GENERATION
        rv = max(self.rv + 1, base)
        changes: list[Change] = []
        for plural in set(new) | set(self.objs):
            old_objs, new_objs = self.objs.get(plural, {}), new.get(plural, {})
            for key, obj in new_objs.items():
                prev = old_objs.get(key)
                if prev is obj:  # reused by build (its pod memo): unchanged
                    continue
                if prev is not None and _same(prev, obj):
                    obj["metadata"]["resourceVersion"] = prev["metadata"]["resourceVersion"]
                    continue
                obj["metadata"]["resourceVersion"] = str(rv)
                changes.append(Change(rv, "MODIFIED" if prev else "ADDED", plural, obj, prev))
            for key, prev in old_objs.items():
                if key not in new_objs:
                    gone = copy.deepcopy(prev)
                    gone["metadata"]["resourceVersion"] = str(rv)
                    changes.append(Change(rv, "DELETED", plural, gone, prev))
        self.objs = new
        if changes or rv == base:
            self.rv = rv
        for ch in changes:
            if len(self.history) == self.history.maxlen:
                self.oldest = self.history[0].rv
            self.history.append(ch)
            for q in self.watchers:
                q.put_nowait(ch)

    def since(self, rv: int) -> list[Change] | None:
        """The changes after `rv` (None: older than the history kept)."""
        if rv < self.oldest:
            return None
        return [ch for ch in self.history if ch.rv > rv]

    def subscribe(self) -> asyncio.Queue[Change | None]:
        q: asyncio.Queue[Change | None] = asyncio.Queue()
        self.watchers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Change | None]) -> None:
        self.watchers.discard(q)

    def close_watches(self) -> None:
        """The server is stopping (`emunet down`): end every watch stream cleanly."""
        for q in self.watchers:
            q.put_nowait(None)


def _same(a: dict, b: dict) -> bool:
    ma = {k: v for k, v in a["metadata"].items() if k != "resourceVersion"}
    return ma == b["metadata"] and {k: v for k, v in a.items() if k != "metadata"} == {
        k: v for k, v in b.items() if k != "metadata"}
