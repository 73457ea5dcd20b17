"""The Deployment controller: which pods a Deployment should have now. Pure, no I/O.

Modelled on kube-controller-manager's deployment and replicaset controllers
(pkg/controller/deployment/rolling.go, recreate.go, sync.go; pkg/controller/replicaset):

- A ReplicaSet is `<deployment>-<pod-template-hash>`; it is not stored on its own: a pod records
  it in `Pod.owner`, so a ReplicaSet's size is the number of its live (non-terminating) pods.
- The hash is FNV-32a of the pod template, encoded with the apimachinery "safe" alphabet, so the
  same template always maps to the same ReplicaSet (kubectl rollout undo finds it again).
- Pod names are `<replicaset>-<5 random chars>` (generateName); the RNG is injected.
- RollingUpdate: scale the new ReplicaSet up to at most replicas + maxSurge pods in total, and
  old ones down while at least replicas - maxUnavailable pods stay Ready; Recreate: all old pods
  go, and only when they are gone do new ones start.

`reconcile` returns a `Plan` (pods to create, pods to delete, events); the supervisor carries it
out: new pods are added to the state and built, deleted pods leave the endpoints first and stop
after a grace period.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
import random
from dataclasses import dataclass, field

from emunet.model import Deployment, Pod
from emunet.state.cluster import ClusterState, PodIpam, PodState, StateError, pod_capacity

# k8s.io/apimachinery/pkg/util/rand: no vowels (no words) and no 0/1/3 (no look-alikes).
ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
TEMPLATE_HASH_LABEL = "pod-template-hash"
_FNV32_OFFSET, _FNV32_PRIME = 0x811C9DC5, 0x01000193


def safe_encode(s: str) -> str:
    """apimachinery rand.SafeEncodeString: each byte picks a letter of ALPHANUMS."""
    return "".join(ALPHANUMS[ord(c) % len(ALPHANUMS)] for c in s)


def fnv32a(data: bytes) -> int:
    h = _FNV32_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV32_PRIME) & 0xFFFFFFFF
    return h


def template_hash(template: Pod) -> str:
    """ComputeHash: FNV-32a of the template, printed as a decimal and safe-encoded.

    Kubernetes hashes a spew dump of the Go struct, so the value differs from a real
    cluster's for the same YAML; what matters holds: equal templates, equal hashes.
    """
    body = dataclasses.asdict(dataclasses.replace(template, name="", namespace="", loc=None,
                                                  owner=None))
    return safe_encode(str(fnv32a(json.dumps(body, sort_keys=True).encode())))


def random_suffix(rng: random.Random, n: int = 5) -> str:
    """utilrand.String(5), what generateName appends."""
    return "".join(rng.choice(ALPHANUMS) for _ in range(n))


def scaled_value(value: int | str, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent: "25%" of total, rounded up or down."""
    if isinstance(value, int):
        return value
    pct = int(value.rstrip("%"))
    return math.ceil(pct * total / 100) if round_up else math.floor(pct * total / 100)


def surge_and_unavailable(d: Deployment) -> tuple[int, int]:
    """deploymentutil.ResolveFenceposts: surge rounds up, unavailable down; never both 0."""
    surge = scaled_value(d.max_surge, d.replicas, round_up=True)
    unavailable = scaled_value(d.max_unavailable, d.replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # else a rollout could never make progress
    return surge, unavailable


def rs_name(d: Deployment, h: str) -> str:
    return f"{d.name}-{h}"


@dataclass
class Event:
    """What the controller did, as a Kubernetes Event (involvedObject kind/name)."""

    kind: str
    name: str
    reason: str
    message: str
    type: str = "Normal"  # Normal | Warning


@dataclass
class Plan:
    create: list[Pod] = field(default_factory=list)
    delete: list[tuple[str, str]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    short: int = 0  # replicas wanted that the pod ranges cannot hold (a FailedCreate event)


def owned_pods(st: ClusterState, d: Deployment) -> list[PodState]:
    """The Deployment's pods, oldest first (state.pods keeps creation order)."""
    out = []
    for ps in st.pods.values():
        owner = ps.pod.owner
        if ps.pod.namespace == d.namespace and owner and owner.startswith(d.name + "-") \
                and "-" not in owner[len(d.name) + 1:]:
            out.append(ps)
    return out


def _deletion_order(pods: list[PodState]) -> list[PodState]:
    """controller.ActivePods ranking, simplified: not ready before ready, newest first."""
    ranked = list(enumerate(pods))
    ranked.sort(key=lambda ip: (ip[1].ready, -ip[0]))
    return [p for _, p in ranked]


class _Builder:
    """Accumulates one reconcile's decisions over a view of the live pods.

    Everything a new pod's placement needs (per-node pod counts, free addresses) is counted
    once here and kept in step by each placement (a heap of nodes), so a reconcile that
    creates n pods costs O(pods + n log nodes), not a rescan of every pod per new pod.
    """

    def __init__(self, st: ClusterState, d: Deployment, rng: random.Random) -> None:
        self.st, self.d, self.rng = st, d, rng
        self.plan = Plan()
        self.h = template_hash(d.template)
        self.new_rs = rs_name(d, self.h)
        owned = owned_pods(st, d)
        self.terminating = [p for p in owned if p.terminating]
        self.live = [p for p in owned if not p.terminating]
        self.new = [p for p in self.live if p.pod.owner == self.new_rs]
        self.old = [p for p in self.live if p.pod.owner != self.new_rs]
        self.created = 0
        self.taken = {k[1] for k in st.pods if k[0] == d.namespace}
        self._heap: list[tuple[int, int, int, str]] | None = None
        self.free = st.free_pod_slots()

    def _nodes_heap(self) -> list[tuple[int, int, int, str]]:
        """(this Deployment's pods, all pods, config order, name) of every node with room."""
        if self._heap is None:
            mine = {n.name: 0 for n in self.st.nodes}
            total = dict(mine)
            for p in self.st.pods.values():
                total[p.node] = total.get(p.node, 0) + 1
            for p in self.live:
                mine[p.node] = mine.get(p.node, 0) + 1
            self._heap = [(mine[n.name], total[n.name], n.index, n.name) for n in self.st.nodes
                          if self.free.get(n.name, 0) > 0]
            heapq.heapify(self._heap)
        return self._heap

    def room(self) -> int:
        """How many more pods this Deployment's template can get (a pinned template: on its
        node only)."""
        pinned = self.d.template.node_name
        return max(0, self.free.get(pinned, 0) if pinned else sum(self.free.values()))

    def scale_up(self, n: int) -> None:
        if n <= 0:
            return
        short = n - min(n, self.room())
        if short:
            self.plan.short = short
            self.plan.events.append(Event(
                "ReplicaSet", self.new_rs, "FailedCreate",
                f"Error creating: {short} pod(s) do not fit: the nodes' pod ranges hold "
                f"{sum(pod_capacity(n) for n in self.st.nodes)} pods in all (add nodes or use "
                "larger podCIDRs)", "Warning"))
            n -= short
            if n == 0:
                return
        for _ in range(n):
            name = f"{self.new_rs}-{random_suffix(self.rng)}"
            while name in self.taken:
                name = f"{self.new_rs}-{random_suffix(self.rng)}"
            self.taken.add(name)
            self.plan.create.append(self._pod(name))
            self.plan.events.append(Event("ReplicaSet", self.new_rs, "SuccessfulCreate",
                                          f"Created pod: {name}"))
        self.created += n
        self.plan.events.append(Event("Deployment", self.d.name, "ScalingReplicaSet",
                                      f"Scaled up replica set {self.new_rs} from "
                                      f"{len(self.new) + self.created - n} to "
                                      f"{len(self.new) + self.created}"))

    def _pod(self, name: str) -> Pod:
        t = self.d.template
        labels = {**t.labels, TEMPLATE_HASH_LABEL: self.h}
        node = t.node_name or self._spread()
        if node is not None:
            self.free[node] = self.free.get(node, 0) - 1
        return dataclasses.replace(t, namespace=self.d.namespace, name=name, labels=labels,
                                   owner=self.new_rs, loc=self.d.loc, node_name=node)

    def _spread(self) -> str | None:
        """The node with the fewest of this Deployment's pods, then the fewest pods: what the
        default scheduler's PodTopologySpread and balanced-allocation scoring add up to.
        Only nodes whose pod range has room are candidates (the scheduler's filter step)."""
        heap = self._nodes_heap()
        if not heap:
            return None
        mine, total, index, name = heapq.heappop(heap)
        if self.free.get(name, 0) > 1:  # room left after this pod
            heapq.heappush(heap, (mine + 1, total + 1, index, name))
        return name

    def scale_down(self, pods: list[PodState], n: int, rs: str, was: int) -> int:
        victims = _deletion_order(pods)[:max(0, n)]
        for p in victims:
            self.plan.delete.append(p.key)
            self.plan.events.append(Event("ReplicaSet", rs, "SuccessfulDelete",
                                          f"Deleted pod: {p.pod.name}"))
        if victims:
            self.plan.events.append(Event("Deployment", self.d.name, "ScalingReplicaSet",
                                          f"Scaled down replica set {rs} from {was} to "
                                          f"{was - len(victims)}"))
        return len(victims)


def reconcile(st: ClusterState, d: Deployment, rng: random.Random) -> Plan:
    """One sync of one Deployment against the live pods in `st` (which it does not change)."""
    b = _Builder(st, d, rng)
    if d.strategy == "Recreate":
        _recreate(b)
    else:
        _rolling(b)
    return b.plan


def _recreate(b: _Builder) -> None:
    """recreate.go: old ReplicaSets to 0, wait until their pods are gone, then scale up."""
    if b.old:
        for rs, pods in _by_rs(b.old):
            b.scale_down(pods, len(pods), rs, len(pods))
        return
    if any(p.pod.owner != b.new_rs for p in b.terminating):
        return
    _sync_new(b)


def _sync_new(b: _Builder) -> None:
    want = b.d.replicas
    if len(b.new) > want:
        b.scale_down(b.new, len(b.new) - want, b.new_rs, len(b.new))
    else:
        b.scale_up(want - len(b.new))


def _rolling(b: _Builder) -> None:
    """rolling.go rolloutRolling: reconcileNewReplicaSet, then reconcileOldReplicaSets."""
    d = b.d
    if not b.old:
        _sync_new(b)
        return
    surge, unavailable = surge_and_unavailable(d)
    total = len(b.live)
    if len(b.new) > d.replicas:
        b.scale_down(b.new, len(b.new) - d.replicas, b.new_rs, len(b.new))
    else:
        b.scale_up(min(d.replicas + surge - total, d.replicas - len(b.new)))
    total += b.created
    min_available = d.replicas - unavailable
    new_unavailable = len(b.new) + b.created - sum(p.ready for p in b.new)
    max_scaled_down = total - min_available - new_unavailable
    if max_scaled_down <= 0:
        return
    # cleanupUnhealthyReplicas: old pods that are not Ready go first, they serve nobody.
    removed: set[tuple[str, str]] = set()
    for rs, pods in _by_rs(b.old):
        unhealthy = [p for p in pods if not p.ready]
        n = b.scale_down(unhealthy, min(len(unhealthy), max_scaled_down - len(removed)),
                         rs, len(pods))
        removed |= {p.key for p in _deletion_order(unhealthy)[:n]}
    # scaleDownOldReplicaSetsForRollingUpdate: keep minAvailable Ready pods at all times.
    available = sum(p.ready for p in b.live)
    budget = available - min_available
    for rs, pods in _by_rs(b.old):
        if budget <= 0:
            break
        left = [p for p in pods if p.key not in removed]
        n = b.scale_down(left, min(budget, len(left)), rs, len(left))
        budget -= n


def _by_rs(pods: list[PodState]) -> list[tuple[str, list[PodState]]]:
    """Pods grouped by ReplicaSet, the oldest ReplicaSet (its first pod) first."""
    groups: dict[str, list[PodState]] = {}
    for p in pods:
        groups.setdefault(p.pod.owner or "", []).append(p)
    return list(groups.items())


def apply_plan(st: ClusterState, plan: Plan) -> list[PodState]:
    """Add the planned pods to the state (IPAM); returns their PodStates. Deletions are the
    caller's: a deleted pod must leave the endpoints before it stops."""
    ipam = PodIpam(st)
    return [st.add_pod(pod, ipam) for pod in plan.create]


def plan_deployments(st: ClusterState, deployments: tuple[Deployment, ...]) -> None:
    """`emunet up`: each Deployment's first ReplicaSet, names drawn from a seeded RNG so that
    planning stays a pure function of the config."""
    for d in deployments:
        st.deployments[d.key] = d
        p = reconcile(st, d, random.Random(f"{st.cluster.name}/{d.namespace}/{d.name}"))
        if p.short:  # config validation says so first, with the file and line
            raise StateError(f"Deployment {d.namespace}/{d.name}: spec.replicas: "
                             f"{d.replicas} pods do not fit in the nodes' pod ranges")
        apply_plan(st, p)


def status(st: ClusterState, d: Deployment) -> dict[str, int]:
    """READY / UP-TO-DATE / AVAILABLE as `kubectl get deployments` counts them."""
    live = [p for p in owned_pods(st, d) if not p.terminating]
    new_rs = rs_name(d, template_hash(d.template))
    return {"replicas": len(live), "ready": sum(p.ready for p in live),
            "updated": sum(p.pod.owner == new_rs for p in live),
            "available": sum(p.ready for p in live)}
