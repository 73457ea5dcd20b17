"""The benchmark configs are valid clusters, the same for emunet and kernel nodes but for the
datapath, and the statistics helpers read percentiles the way the tables label them."""

from __future__ import annotations

import pytest

from bench import datapath, lifecycle
from bench.common_cluster import percentile, ratio
from emunet.config import load_config_text
from emunet.state.plan import plan


@pytest.mark.parametrize("mode", ["emunet", "kernel"])
def test_datapath_bench_config_plans(mode):
    cfg = load_config_text(datapath.config(mode), "bench.yaml")
    assert {n.datapath for n in cfg.cluster.nodes} == {mode}
    st = plan(cfg)
    nodes = {p.pod.name: p.node for p in st.pods.values() if p.pod.namespace == datapath.NS}
    assert nodes == {"client": "node-1", "iperf-local": "node-1", "iperf-remote": "node-2",
                     "echo": "node-2"}
    assert len(cfg.network_policies) == 1
    def same(text: str) -> str:
        return text.replace("datapath: emunet", "X").replace("datapath: kernel", "X")
    assert same(datapath.config("emunet")) == same(datapath.config("kernel"))


def test_lifecycle_bench_configs_plan_200_pods_on_4_nodes():
    nodes, pods, services = lifecycle.SIZES["large"]
    st = plan(load_config_text(lifecycle.config(nodes, pods, services, "kernel"),
                                            "lc.yaml"))
    per_node = {}
    for p in st.pods.values():
        per_node[p.node] = per_node.get(p.node, 0) + 1
    assert sum(per_node.values()) == pods + 1  # + coredns
    assert max(per_node.values()) - min(per_node.values()) <= 1


def test_percentile_and_ratio():
    xs = [float(i) for i in range(1, 101)]
    assert percentile(xs, 50) == 50.0 and percentile(xs, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert ratio(1.0, 4.0) == 0.25 and ratio(1.0, 0.0) != ratio(1.0, 0.0)  # nan
