"""policy.scope.node_unaffected: a change it calls without effect on a node leaves that node's
compiled tables exactly as they were (checked against compiles of both states), and the
changes that do reach a node are never skipped."""

from __future__ import annotations

import copy
import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from emunet.datapath import NodeTables
from emunet.model.netpol import LabelSelector
from emunet.policy import compile as pc
from emunet.policy.scope import node_unaffected
from emunet.state import codec, delta
from emunet.state.follow import apply_state
from tests.unit.test_policy_memo import BASE


def _step(old, new):
    """What a reader's Follower answers for old -> new, and the state it then holds."""
    d = delta.diff(codec.to_dict(old), codec.to_dict(new))
    return delta.changed_keys(d), apply_state(d, old)


def _tables(st, node):
    pc.forget()
    t = NodeTables.from_state(st, node)
    return t.policy, t.services, t.pods_by_ip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pod=hs.sampled_from(["a", "b", "c"]), ns=hs.sampled_from(["x", "y", "z"]),
       drop=hs.booleans())
def test_a_skipped_change_leaves_the_tables_as_they_were(pod, ns, drop) -> None:
    old = copy.deepcopy(BASE)
    new = copy.deepcopy(old)
    if drop and new.policies:
        del new.policies[sorted(new.policies)[0]]
    else:  # a deny-all for one label's pods in one namespace
        pol = next(iter(new.policies.values()))
        deny = dataclasses.replace(pol, name=f"deny-{pod}", namespace=ns, ingress=(),
                                   egress=(), pod_selector=LabelSelector((("pod", pod),)))
        new.policies[deny.key] = deny
    new.generation += 1
    changes, held = _step(old, new)
    skipped = [n.name for n in new.nodes if node_unaffected(changes, old, held, n.name)]
    for n in new.nodes:
        same = _tables(old, n.name) == _tables(held, n.name)
        if n.name in skipped:
            assert same, n.name
    if not drop:  # the nodes of the selected pods are never skipped
        hit = {ps.node for ps in new.pods.values()
               if ps.pod.namespace == ns and ps.pod.labels.get("pod") == pod}
        assert not hit & set(skipped)


def test_pod_service_and_unknown_changes_reach_every_node() -> None:
    old = copy.deepcopy(BASE)
    node = old.nodes[0].name
    assert not node_unaffected(None, old, old, node)  # a whole read: cannot tell
    assert not node_unaffected({"pods": {("x", "a")}}, old, old, node)
    assert not node_unaffected({"services": set()}, old, old, node)
    assert not node_unaffected({"created": {"Pod/x/a"}}, old, old, node)
    assert node_unaffected({"generation": set(), "created": {"NetworkPolicy/x/p"}}, old, old,
                           node)
