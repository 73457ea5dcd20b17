"""NetworkPolicy semantics on the x/y/z model: selectors, rule shapes, ports, ipBlock, additivity.

Each expectation is written by hand from the NetworkPolicy API documentation (a predicate over
source and destination), never computed by the engine under test.
"""

from __future__ import annotations

import pytest

from emunet.model.netpol import LabelSelector, Requirement
from emunet.policy.compile import allocate_identities, compile_node
from emunet.policy.verdict import WORLD, PortMap, RuleRef
from tests.unit.netpol_cluster import ALL, Reach, expect, state


def np(name: str, ns: str, spec: str) -> str:
    body = "\n".join("  " + ln for ln in spec.strip().splitlines())
    return (f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, "
            f"namespace: {ns}}}\nspec:\n{body}\n---\n")


def ns(p: str) -> str:
    return p.split("/")[0]


@pytest.mark.parametrize(("req", "labels", "want"), [
    (Requirement("a", "In", ("1", "2")), {"a": "2"}, True),
    (Requirement("a", "In", ("1",)), {"a": "2"}, False),
    (Requirement("a", "In", ("1",)), {}, False),
    (Requirement("a", "NotIn", ("1",)), {"a": "2"}, True),
    (Requirement("a", "NotIn", ("1",)), {}, True),  # a missing key is "not in"
    (Requirement("a", "NotIn", ("1",)), {"a": "1"}, False),
    (Requirement("a", "Exists"), {"a": ""}, True),
    (Requirement("a", "Exists"), {"b": "1"}, False),
    (Requirement("a", "DoesNotExist"), {"b": "1"}, True),
    (Requirement("a", "DoesNotExist"), {"a": "1"}, False),
])
def test_requirement_operators(req, labels, want):
    assert req.matches(labels) is want


def test_selector_ands_labels_and_expressions_and_empty_matches_all():
    sel = LabelSelector((("app", "web"),), (Requirement("tier", "In", ("fe",)),))
    assert sel.matches({"app": "web", "tier": "fe", "x": "y"})
    assert not sel.matches({"app": "web"})
    assert not sel.matches({"tier": "fe"})
    assert LabelSelector().matches({}) and LabelSelector().empty


def test_no_policy_no_isolation():
    r = Reach(state())
    assert all(r.table().values())
    assert all(v == (None, None) for v in (r.verdicts("x/a", "y/b", "TCP", 80),))


def test_policy_types_inferred_ingress_only_without_egress_rules():
    # `egress: []` is no egress rule: policyTypes defaults to [Ingress] (defaults.go)
    r = Reach(state(np("p", "x", "podSelector: {}\negress: []")))
    assert r.table() == expect(lambda s, d: ns(d) != "x")
    st = state(np("p", "x", "podSelector: {}\negress: [{to: [{podSelector: {}}]}]"))
    assert st.policies[("x", "p")].policy_types == ("Ingress", "Egress")
    assert Reach(st).table() == expect(lambda s, d: ns(d) != "x" and (ns(s) != "x"
                                                                      or ns(d) == "x"))


def test_default_deny_egress_and_all():
    r = Reach(state(np("p", "y", "podSelector: {}\npolicyTypes: [Egress]")))
    assert r.table() == expect(lambda s, d: ns(s) != "y")
    r = Reach(state(np("p", "y", "podSelector: {}\npolicyTypes: [Ingress, Egress]")))
    assert r.table() == expect(lambda s, d: ns(s) != "y" and ns(d) != "y")


@pytest.mark.parametrize(("peer", "rule"), [
    ("[{podSelector: {matchLabels: {pod: b}}}]", lambda s: s == "x/b"),
    ("[{namespaceSelector: {matchLabels: {ns: y}}}]", lambda s: ns(s) == "y"),
    ("[{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]",
     lambda s: s == "y/b"),
    ("[{namespaceSelector: {matchLabels: {ns: y}}}, {podSelector: {matchLabels: {pod: b}}}]",
     lambda s: ns(s) == "y" or s == "x/b"),
    ("[{namespaceSelector: {}}]", lambda s: True),
    ("[{podSelector: {}}]", lambda s: ns(s) == "x"),
    ("[]", lambda s: True),
    ("[{namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x, y]}]},"
     " podSelector: {matchExpressions: [{key: pod, operator: Exists}]}}]",
     lambda s: ns(s) == "z"),
    ("[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}}]",
     lambda s: ns(s) == "z"),
])
def test_peer_shapes(peer, rule):
    r = Reach(state(np("p", "x", f"podSelector: {{matchLabels: {{pod: a}}}}\n"
                                 f"ingress: [{{from: {peer}}}]")))
    assert r.table() == expect(lambda s, d: d != "x/a" or rule(s))


def test_egress_peer_and_ports():
    # policyTypes absent + egress rules = [Ingress, Egress]: x/a is isolated for ingress too
    r = Reach(state(np("p", "x", """
podSelector: {matchLabels: {pod: a}}
egress: [{to: [{namespaceSelector: {matchLabels: {ns: z}}}], ports: [{port: 81}]}]""")))
    for proto, port in (("TCP", 80), ("TCP", 81), ("UDP", 81)):
        assert r.table(proto, port) == expect(
            lambda s, d, pr=proto, po=port: d != "x/a" and (
                s != "x/a" or (ns(d) == "z" and (pr, po) == ("TCP", 81))))


def test_named_ports_resolve_on_the_destination_and_keep_their_protocol():
    text = np("in", "y", """
podSelector: {}
ingress: [{ports: [{port: serve-80-udp, protocol: UDP}]}]""") + np("out", "z", """
podSelector: {matchLabels: {pod: a}}
egress: [{ports: [{port: serve-81-tcp}]}]""")
    r = Reach(state(text))
    # "out" has egress rules and no policyTypes: z/a is isolated for ingress as well
    assert r.table("UDP", 80) == expect(lambda s, d: s != "z/a" and d != "z/a")
    assert r.table("TCP", 80) == expect(lambda s, d: ns(d) != "y" and s != "z/a"
                                        and d != "z/a")
    assert r.table("TCP", 81) == expect(lambda s, d: ns(d) != "y" and d != "z/a")
    assert r.table("UDP", 81) == expect(lambda s, d: ns(d) != "y" and s != "z/a"
                                        and d != "z/a")


def test_named_port_missing_on_the_pod_allows_nothing():
    r = Reach(state(np("p", "x", """
podSelector: {}
ingress: [{ports: [{port: no-such-port}]}]""")))
    assert r.table() == expect(lambda s, d: ns(d) != "x")


def test_end_port_range_and_protocol_separation():
    r = Reach(state(np("p", "x", """
podSelector: {matchLabels: {pod: a}}
ingress: [{ports: [{port: 79, endPort: 80, protocol: UDP}, {port: 81, protocol: SCTP}]}]""")))
    assert r("y/a", "x/a", "UDP", 80) and r("y/a", "x/a", "UDP", 79)
    assert not r("y/a", "x/a", "UDP", 81) and not r("y/a", "x/a", "TCP", 80)
    assert r("y/a", "x/a", "SCTP", 81) and not r("y/a", "x/a", "SCTP", 80)
    assert not r("y/a", "x/a", 1, 0)  # ICMP: only a rule without ports allows it


def test_rule_without_ports_allows_every_protocol_including_icmp():
    r = Reach(state(np("p", "x", """
podSelector: {matchLabels: {pod: a}}
ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]""")))
    assert r("x/b", "x/a", 1, 0) and r("x/b", "x/a", "SCTP", 9) and not r("x/c", "x/a", 1, 0)


def test_ip_block_with_except_matches_pod_ips_and_world():
    st = state()
    hole = st.pods[("y", "b")].ip
    r = Reach(state(np("p", "x", f"""
podSelector: {{matchLabels: {{pod: a}}}}
policyTypes: [Egress]
egress: [{{to: [{{ipBlock: {{cidr: 10.42.0.0/16, except: ["{hole}/32"]}}}}],
           ports: [{{port: 80}}]}}]""")))
    assert r.table() == expect(lambda s, d: s != "x/a" or d != "y/b")
    assert not any(r.table("TCP", 81)[("x/a", d)] for d in ALL if d != "x/a")
    assert r("x/a", bytes([10, 42, 9, 9]))  # an address no pod holds: WORLD, in the block
    assert not r("x/a", bytes([8, 8, 8, 8]))
    ident = r.nodes[r.node("x/a")].identities.get(bytes([10, 42, 9, 9]), WORLD)
    assert ident == WORLD


def test_policies_are_additive_and_allow_all_wins():
    base = np("deny", "x", "podSelector: {}\npolicyTypes: [Ingress]")
    one = np("y-80", "x", """
podSelector: {matchLabels: {pod: a}}
ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 80}]}]""")
    two = np("z-81", "x", """
podSelector: {matchLabels: {pod: a}}
ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}}], ports: [{port: 81}]}]""")
    r = Reach(state(base + one + two))
    assert r.table("TCP", 80) == expect(lambda s, d: ns(d) != "x" or (d == "x/a"
                                                                      and ns(s) == "y"))
    assert r.table("TCP", 81) == expect(lambda s, d: ns(d) != "x" or (d == "x/a"
                                                                      and ns(s) == "z"))
    r = Reach(state(base + one + np("all", "x", "podSelector: {}\ningress: [{}]")))
    assert all(r.table().values())


def test_verdicts_name_the_policy_and_rule():
    r = Reach(state(np("p", "x", """
podSelector: {matchLabels: {pod: a}}
ingress:
  - from: [{podSelector: {matchLabels: {pod: c}}}]
  - from: [{podSelector: {matchLabels: {pod: b}}}]""")))
    _, ok = r.verdicts("x/b", "x/a", "TCP", 80)
    assert ok.allowed and ok.rule == RuleRef("x/p", 1) and ok.direction == "ingress"
    assert "allowed by NetworkPolicy x/p rule 1" in ok.describe()
    _, no = r.verdicts("y/b", "x/a", "TCP", 80)
    assert not no.allowed and no.rule is None and no.policies == ("x/p",)


def test_identities_are_shared_and_label_based():
    st = state()
    ids = allocate_identities(st)
    assert len(ids) == 10  # 9 model pods + coredns: (namespace, labels, ns labels) differ
    n1, n2 = compile_node(st, "node-1"), compile_node(st, "node-2")
    assert n1.identities == n2.identities  # every node knows every pod IP
    st2 = state(pod_labels={"x/b": {"pod": "a"}})
    assert len(allocate_identities(st2)) == 9  # x/a and x/b now share one identity


def test_port_map_first_rule_wins_and_merges():
    a, b = RuleRef("n/a", 0), RuleRef("n/b", 0)
    m = PortMap([(80, 80, a), (70, 90, b), (91, 95, b)])
    assert m.lookup(80) == a and m.lookup(70) == b and m.lookup(95) == b
    assert m.lookup(96) is None and m.lookup(69) is None
    assert len(m) == 3  # [70-79 b] [80 a] [81-95 b]


def test_compiled_size_does_not_grow_with_unrelated_policies():
    """Per-packet work is a fixed number of dict lookups: 1,000 policies that select other
    pods add nothing to x/a's tables, and 1,000 copies of one rule add no entries."""
    target = np("p", "x", """
podSelector: {matchLabels: {pod: a}}
ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}], ports: [{port: 80}]}]""")
    noise = "".join(np(f"n{i}", "y", f"""
podSelector: {{matchLabels: {{pod: nobody-{i}}}}}
ingress: [{{from: [{{podSelector: {{}}}}]}}]""") for i in range(1000))
    copies = "".join(np(f"c{i}", "x", """
podSelector: {matchLabels: {pod: a}}
ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}], ports: [{port: 80}]}]""")
        for i in range(1000))
    sizes = []
    for text in (target, target + noise, target + copies):
        r = Reach(state(text))
        pp = r.nodes[r.node("x/a")].pods[r.ip("x/a")]
        sizes.append((len(pp.ingress.peers), sum(len(m) for m in pp.ingress.peers.values()),
                      len(pp.ingress.named), len(pp.ingress.cidrs)))
        assert r("x/b", "x/a") and not r("x/c", "x/a")
    assert sizes[0] == sizes[1] == sizes[2] == (1, 1, 0, 0)
