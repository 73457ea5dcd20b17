"""What a kernel-mode node is built from: ip/bridge batches and the kube-proxy-style ruleset."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from emunet.config import load_config
from emunet.host import kernelnode
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
from emunet.state.cluster import ClusterState
from emunet.state.plan import plan

ROOT = Path(__file__).resolve().parents[2]


def _state(nodes=(("node-1", "emunet"), ("node-2", "kernel")), web=2) -> ClusterState:
    pods = tuple(Pod("web", f"w{i}", {"app": "w"},
                     (Container("c", "img", ports=(ContainerPort(3000),)),), node_name="node-2")
                 for i in range(web))
    svcs = (Service("web", "w", (ServicePort(80, 3000), ServicePort(81, 3000, "SCTP")),
                    selector={"app": "w"}),
            Service("web", "empty", (ServicePort(80, 80),), selector={"app": "nobody"}),
            Service("web", "np", (ServicePort(8080, 3000, node_port=30080),),
                    selector={"app": "w"}, type="NodePort"),
            Service("web", "np-empty", (ServicePort(8080, 80, node_port=30081),),
                    selector={"app": "nobody"}, type="NodePort"))
    cfg = Config(cluster=ClusterSpec(nodes=tuple(NodeSpec(n, datapath=d) for n, d in nodes)),
                 namespaces=(Namespace("web"),), pods=pods, services=svcs)
    return plan(cfg)


def _ready(st: ClusterState, *names: str) -> ClusterState:
    for p in st.pods.values():
        p.ready = p.pod.name in names or p.pod.namespace == "kube-system"
    return st


def test_kernel_nodes_come_from_the_config():
    st = _state()
    assert kernelnode.kernel_nodes(st) == {"node-2"}
    assert kernelnode.is_kernel(st, "node-2") and not kernelnode.is_kernel(st, "node-1")
    cfg = load_config(str(ROOT / "configs" / "interop.yaml"))
    assert [n.datapath for n in cfg.cluster.nodes] == ["emunet", "kernel"]


def test_ip_batch_is_flannels_node():
    st = _state()
    node = st.node("node-2")
    lines = kernelnode.ip_batch(st, node)
    assert "addr add 10.42.2.1/24 dev cni0" in lines
    assert f"link set cni0 address {node.gateway_mac} mtu 1450" in lines
    assert ("link add flannel.1 type vxlan id 1 local 192.168.1.12 dev eth0 dstport 8472 "
            "nolearning") in lines
    assert "addr add 10.42.2.0/32 dev flannel.1" in lines
    assert "neigh add 10.42.1.0 lladdr 0a:59:0a:2a:01:00 dev flannel.1 nud permanent" in lines
    assert "route add 10.42.1.0/24 via 10.42.1.0 dev flannel.1 onlink" in lines
    assert kernelnode.fdb_batch(st, node) == [
        "fdb append 0a:59:0a:2a:01:00 dev flannel.1 dst 192.168.1.11 self permanent"]


def test_a_single_kernel_node_has_no_tunnel():
    st = _state(nodes=(("node-2", "kernel"),))
    assert not any("flannel.1" in line for line in kernelnode.ip_batch(st, st.nodes[0]))


def test_ruleset_balances_over_ready_endpoints_only():
    st = _ready(_state(web=3), "w0", "w2")
    rules = kernelnode.ruleset(st)
    cip = st.services[("web", "w")].cluster_ip
    assert f"{cip} . tcp . 80 : goto service-web/w/tcp/80" in rules
    chain = rules.split("chain service-web/w/tcp/80 {")[1].split("}\n")[0]
    assert "numgen random mod 2 vmap" in chain
    eps = re.findall(r"goto (endpoint-[^ ,]+)", chain)
    ips = {p.pod.name: p.ip for p in st.pods.values()}
    assert eps == [f"endpoint-web/w/tcp/80__{ips['w0']}/3000",
                   f"endpoint-web/w/tcp/80__{ips['w2']}/3000"]
    assert f"dnat to {ips['w0']}:3000" in rules and ips["w1"] not in rules
    assert "sctp" not in rules  # emunet has no SCTP Services
    assert rules.startswith("table ip kube-proxy\ndelete table ip kube-proxy\n")  # atomic


def test_services_without_ready_endpoints_are_rejected():
    st = _ready(_state())
    rules = kernelnode.ruleset(st)
    for name in ("w", "empty"):
        cip = st.services[("web", name)].cluster_ip
        assert f"{cip} . tcp . 80 : goto reject-chain" in rules
    dns = st.cluster.cluster_dns
    assert f"{dns} . udp . 53 : goto service-kube-system/kube-dns/udp/53" in rules


def test_hairpin_and_outside_clients_are_masqueraded():
    rules = kernelnode.ruleset(_ready(_state(web=1), "w0"))
    assert "ip saddr != 10.42.0.0/16 jump mark-for-masquerade" in rules
    assert re.search(r"ip saddr (10\.42\.2\.\d+) jump mark-for-masquerade\n\s+meta l4proto tcp "
                     r"dnat to \1:3000", rules)


def test_node_ports_go_through_an_external_chain_or_are_rejected():
    """kube-proxy nftables mode: packets to the node's own address by protocol . nodePort,
    masqueraded (externalTrafficPolicy: Cluster), then the Service's own chain."""
    rules = kernelnode.ruleset(_ready(_state(web=1), "w0"))
    assert "tcp . 30080 : goto external-web/np/tcp/8080" in rules
    chain = rules.split("chain external-web/np/tcp/8080 {")[1].split("}\n")[0]
    assert chain.split() == ["jump", "mark-for-masquerade", "goto", "service-web/np/tcp/8080"]
    assert "tcp . 30081 : goto reject-chain" in rules  # no ready endpoint: rejected
    local = "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap"
    assert f"{local} @service-nodeports" in rules and f"{local} @no-endpoint-nodeports" in rules
    assert "type filter hook input priority -110" in rules  # the reject for the node itself
    # a ClusterIP Service never gets a node port
    assert "30080" not in rules.split("map service-ips")[1].split("}")[0]


@pytest.mark.root  # nft checks a ruleset over netlink, which needs CAP_NET_ADMIN
@pytest.mark.skipif(not shutil.which("nft"), reason="needs nft")
def test_nft_accepts_the_ruleset():
    rules = kernelnode.ruleset(_ready(_state(web=3), "w0", "w1"))
    p = subprocess.run(["nft", "-c", "-f", "-"], input=rules, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
