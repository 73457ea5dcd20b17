"""IPAM, scheduling, endpoints and the JSON round trip of the cluster state (no root)."""

from __future__ import annotations

import ipaddress

import pytest

from emunet import naming
from emunet.cli import views
from emunet.model import (
    ClusterSpec,
    Config,
    Container,
    ContainerPort,
    Namespace,
    NodeSpec,
    Pod,
    Service,
    ServicePort,
)
from emunet.state import codec
from emunet.state.cluster import StateError
from emunet.state.plan import plan

HTTP = (ContainerPort(3000, "TCP", "http"),)


def _pod(name, labels, node=None, ports=HTTP, ns="web"):
    return Pod(ns, name, dict(labels), (Container("c", "img", ports=tuple(ports)),),
               node_name=node)


def _config(pods=(), services=(), nodes=("node-1", "node-2")):
    return Config(cluster=ClusterSpec(nodes=tuple(NodeSpec(n) for n in nodes)),
                  namespaces=(Namespace("web"),), pods=tuple(pods), services=tuple(services))


def test_nodes_get_a_24_each_and_gateway_macs():
    st = plan(_config())
    n1, n2 = st.nodes
    assert (n1.pod_cidr, n2.pod_cidr) == ("10.42.1.0/24", "10.42.2.0/24")
    assert (n1.gateway_ip, n1.gateway_mac) == ("10.42.1.1", "0a:58:0a:2a:01:01")
    assert (n1.underlay_ip, n2.underlay_ip) == ("192.168.1.11", "192.168.1.12")
    assert n1.netns == naming.node_netns("node-1")
    assert n1.vtep_mac != n2.vtep_mac


def test_coredns_and_kube_dns_are_always_there():
    st = plan(_config())
    dns = st.services[("kube-system", "kube-dns")]
    assert dns.cluster_ip == "10.43.0.10"
    assert {p.protocol for p in dns.service.ports} == {"UDP", "TCP"}
    eps = st.endpoints(dns.key)
    assert eps[0] and eps[0][0].pod[1].startswith("coredns-")
    assert st.namespaces["web"].labels["kubernetes.io/metadata.name"] == "web"


def test_pods_spread_and_honour_node_name():
    pods = [_pod(f"p{i}", {"app": "a"}) for i in range(4)] + [_pod("pinned", {}, node="node-2")]
    st = plan(_config(pods))
    per_node = {}
    for p in st.pods.values():
        per_node[p.node] = per_node.get(p.node, 0) + 1
        net = ipaddress.ip_network(st.node(p.node).pod_cidr)
        assert ipaddress.ip_address(p.ip) in net
        assert p.mac == naming.mac_from_ip(p.ip)
    assert abs(per_node["node-1"] - per_node["node-2"]) <= 1
    assert st.pods[("web", "pinned")].node == "node-2"


def test_recreated_pod_gets_a_new_ip():
    st = plan(_config([_pod("a", {}, node="node-1")]))
    first = st.pods[("web", "a")].ip
    st.remove_pod(("web", "a"))
    st.add_pod(_pod("a", {}, node="node-1"))
    assert st.pods[("web", "a")].ip != first


def test_pod_subnet_exhaustion_is_an_error():
    st = plan(_config(nodes=("node-1",)))
    with pytest.raises(StateError, match="full"):
        for i in range(300):
            st.add_pod(_pod(f"p{i}", {}, node="node-1"))


def test_endpoints_follow_selector_named_ports_and_readiness():
    svc = Service("web", "api", (ServicePort(80, "http"), ServicePort(81, 9000)),
                  selector={"app": "api"})
    pods = [_pod("a", {"app": "api"}), _pod("b", {"app": "api"}, ports=()),
            _pod("c", {"app": "other"})]
    st = plan(_config(pods, [svc]))
    eps = st.endpoints(("web", "api"))
    assert [e.pod[1] for e in eps[0]] == ["a"]  # b declares no port named http
    assert eps[0][0].port == 3000
    assert sorted(e.pod[1] for e in eps[1]) == ["a", "b"]  # numeric targetPort: every pod
    assert not any(e.ready for e in eps[0])
    st.pods[("web", "a")].ready = True
    assert st.endpoints(("web", "api"))[0][0].ready


def test_cluster_ips_are_allocated_and_conflicts_refused():
    s1 = Service("web", "one", (ServicePort(80, 80),), selector={})
    s2 = Service("web", "two", (ServicePort(80, 80),), selector={}, cluster_ip="10.43.0.50")
    st = plan(_config(services=[s1, s2]))
    assert st.services[("web", "one")].cluster_ip == "10.43.0.11"
    assert st.services[("web", "two")].cluster_ip == "10.43.0.50"
    with pytest.raises(StateError, match="already used"):
        st.add_service(Service("web", "three", (ServicePort(80, 80),), cluster_ip="10.43.0.50"))
    headless = st.add_service(Service("web", "hl", (ServicePort(80, 80),), cluster_ip="None"))
    assert headless.cluster_ip is None


def test_json_round_trip_is_lossless():
    svc = Service("web", "api", (ServicePort(80, "http"),), selector={"app": "api"})
    st = plan(_config([_pod("a", {"app": "api"})], [svc]))
    st.pods[("web", "a")].ready = True
    again = codec.from_json(codec.to_json(st))
    assert codec.to_json(again) == codec.to_json(st)
    assert again.endpoints(("web", "api")) == st.endpoints(("web", "api"))


def test_views_json_list_uses_kubernetes_field_names():
    svc = Service("web", "api", (ServicePort(80, "http", name="http"),), selector={"app": "api"})
    st = plan(_config([_pod("a", {"app": "api"})], [svc]))
    st.pods[("web", "a")].ready = True
    pods = views.as_list(st, "pods", "web", {})
    assert pods["kind"] == "List"
    item = pods["items"][0]
    assert item["metadata"] == {"name": "a", "namespace": "web", "labels": {"app": "api"}}
    assert item["status"]["podIP"] == st.pods[("web", "a")].ip
    assert item["spec"]["nodeName"] == st.pods[("web", "a")].node == "node-2"  # spread
    eps = views.as_list(st, "endpoints", "web", {})["items"][0]
    assert eps["subsets"][0]["addresses"][0]["ip"] == item["status"]["podIP"]
    assert eps["subsets"][0]["ports"][0] == {"port": 3000, "protocol": "TCP", "name": "http"}
    rows = views.pods(st, None, wide=True)
    assert rows[0][0] == "NAMESPACE" and rows[0][-1] == "NETNS"


def test_views_list_network_and_cilium_policies():
    from pathlib import Path

    from emunet.config import load_config

    root = Path(__file__).resolve().parents[2]
    st = plan(load_config(str(root / "configs" / "two-node.yaml")))
    rows = views.networkpolicies(st, None, wide=True)
    assert rows[1] == ["blog-website", "monospaced-access", "app=monospaced", "Ingress"]
    item = views.as_list(st, "networkpolicies", "blog-website", {})["items"][0]
    assert item["spec"]["podSelector"]["matchLabels"] == {"app": "monospaced"}
    st = plan(load_config(str(root / "tests" / "e2e" / "configs" / "l7.yaml")))
    rows = views.ciliumnetworkpolicies(st, "blog-website", wide=False)
    assert rows[1] == ["monospaced-api", "app=monospaced"]
    cnp = views.as_list(st, "ciliumnetworkpolicies", None, {})["items"][0]
    assert cnp["kind"] == "CiliumNetworkPolicy"
