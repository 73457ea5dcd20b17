"""The policy compile's per-pod reuse (emunet.policy.compile._MEMO) never changes the answer:
over random sequences of changes (pods relabelled, added, deleted; policies added, deleted;
namespace labels changed), each node's compile with the memo of the previous state equals a
compile from nothing, and an unchanged pod's policy is the very object compiled before."""

from __future__ import annotations

import copy
import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from emunet.config import load_config_text
from emunet.model import Namespace
from emunet.policy import compile as pc
from emunet.state.plan import plan
from tests.unit.netpol_cluster import model_yaml

POLICIES = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: serve-80-tcp}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {pod: c}}}], ports: [{port: serve-81-udp}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: block, namespace: y}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 10.42.0.0/16, except: [10.42.1.0/24]}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-z, namespace: z}
spec:
  podSelector: {matchLabels: {pod: c}}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: expr, namespace: z}
spec:
  podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, b]}]}
  ingress: [{from: [{podSelector: {}}]}]
"""
BASE = plan(load_config_text(model_yaml() + "---\n" + POLICIES, "t.yaml"))


def _fresh(st, node):
    pc.forget()
    return pc.compile_node(st, node)


@hs.composite
def _steps(draw):
    return draw(hs.lists(hs.tuples(hs.sampled_from(
        ["relabel", "add", "delete", "drop-policy", "copy-policy", "ns-label", "nothing"]),
        hs.integers(0, 50)), min_size=1, max_size=6))


def _change(st, what: str, n: int) -> None:
    pods = list(st.pods)
    key = pods[n % len(pods)]
    if what == "relabel":
        ps = st.pods[key]
        pod = dataclasses.replace(ps.pod, labels={**ps.pod.labels, "pod": "abc"[n % 3]})
        st.pods[key] = dataclasses.replace(ps, pod=pod)
    elif what == "add":
        ps = st.pods[key]
        pod = dataclasses.replace(ps.pod, name=f"{ps.pod.name}-{n}")
        ip = f"10.42.{ps.ip.split('.')[2]}.{100 + n}"
        st.pods[pod.namespace, pod.name] = dataclasses.replace(ps, pod=pod, ip=ip)
    elif what == "delete" and len(pods) > 1:
        del st.pods[key]
    elif what == "drop-policy" and st.policies:
        del st.policies[sorted(st.policies)[n % len(st.policies)]]
    elif what == "copy-policy" and st.policies:
        pol = st.policies[sorted(st.policies)[n % len(st.policies)]]
        new = dataclasses.replace(pol, name=f"{pol.name}-{n}")
        st.policies[new.key] = new
    elif what == "ns-label":
        name = sorted(st.namespaces)[n % len(st.namespaces)]
        old = st.namespaces[name]
        st.namespaces[name] = Namespace(name, {**old.labels, "ns": "xyz"[n % 3]}, old.loc)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_steps())
def test_memo_gives_the_fresh_answer(steps) -> None:
    st = copy.deepcopy(BASE)
    nodes = [n.name for n in st.nodes]
    for node in nodes:
        assert pc.compile_node(st, node) == _fresh(st, node)
    for what, n in steps:
        memos = {node: _fresh(st, node) and pc._MEMO[node] for node in nodes}
        _change(st, what, n)
        for node in nodes:
            pc.forget()
            pc._MEMO[node] = memos[node]
            assert pc.compile_node(st, node) == _fresh(st, node), (what, n, node)


def test_an_unchanged_pod_keeps_its_compiled_policy() -> None:
    st = copy.deepcopy(BASE)
    pc.forget()
    node = st.nodes[0].name
    before = pc.compile_node(st, node)
    # x/a: selected by allow-a (its named port resolves on x/a itself)
    node = st.pods["x", "a"].node
    before = pc.compile_node(st, node)
    ps = st.pods["x", "a"]
    st.pods[ps.key] = dataclasses.replace(ps, ready=not ps.ready)  # not a policy input
    after = pc.compile_node(st, node)
    addr = pc.pod_addrs(ps)[0]
    assert after.pods[addr] is before.pods[addr]
    # a pod in y (selected by the ipBlock policy: every pod address counts) is compiled again
    py = next(p for p in st.pods.values() if p.node == node and p.pod.namespace == "y")
    # x/b: selected by egress-b, whose named port resolves on each destination pod
    if st.pods["x", "b"].node == node:
        b = pc.pod_addrs(st.pods["x", "b"])[0]
        assert after.pods[b] is not before.pods[b]
    a = pc.pod_addrs(py)[0]
    assert after.pods[a] is not before.pods[a] and after.pods[a] == before.pods[a]
