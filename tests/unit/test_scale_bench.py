"""The scale benchmark's two configs: the base has one Service and one NetworkPolicy, the loaded
one the extra Services (distinct ClusterIPs) and policies (half copies of the server's rule,
half selecting nobody)."""

from __future__ import annotations

from bench import scale
from emunet.config import load_config_text
from emunet.state.plan import plan


def _plan(services: int, policies: int) -> tuple:
    cfg = load_config_text(scale.config(services, policies), "scale.yaml")
    return cfg, plan(cfg)


def test_base_config_has_one_service_and_one_policy():
    cfg, st = _plan(0, 0)
    assert [s.name for s in cfg.services] == ["iperf-remote"]
    assert [p.name for p in cfg.network_policies] == ["iperf"]
    nodes = {p.pod.name: p.node for p in st.pods.values() if p.pod.namespace == scale.NS}
    assert nodes == {"client": "node-1", "iperf-remote": "node-2"}


def test_loaded_config_adds_services_and_policies_with_distinct_cluster_ips():
    cfg, st = _plan(40, 10)
    assert len(cfg.services) == 41 and len(cfg.network_policies) == 11
    ips = [s.cluster_ip for s in st.services.values()]
    assert len(set(ips)) == len(ips)
    # half the extra policies are additive copies for the server, half select nobody
    selectors = [dict(p.pod_selector.match_labels) for p in cfg.network_policies]
    assert sum(s == {"app": "iperf-remote"} for s in selectors) == 1 + 5
