"""NetworkPolicy end to end: the upstream Kubernetes netpol e2e model, measured with `emunet probe`.

Namespaces x, y, z (label ns=<name>), pods a, b, c in each (label pod=<name>), built-in servers
on TCP and UDP ports 80 and 81. One cluster for the module; each case applies its policies,
probes every pair with real connections, compares with a FULL truth table written by hand from
the NetworkPolicy API documentation (a predicate per case, never the engine), then deletes its
policies. A pod always reaches itself (over its own loopback), as upstream's AllowLoopback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.cluster import ROOT, Cluster

NS = ("x", "y", "z")
PODS = [f"{n}/{p}" for n in NS for p in "abc"]
Expect = Callable[[str, str, str, int], bool]  # (from, to, protocol, port) -> reachable


@pytest.fixture(scope="module")
def c(module_clusters) -> Cluster:
    c = module_clusters(ROOT / "tests" / "e2e" / "configs" / "netpol-xyz.yaml", "enp")
    c.ips = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p["status"]["podIP"]
             for p in c.get("pods")}
    return c


def apply(c: Cluster, name: str, text: str) -> Path:
    f = c.tmp / f"{name}.yaml"
    f.write_text(text)
    c.emunet("apply", "-f", str(f))  # answers once every agent has loaded the policies
    return f


def probe(c: Cluster, ports=(80, 81), protocols=("tcp", "udp"), family: int = 4) -> dict:
    out = c.emunet("probe", "-o", "json", "--ports", ",".join(map(str, ports)),
                   "--protocols", ",".join(protocols), "--family", str(family),
                   timeout=60).stdout
    return {(r["src"], r["dst"], r["protocol"], r["port"]): r["status"]
            for r in json.loads(out)["results"]}


def check(c: Cluster, expect: Expect, ports=(80, 81), protocols=("tcp", "udp"),
          family: int = 4) -> None:
    got = probe(c, ports, protocols, family)
    wrong = []
    for (s, d, proto, port), status in sorted(got.items()):
        want = s == d or expect(s, d, proto, port)
        if want != (status == "ok"):
            wrong.append(f"{proto}/{port} {s} -> {d}: expected "
                         f"{'ok' if want else 'blocked'}, got {status}")
        if not want:  # an L3/L4 deny is silent: the client waits, nothing answers
            assert status == "timeout", f"{proto}/{port} {s} -> {d}: {status}"
    assert len(got) == len(PODS) ** 2 * len(ports) * len(protocols)
    assert not wrong, "\n".join(wrong)


def case(c: Cluster, name: str, policies: str, expect: Expect, **kw) -> None:
    f = apply(c, name, policies)
    try:
        check(c, expect, **kw)
    finally:
        c.emunet("delete", "-f", str(f))


def ns(p: str) -> str:
    return p.split("/")[0]


def pod(p: str) -> str:
    return p.split("/")[1]


def np(name: str, namespace: str, spec: str) -> str:
    body = "\n".join("  " + ln for ln in spec.strip().splitlines())
    return (f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n"
            f"  namespace: {namespace}\nspec:\n{body}\n---\n")


DENY_INGRESS_X = np("deny-ingress", "x", "podSelector: {}\npolicyTypes: [Ingress]")
DENY_EGRESS_X = np("deny-egress", "x", "podSelector: {}\npolicyTypes: [Egress]")


def test_no_policy_everything_connects(c):
    check(c, lambda s, d, pr, po: True)


def test_default_deny_ingress(c):
    case(c, "deny-in", DENY_INGRESS_X, lambda s, d, pr, po: ns(d) != "x")


def test_default_deny_egress(c):
    case(c, "deny-out", DENY_EGRESS_X, lambda s, d, pr, po: ns(s) != "x")


def test_default_deny_all_both_directions(c):
    case(c, "deny-all", np("deny-all", "x", "podSelector: {}\npolicyTypes: [Ingress, Egress]"),
         lambda s, d, pr, po: ns(s) != "x" and ns(d) != "x", ports=(80,))


def test_pod_selector_same_namespace_only(c):
    # podSelector alone selects pods of the policy's namespace: y/b and z/b stay out.
    pol = np("a-from-b", "x", """
podSelector: {matchLabels: {pod: a}}
ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]""")
    case(c, "podsel", pol, lambda s, d, pr, po: d != "x/a" or s == "x/b", ports=(80,))


def test_namespace_selector_alone_selects_every_pod_there(c):
    pol = np("a-from-y", "x", """
podSelector: {matchLabels: {pod: a}}
ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]""")
    case(c, "nssel", pol, lambda s, d, pr, po: d != "x/a" or ns(s) == "y", ports=(80,))


def test_both_selectors_in_one_peer_are_and(c):
    pol = np("a-from-y-b", "x", """
podSelector: {matchLabels: {pod: a}}
ingress:
  - from:
      - namespaceSelector: {matchLabels: {ns: y}}
        podSelector: {matchLabels: {pod: b}}""")
    case(c, "and", pol, lambda s, d, pr, po: d != "x/a" or s == "y/b", ports=(80,))


def test_separate_peers_are_or(c):
    pol = np("a-from-y-or-b", "x", """
podSelector: {matchLabels: {pod: a}}
ingress:
  - from:
      - namespaceSelector: {matchLabels: {ns: y}}
      - podSelector: {matchLabels: {pod: b}}""")
    case(c, "or", pol, lambda s, d, pr, po: d != "x/a" or ns(s) == "y" or s == "x/b",
         ports=(80,))


def test_match_expressions(c):
    # In, NotIn, Exists on the peer; DoesNotExist on the target (every x pod has "pod").
    pol = np("exprs", "x", """
podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, b]}]}
ingress:
  - from:
      - namespaceSelector:
          matchExpressions: [{key: ns, operator: NotIn, values: [x]}, {key: ns, operator: Exists}]
        podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, c]}]}
""") + np("nobody", "x", """
podSelector: {matchExpressions: [{key: pod, operator: DoesNotExist}]}
policyTypes: [Ingress, Egress]""")
    case(c, "exprs", pol, lambda s, d, pr, po: d not in ("x/a", "x/b")
         or (ns(s) != "x" and pod(s) in "ac"), ports=(80,))


def test_named_port_and_protocol_separation(c):
    # serve-81-udp resolves on the destination pod to 81/UDP: 81/TCP stays closed.
    pol = np("udp81", "x", """
podSelector: {matchLabels: {pod: a}}
ingress: [{ports: [{port: serve-81-udp, protocol: UDP}]}]""")
    case(c, "named", pol, lambda s, d, pr, po: d != "x/a" or (pr, po) == ("UDP", 81))


def test_port_range_end_port(c):
    pol = np("range", "x", """
podSelector: {matchLabels: {pod: a}}
ingress: [{ports: [{port: 80, endPort: 81, protocol: TCP}]}]""")
    case(c, "range", pol, lambda s, d, pr, po: d != "x/a" or pr == "TCP")


def test_egress_to_ip_block_with_except(c):
    hole = c.ips["y/b"]
    pol = np("ipblock", "x", f"""
podSelector: {{matchLabels: {{pod: a}}}}
policyTypes: [Egress]
egress: [{{to: [{{ipBlock: {{cidr: 10.42.0.0/16, except: [{hole}/32]}}}}]}}]""")
    case(c, "ipblock", pol, lambda s, d, pr, po: s != "x/a" or d != "y/b", ports=(80,))


def test_egress_ip_block_not_covering_the_cluster(c):
    pol = np("elsewhere", "x", """
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress: [{to: [{ipBlock: {cidr: 192.0.2.0/24}}]}]""")
    case(c, "elsewhere", pol, lambda s, d, pr, po: s != "x/a", ports=(80,),
         protocols=("tcp",))


def test_stacked_policies_are_additive(c):
    pol = DENY_INGRESS_X + np("a-from-y", "x", """
podSelector: {matchLabels: {pod: a}}
ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 80}]}]
""") + np("a-from-z-81", "x", """
podSelector: {matchLabels: {pod: a}}
ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}}], ports: [{port: 81}]}]""")
    case(c, "stacked", pol, lambda s, d, pr, po: ns(d) != "x" or (
        d == "x/a" and pr == "TCP" and ((ns(s), po) in (("y", 80), ("z", 81)))))


def test_allow_all_wins_over_deny_all(c):
    pol = DENY_INGRESS_X + np("allow-all", "x", "podSelector: {}\ningress: [{}]")
    case(c, "allow-all", pol, lambda s, d, pr, po: True, ports=(80,))


def test_update_and_delete_take_effect(c):
    spec = """
podSelector: {{matchLabels: {{pod: a}}}}
ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: {who}}}}}}}]}}]"""
    apply(c, "upd", np("upd", "x", spec.format(who="b")))
    try:
        check(c, lambda s, d, pr, po: d != "x/a" or s == "x/b", ports=(80,), protocols=("tcp",))
        apply(c, "upd", np("upd", "x", spec.format(who="c")))  # same name: configured
        check(c, lambda s, d, pr, po: d != "x/a" or s == "x/c", ports=(80,), protocols=("tcp",))
    finally:
        c.emunet("delete", "networkpolicy", "upd", "-n", "x")
    check(c, lambda s, d, pr, po: True, ports=(80,), protocols=("tcp",))


def test_label_changes_take_effect(c):
    pol = np("from-blue", "x", """
podSelector: {matchLabels: {pod: a}}
ingress:
  - from:
      - podSelector: {matchLabels: {color: blue}}
        namespaceSelector: {}
      - namespaceSelector: {matchLabels: {team: red}}""")
    f = apply(c, "labels", pol)
    try:
        check(c, lambda s, d, pr, po: d != "x/a", ports=(80,), protocols=("tcp",))
        c.emunet("label", "pod", "c", "color=blue", "-n", "y")
        c.emunet("label", "namespace", "z", "team=red")  # in effect when it answers
        check(c, lambda s, d, pr, po: d != "x/a" or s == "y/c" or ns(s) == "z", ports=(80,),
              protocols=("tcp",))
        c.emunet("label", "pod", "c", "color-", "-n", "y")
        c.emunet("label", "namespace", "z", "team-")
        check(c, lambda s, d, pr, po: d != "x/a", ports=(80,), protocols=("tcp",))
    finally:
        c.emunet("delete", "-f", str(f))
    bad = c.emunet("label", "pod", "a", "pod=zzz", "-n", "x", check=False)
    assert bad.returncode != 0 and "--overwrite" in bad.stderr


def test_probe_expect_file_shows_differences(c):
    f = apply(c, "deny-in", DENY_INGRESS_X)
    try:
        rows = ["TCP/80", " ".join(PODS)]
        rows += [f"{s} " + " ".join("." for _ in PODS) for s in PODS]  # wrong: all open
        exp = c.tmp / "expect.txt"
        exp.write_text("\n".join(rows) + "\n")
        p = c.emunet("probe", "--ports", "80", "--protocols", "tcp", "--expect", str(exp),
                     check=False)
        assert p.returncode == 1
        assert "24 differences" in p.stderr and "y/b -> x/c: expected connected" in p.stderr
        assert "X" in p.stdout
    finally:
        c.emunet("delete", "-f", str(f))


DIG = ("dig", "+time=1", "+tries=1", "+short", "kube-dns.kube-system.svc.cluster.local")


def test_default_deny_egress_blocks_dns_until_port_53_is_allowed(c):
    f = apply(c, "deny-out", DENY_EGRESS_X)
    try:
        p = c.exec("x", "a", *DIG, check=False)
        assert p.returncode != 0 or not p.stdout.strip()  # "connection timed out"
        dns = np("allow-dns", "x", """
podSelector: {}
policyTypes: [Egress]
egress:
  - to:
      - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
        podSelector: {matchLabels: {k8s-app: kube-dns}}
    ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]""")
        g = apply(c, "allow-dns", dns)
        try:  # to the kube-dns ClusterIP: policy sees the coredns pod after DNAT
            assert c.exec("x", "a", *DIG).stdout.strip() == "10.43.0.10"
            assert c.exec("x", "a", *DIG, "+tcp").stdout.strip() == "10.43.0.10"
            check(c, lambda s, d, pr, po: ns(s) != "x", ports=(80,), protocols=("tcp",))
        finally:
            c.emunet("delete", "-f", str(g))
    finally:
        c.emunet("delete", "-f", str(f))
