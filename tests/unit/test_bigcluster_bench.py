"""The scale benchmark's configs (issue 17) plan: 1,000 and 2,000 pods spread over 10 and 20
nodes within their ranges, every pod behind one Service, the policies selecting pods."""

from __future__ import annotations

import collections

import pytest

from bench import bigcluster
from emunet.config import load_config_text
from emunet.state.plan import plan


@pytest.mark.parametrize("size", ["base", "1k", "2k", "5k"])
def test_sizes_plan(size):
    nodes, pods, services, policies = bigcluster.SIZES[size]
    cfg = load_config_text(bigcluster.config(nodes, pods, services, policies), "big.yaml")
    st = plan(cfg)
    apps = [p for p in st.pods.values() if p.pod.namespace == bigcluster.NS]
    assert len(apps) == pods and len(st.nodes) == nodes
    per_node = collections.Counter(p.node for p in apps)
    assert len(per_node) == nodes and max(per_node.values()) - min(per_node.values()) <= 1
    assert len({p.ip for p in st.pods.values()}) == len(st.pods)
    ours = [k for k in st.services if k[0] == bigcluster.NS]
    assert len(ours) == services and len(st.policies) == policies
    index = st.pod_index()
    assert all(len(st.selected_pods(st.services[k].service, index)) == pods // services
               for k in ours)
    assert all(dict(pol.pod_selector.match_labels)["app"].startswith("app-")
               for pol in cfg.network_policies)


def test_targets_are_the_issues():
    assert bigcluster.SIZES["2k"] == (20, 2000, 200, 100)
    assert bigcluster.TARGETS["1k"]["up_s"] == 30 and bigcluster.TARGETS["2k"]["up_s"] == 60
    assert bigcluster.TARGETS["2k"]["rss_mb"] == 1536
