"""What the controllers and node power use of the supervisor that runs them, as a Protocol.

The supervisor (emunet.cluster.supervisor) owns the state, its lock, the children and the pods'
workloads; the controllers (Deployments, probes, termination) and `emunet node stop|start` act
through this interface, so they build on it and not on the supervisor module (which builds on
them).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from emunet.cluster.workloads import Workloads
from emunet.host.manifest import Manifest
from emunet.state.cluster import ClusterState, PodState


class Runtime(Protocol):
    state: ClusterState
    lock: asyncio.Lock
    manifest: Manifest
    workloads: Workloads
    children: dict[str, Any]  # role -> a supervised child process (start(), stop())
    paused: set[str]  # children not to restart: their node is stopped
    stopped_nodes: set[str]

    async def start_pod(self, ps: PodState) -> None:
        """Start the pod's workload and its probes."""

    def refresh_ready(self, coalesce: bool = False, publish: bool = True) -> None:
        """Recompute pod readiness; publish the state when it changed."""

    def publish(self) -> None:
        """Write the state file and tell every agent, the DNS responder and the proxies."""

    async def wait_loaded(self) -> None:
        """Until every running agent, proxy and the DNS responder has loaded the state last
        published (bounded)."""
