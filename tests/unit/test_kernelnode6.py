"""A dual-stack kernel-mode node: flannel-v6.1 beside flannel.1, cni0's IPv6 gateway, and the
`ip6 kube-proxy` table beside the `ip` one (issue 19)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from emunet.config import load_config_text
from emunet.host import kernelnode
from emunet.state.cluster import ClusterState
from emunet.state.plan import plan

CONFIG = """apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {name: ds}
spec:
  nodes: [{name: node-1}, {name: node-2, datapath: kernel}]
  clusterCIDR: 10.42.0.0/16,2001:cafe:42::/56
  serviceCIDR: 10.43.0.0/16,2001:cafe:43::/112
---
apiVersion: v1
kind: Namespace
metadata: {name: web}
---
apiVersion: v1
kind: Pod
metadata: {name: w0, namespace: web, labels: {app: w}}
spec:
  nodeName: node-2
  containers: [{name: c, image: img, ports: [{containerPort: 3000}]}]
---
apiVersion: v1
kind: Service
metadata: {name: w, namespace: web}
spec:
  selector: {app: w}
  ipFamilyPolicy: PreferDualStack
  ports: [{port: 80, targetPort: 3000}]
---
apiVersion: v1
kind: Service
metadata: {name: v4only, namespace: web}
spec:
  selector: {app: w}
  ports: [{port: 80, targetPort: 3000}]
"""


def _state() -> ClusterState:
    st = plan(load_config_text(CONFIG, "ds.yaml"))
    for p in st.pods.values():
        p.ready = True
    return st


def test_ip_batch_adds_flannel_v6():
    st = _state()
    node, other = st.node("node-2"), st.node("node-1")
    lines = kernelnode.ip_batch(st, node)
    assert "addr add 2001:cafe:42:2::1/64 dev cni0 nodad" in lines
    assert (f"link add flannel-v6.1 type vxlan id 1 local {node.underlay_ip6} dev eth0 "
            "dstport 8472 nolearning") in lines
    assert f"link set flannel-v6.1 address {node.vtep_mac6} mtu 1450" in lines
    assert "addr add 2001:cafe:42:2::/128 dev flannel-v6.1 nodad" in lines
    assert (f"neigh add 2001:cafe:42:1:: lladdr {other.vtep_mac6} dev flannel-v6.1 "
            "nud permanent") in lines
    assert "route add 2001:cafe:42:1::/64 via 2001:cafe:42:1:: dev flannel-v6.1 onlink" in lines
    assert "route add 10.42.1.0/24 via 10.42.1.0 dev flannel.1 onlink" in lines  # IPv4 kept
    assert kernelnode.fdb_batch(st, node)[1:] == [
        f"fdb append {other.vtep_mac6} dev flannel-v6.1 dst fd00:e3e7::b self permanent"]


def test_ip6_table_has_the_ipv6_cluster_ips_and_endpoints_only():
    st = _state()
    w0 = next(p for p in st.pods.values() if p.pod.name == "w0")
    svc = st.services[("web", "w")]
    v4, v6 = kernelnode.ruleset(st), kernelnode.ruleset(st, v6=True)
    assert v6.startswith("table ip6 kube-proxy\ndelete table ip6 kube-proxy\n")
    assert f"{svc.cluster_ip6} . tcp . 80 : goto service-web/w/tcp/80" in v6
    assert f"dnat to [{w0.ip6}]:3000" in v6 and f"ip6 saddr {w0.ip6} jump" in v6
    assert "ip6 saddr != 2001:cafe:42::/56 jump mark-for-masquerade" in v6
    assert "type ipv6_addr . inet_proto . inet_service : verdict" in v6
    assert w0.ip not in v6 and st.services[("web", "v4only")].cluster_ip not in v6
    assert w0.ip6 not in v4 and svc.cluster_ip6 not in v4  # the IPv4 table stays IPv4
    assert f"dnat to {w0.ip}:3000" in v4


@pytest.mark.root  # nft checks a ruleset over netlink, which needs CAP_NET_ADMIN
@pytest.mark.skipif(not shutil.which("nft"), reason="needs nft")
def test_nft_accepts_both_tables():
    st = _state()
    rules = kernelnode.ruleset(st) + kernelnode.ruleset(st, v6=True)
    p = subprocess.run(["nft", "-c", "-f", "-"], input=rules, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
