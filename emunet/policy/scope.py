"""Whether a published change can alter one node's datapath tables at all (issue 17): a
NetworkPolicy change selects the pods of a few nodes; every other agent's tables stay what they
are, so those agents take the new state without rebuilding them. Pure.

The tables (`datapath.NodeTables.from_state`, `policy.compile.compile_node`) read the cluster,
nodes, namespaces, pods, Services, user endpoints and both kinds of policy; the agent also reads
links (netem) and pods' creation times (conntrack scrub). Of a NetworkPolicy, a node's tables
hold only the compiled policy of its own pods that the policy selects (ingress and egress are
both enforced on the selected pod's node; peers are identities, which derive from pods and
namespaces alone, emunet.policy.compile). So a change is without effect on `node` when it
touches only sections no table reads, plus NetworkPolicies of which neither the old nor the
new version selects a pod on `node`.
"""

from __future__ import annotations

from emunet.state.cluster import ClusterState

# sections of the state (emunet.state.delta) no node table is built from
_UNREAD = frozenset({"generation", "manifests", "deployments", "last_ip", "last_ip6"})


def node_unaffected(changes: dict[str, set] | None, old: ClusterState | None,
                    new: ClusterState, node: str) -> bool:
    """True when `changes` (emunet.state.follow.Follower.load's answer for the step from
    `old` to `new`) cannot change `node`'s tables; False when it may, or cannot be told."""
    if changes is None or old is None:
        return False
    for section, keys in changes.items():
        if section in _UNREAD:
            continue
        if section == "created":
            # creation times of pods feed the conntrack scrub (datapath.ctscrub.pod_owners)
            if any(str(k).startswith("Pod/") for k in keys):
                return False
            continue
        if section != "policies":
            return False
        local = [ps for ps in new.pods.values() if ps.node == node]
        for key in keys:
            for pol in (old.policies.get(key), new.policies.get(key)):
                if pol is not None and any(
                        ps.pod.namespace == pol.namespace
                        and pol.pod_selector.matches(ps.pod.labels) for ps in local):
                    return False
    return True
