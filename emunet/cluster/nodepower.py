"""`emunet node stop|start NODE`: a node failure and its recovery, inside the supervisor.

Stop is what a node crash looks like to the cluster: the node's agent (and L7 proxy, and the
DNS responder if CoreDNS runs there) stops and is not restarted, so nothing is forwarded to or
from its pods any more; its pods' workloads stop, so the kubelet-side readiness turns false and
the pods leave every Service's endpoints (the other nodes' agents reload and stop balancing to
them); `emunet get nodes` shows it NotReady (no live agent). The pods stay in the state with
their IPs: emunet does not run the node-lifecycle controller's eviction (Kubernetes waits 5
minutes before evicting the pods of an unreachable node), so a Deployment is not rescheduled
elsewhere. Start restarts the agents and the workloads; the pods come back Ready with the same
IPs and rejoin the endpoints. Which nodes are stopped is kept in the run dir too, so a
restarted supervisor (emunet.cluster.adopt) keeps them stopped.
"""

from __future__ import annotations

import asyncio
import json

from emunet import naming
from emunet.cluster.runtime import Runtime
from emunet.state.cluster import KUBE_SYSTEM, StateError


def _saved() -> str:
    return str(naming.run_dir() / "stopped-nodes.json")


def _save(nodes: set[str]) -> None:
    with open(_saved(), "w") as f:
        json.dump(sorted(nodes), f)


def restore(sup: Runtime) -> None:
    """After a supervisor restart: the nodes stopped before stay stopped (their agents,
    proxies and workloads are neither adopted nor started)."""
    try:
        with open(_saved()) as f:
            nodes = set(json.load(f))
    except (OSError, ValueError):
        return
    sup.stopped_nodes |= nodes
    for node in nodes:
        sup.paused.update(_roles(sup, node))


def _roles(sup: Runtime, node: str) -> list[str]:
    roles = [r for r in (f"agent-{node}", f"l7proxy-{node}") if r in sup.children]
    dns = next((p for p in sup.state.pods.values() if p.pod.namespace == KUBE_SYSTEM
                and p.pod.labels.get("k8s-app") == "kube-dns"), None)
    if dns is not None and dns.node == node and "dns" in sup.children:
        roles.append("dns")
    return roles


async def stop(sup: Runtime, node: str) -> str:
    sup.state.node(node)  # StateError for an unknown node
    if node in sup.stopped_nodes:
        raise StateError(f"node {node} is already stopped")
    sup.stopped_nodes.add(node)
    _save(sup.stopped_nodes)
    for role in _roles(sup, node):
        sup.paused.add(role)
        await asyncio.to_thread(sup.children[role].stop)
    pods = [ps for ps in sup.state.pods.values() if ps.node == node]
    for ps in pods:
        await sup.workloads.stop(ps.key)
    sup.refresh_ready()  # readiness false -> out of the endpoints, published to the agents
    return f"node/{node} stopped ({len(pods)} pods down, agent stopped)"


async def start(sup: Runtime, node: str) -> str:
    sup.state.node(node)
    if node not in sup.stopped_nodes:
        raise StateError(f"node {node} is not stopped")
    for role in _roles(sup, node):
        sup.paused.discard(role)
        sup.children[role].start(sup)
    pods = [ps for ps in sup.state.pods.values() if ps.node == node and not ps.terminating]
    for ps in pods:
        await sup.start_pod(ps)
    sup.stopped_nodes.discard(node)
    _save(sup.stopped_nodes)
    sup.refresh_ready()
    return f"node/{node} started ({len(pods)} pods starting)"
