"""NetworkPolicy over IPv6 end to end (issue 19): the upstream netpol e2e model of
test_netpol.py (namespaces x, y, z; pods a, b, c) in a dual-stack cluster, probed with
`emunet probe --family 6` (real connections to each pod's IPv6 address) against truth tables
written from the NetworkPolicy API documentation. Peers by label select both addresses of a pod
(one identity); ipBlocks are per family: an IPv6 CIDR with an except, and an IPv4 0.0.0.0/0
that opens IPv4 only."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.e2e.cluster import ROOT, Cluster
from tests.e2e.test_netpol import DENY_INGRESS_X, apply, check, np, ns

XYZ = ROOT / "tests" / "e2e" / "configs" / "netpol-xyz.yaml"
DUAL = ("  clusterCIDR: 10.42.0.0/16,2001:cafe:42::/56\n"
        "  serviceCIDR: 10.43.0.0/16,2001:cafe:43::/112\n")


@pytest.fixture(scope="module")
def c(module_clusters, tmp_path_factory) -> Iterator[Cluster]:
    # the same model, made dual-stack the k3s way (the Cluster spec's two CIDR fields)
    text, n = re.subn(r"(kind: Cluster\nmetadata: \{name: netpol-xyz\}\nspec:\n)",
                      lambda m: m.group(1) + DUAL, XYZ.read_text())
    assert n == 1
    cfg = tmp_path_factory.mktemp("netpol6") / "netpol-xyz-dualstack.yaml"
    cfg.write_text(text)
    c = module_clusters(cfg, "enp6")
    c.ips6 = {f"{p['metadata']['namespace']}/{p['metadata']['name']}":  # type: ignore[attr-defined]
              p["status"]["podIPs"][1]["ip"] for p in c.get("pods")}
    yield c


def case6(c: Cluster, name: str, policies: str, expect, both: bool = False, **kw) -> None:
    """`policies` applied, IPv6 probed (and IPv4 too when `both`: the same answer)."""
    f = apply(c, name, policies)
    try:
        check(c, expect, family=6, **kw)
        if both:
            check(c, expect, family=4, **kw)
    finally:
        c.emunet("delete", "-f", str(f))


def test_no_policy_everything_connects_over_ipv6(c):
    check(c, lambda s, d, pr, po: True, family=6)


def test_default_deny_ingress_over_both_families(c):
    case6(c, "deny-in", DENY_INGRESS_X, lambda s, d, pr, po: ns(d) != "x", both=True,
          ports=(80,))


def test_selectors_select_a_pods_ipv6_address_too(c):
    pol = np("a-from-y-b", "x", """
podSelector: {matchLabels: {pod: a}}
ingress:
  - from:
      - namespaceSelector: {matchLabels: {ns: y}}
        podSelector: {matchLabels: {pod: b}}
      - podSelector: {matchLabels: {pod: c}}""")
    case6(c, "sel", pol, lambda s, d, pr, po: d != "x/a" or s in ("y/b", "x/c"), ports=(80,))


def test_named_port_over_ipv6(c):
    pol = np("udp81", "x", """
podSelector: {matchLabels: {pod: a}}
ingress: [{ports: [{port: serve-81-udp, protocol: UDP}]}]""")
    case6(c, "named", pol, lambda s, d, pr, po: d != "x/a" or (pr, po) == ("UDP", 81))


def test_egress_to_an_ipv6_block_with_except(c):
    hole = c.ips6["y/b"]
    pol = np("ipblock6", "x", f"""
podSelector: {{matchLabels: {{pod: a}}}}
policyTypes: [Egress]
egress: [{{to: [{{ipBlock: {{cidr: "2001:cafe:42::/56", except: ["{hole}/128"]}}}}]}}]""")
    case6(c, "ipblock6", pol, lambda s, d, pr, po: s != "x/a" or d != "y/b", ports=(80,),
          protocols=("tcp",))


def test_an_ipv4_block_opens_ipv4_only(c):
    # ipBlocks are per family (NetworkPolicy API: an IPBlock is a CIDR): 0.0.0.0/0 covers no
    # IPv6 address, so x/a's IPv6 egress is denied while its IPv4 egress is open
    pol = np("v4-only", "x", """
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0}}]}]""")
    f = apply(c, "v4only", pol)
    try:
        check(c, lambda s, d, pr, po: s != "x/a", family=6, ports=(80,), protocols=("tcp",))
        check(c, lambda s, d, pr, po: True, family=4, ports=(80,), protocols=("tcp",))
    finally:
        c.emunet("delete", "-f", str(f))

