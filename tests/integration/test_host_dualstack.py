"""The host layer of a dual-stack cluster against the real kernel (issue 19): IPv6 on pods and
node underlays, no forwarding, the larger underlay MTU; an IPv4-only cluster keeps IPv6 off."""

from __future__ import annotations

from emunet.config import load_config_text
from emunet.state.plan import plan
from tests.integration import test_host
from tests.integration.test_host import _build, in_ns, ipj

env = test_host.env  # the fixture: this test's prefix and manifest, torn down after it

DUAL = """apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {name: ds}
spec:
  nodes: [{name: node-1}, {name: node-2}]
  clusterCIDR: 10.42.0.0/16,2001:cafe:42::/56
  serviceCIDR: 10.43.0.0/16,2001:cafe:43::/112
---
apiVersion: v1
kind: Namespace
metadata: {name: blog}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: blog}
spec: {nodeName: node-1, containers: [{name: c, image: i}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: blog}
spec: {nodeName: node-2, containers: [{name: c, image: i}]}
"""


def _sysctl(netns: str, key: str) -> str:
    return in_ns(netns, "sysctl", "-n", key).stdout.strip()


def _addrs(netns: str, ifname: str, family: str) -> list[dict]:
    (link,) = ipj(netns, family, "addr", "show", "dev", ifname)
    return link["addr_info"]


def test_dual_stack_pods_and_nodes_get_ipv6_without_forwarding(env):
    state = plan(load_config_text(DUAL, "ds.yaml"))
    _build(state, env)
    a = state.pods[("blog", "a")]
    node = state.node("node-1")
    got = [(x["local"], x["prefixlen"]) for x in _addrs(a.netns, "eth0", "-6")
           if x["scope"] == "global"]
    assert got == [(a.ip6, 64)]
    assert any(x.get("nodad") for x in _addrs(a.netns, "eth0", "-6") if x["scope"] == "global")
    routes = ipj(a.netns, "-6", "route", "show", "default")
    assert [(r["gateway"], r["dev"]) for r in routes] == [(node.gateway_ip6, "eth0")]
    under = [x["local"] for x in _addrs(node.netns, "eth0", "-6") if x["scope"] == "global"]
    assert under == [node.underlay_ip6]
    (link,) = ipj(node.netns, "link", "show", "dev", "eth0")
    assert link["mtu"] == 1520  # VXLAN over IPv6: 20 bytes more than over IPv4
    (pod_link,) = ipj(a.netns, "link", "show", "dev", "eth0")
    assert pod_link["mtu"] == 1450  # the pod MTU unchanged
    for ns in (node.netns, a.netns):
        assert _sysctl(ns, "net.ipv6.conf.all.disable_ipv6") == "0"
        assert _sysctl(ns, "net.ipv6.conf.all.forwarding") == "0"  # the agent forwards
        assert _sysctl(ns, "net.ipv6.conf.all.accept_ra") == "0"
    assert _sysctl(a.netns, "net.ipv6.conf.eth0.accept_dad") == "0"
    # the nodes reach each other over the IPv6 underlay (Neighbour Discovery works there)
    other = state.node("node-2")
    assert in_ns(node.netns, "ping", "-6", "-c1", "-W2", other.underlay_ip6,
                 check=False).returncode == 0
    # no agent runs: nothing answers ND for the pod's gateway, the kernel forwards nothing
    assert in_ns(a.netns, "ping", "-6", "-c1", "-W1", node.gateway_ip6,
                 check=False).returncode != 0


def test_ipv4_only_clusters_keep_ipv6_off(env):
    text = DUAL.replace("clusterCIDR: 10.42.0.0/16,2001:cafe:42::/56",
                        "clusterCIDR: 10.42.0.0/16").replace(
        "serviceCIDR: 10.43.0.0/16,2001:cafe:43::/112", "serviceCIDR: 10.43.0.0/16")
    state = plan(load_config_text(text, "v4.yaml"))
    _build(state, env)
    a = state.pods[("blog", "a")]
    node = state.node("node-1")
    for ns in (node.netns, a.netns):
        assert _sysctl(ns, "net.ipv6.conf.all.disable_ipv6") == "1"
    (link,) = ipj(node.netns, "link", "show", "dev", "eth0")
    assert link["mtu"] == 1500


