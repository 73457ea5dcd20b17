"""Which L7 proxy listeners a state needs, and which each node's proxy has open.

The node agent redirects a new connection to the proxy port as soon as it has the state; the
proxy opens its listener after its own read of the same state, and until then the pod refuses
the connection (never bypasses the proxy). So that `emunet up` returns only when L7 policy is
really enforced, each proxy publishes the listeners it has open after every reload (a small
JSON file in the run dir, replaced atomically) and `up` waits until every node's file covers
what the state asks for (`expected`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from emunet.state.cluster import ClusterState

Listener = tuple[str, int]  # (pod IP, proxy port)


def path(run_dir: Path, node: str) -> Path:
    return run_dir / f"l7proxy-{node}.json"


def publish(run_dir: Path, node: str, listeners: set[Listener], missing: bool) -> None:
    """Write the node proxy's open listeners (atomic: a reader sees the old or the new)."""
    p = path(run_dir, node)
    tmp = p.with_name(p.name + ".tmp")
    doc = {"pid": os.getpid(), "listeners": sorted(listeners), "missing": missing}
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, p)


def open_on(run_dir: Path, node: str) -> set[Listener]:
    """The listeners the node's proxy last said it has open (none if it has not said yet)."""
    try:
        doc = json.loads(path(run_dir, node).read_text())
        return {(str(ip), int(port)) for ip, port in doc["listeners"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def expected(state: ClusterState) -> dict[str, set[Listener]]:
    """Per emunet node, the listeners its proxy must have open for this state."""
    from emunet.host.kernelnode import is_kernel
    from emunet.policy.cilium import cilium_policies, l7_ports
    from emunet.policy.compile import pod_identities

    if not cilium_policies(state):
        return {}
    identity_of = pod_identities(state)
    out: dict[str, set[Listener]] = {}
    for ps in state.pods.values():
        if is_kernel(state, ps.node):
            continue  # no agent and no proxy there: Flannel alone enforces no policy
        for lp in l7_ports(state, ps, identity_of).values():
            for a in (ps.ip, ps.ip6) if ps.ip6 else (ps.ip,):  # a listener per family
                out.setdefault(ps.node, set()).add((a, lp.proxy_port))
    return out
