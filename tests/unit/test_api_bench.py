"""The API benchmark's pure helpers: its generated cluster (2,000 pods over 4 nodes fit their
/22s and load cleanly), the file of Services it applies, and the figures it derives."""

from __future__ import annotations

from bench import api
from emunet.config import load_config_text
from emunet.state.plan import plan


def test_config_spreads_2000_pods_over_4_nodes_within_their_ranges():
    cfg = load_config_text(api.config(4, 2000), "api.yaml")
    st = plan(cfg)
    pods = [p for p in st.pods.values() if p.pod.namespace == api.NS]
    assert len(pods) == 2000
    assert {p.node for p in pods} == {"node-1", "node-2", "node-3", "node-4"}
    assert cfg.cluster.api_port == 0  # any free port: clusters share the machine
    ips = [p.ip for p in pods]
    assert len(set(ips)) == len(ips)


def test_services_file_is_n_services_that_select_no_pod():
    text = api.services_file(3)
    cfg = load_config_text(api.config(1, 2) + "---\n" + text, "svc.yaml")
    assert [s.name for s in cfg.services] == ["bulk-0", "bulk-1", "bulk-2"]
    assert sum("matches no pod" in w for w in cfg.warnings) == 3


def test_api_port_from_kubeconfig():
    kc = "clusters:\n- cluster:\n    server: http://127.0.0.1:40123\n  name: emunet\n"
    assert api.api_port(kc) == 40123


def test_table_rows_skips_the_header_and_blank_lines():
    out = "NAMESPACE   NAME    READY\nbench       pod-0   1/1\nbench       pod-1   1/1\n\n"
    assert api.table_rows(out) == 2
    assert api.table_rows("") == 0


def test_spread_is_nearest_rank_median_and_max():
    assert api.spread([0.3, 0.1, 0.2, 0.4]) == {"p50": 0.2, "max": 0.4}
