"""NodePort/LoadBalancer, sessionAffinity and node impairment: from YAML to state, errors located
(file, line, field path) as the API server would refuse them."""

from __future__ import annotations

from pathlib import Path

import pytest

from emunet.cluster.apply import apply_config
from emunet.config import ConfigError, load_config_text
from emunet.model import Impairment
from emunet.state import codec
from emunet.state.cluster import StateError
from emunet.state.plan import plan

CLUSTER = """\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {name: t}
spec:
  nodes:
  - name: n1
  - name: n2
"""

SVC = """\
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: a, port: 80,
     nodePort: 30080}
  - {name: b, port: 81}
"""


def _error(text: str) -> ConfigError:
    """The only error the text has (a second one would be a test mistake, so it fails)."""
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "t.yaml")
    assert len(str(info.value).splitlines()) == 1, str(info.value)
    return info.value


def test_node_ports_given_and_allocated_lowest_free() -> None:
    st = plan(load_config_text(CLUSTER + SVC + SVC.replace(
        "name: web}", "name: lb}").replace("NodePort", "LoadBalancer").replace(
        "nodePort: 30080", "nodePort: 30000"), "t.yaml"))
    web = st.services[("default", "web")].service
    lb = st.services[("default", "lb")].service
    assert [p.node_port for p in web.ports] == [30080, 30001]
    assert [p.node_port for p in lb.ports] == [30000, 30002]
    assert st.services[("default", "web")].cluster_ip  # NodePort keeps its ClusterIP
    again = codec.from_json(codec.to_json(st))
    assert [p.node_port for p in again.services[("default", "web")].service.ports] == [
        30080, 30001]


@pytest.mark.parametrize("edit, line, path, needle", [
    ("nodePort: 29999", 17, "spec.ports[0].nodePort", "30000-32767"),
    ("nodePort: 32768", 17, "spec.ports[0].nodePort", "30000-32767"),
    ("nodePort: http", 17, "spec.ports[0].nodePort", "integer"),
])
def test_node_port_range_errors_are_located(edit: str, line: int, path: str,
                                            needle: str) -> None:
    err = _error(CLUSTER + SVC.replace("nodePort: 30080", edit))
    assert (err.file, err.line, err.path) == ("t.yaml", line, path), str(err)
    assert needle in str(err)


def test_node_port_needs_its_type_and_no_headless() -> None:
    err = _error(CLUSTER + SVC.replace("  type: NodePort\n", ""))
    assert (err.line, err.path) == (16, "spec.ports[0].nodePort")
    assert "needs type NodePort" in err.message
    err = _error(CLUSTER + SVC.replace("  type: NodePort\n",
                                       "  type: NodePort\n  clusterIP: None\n"))
    assert err.path == "spec.clusterIP" and "cannot be headless" in err.message


def test_node_port_twice_is_refused_in_a_service_and_across_services() -> None:
    err = _error(CLUSTER + SVC.replace("{name: b, port: 81}",
                                       "{name: b, port: 81, nodePort: 30080}"))
    assert (err.line, err.path) == (18, "spec.ports[1].nodePort") and "duplicate" in err.message
    err = _error(CLUSTER + SVC + SVC.replace("name: web}", "name: other}"))
    assert err.path == "spec.ports[0].nodePort" and "already Service default/web's" in str(err)


def test_apply_refuses_a_node_port_in_use_and_keeps_one_on_update(tmp_path: Path) -> None:
    st = plan(load_config_text(CLUSTER + SVC, "t.yaml"))
    f = tmp_path / "b.yaml"
    f.write_text(SVC.replace("name: web}", "name: b}").lstrip("-\n"))
    with pytest.raises((StateError, ConfigError), match="30080"):
        apply_config(st, str(f))
    f.write_text(SVC.replace(",\n     nodePort: 30080}", "}").lstrip("-\n"))  # web, no nodePort
    apply_config(st, str(f))
    assert [p.node_port for p in st.services[("default", "web")].service.ports] == [
        30080, 30000]


AFFINITY = SVC.replace("  type: NodePort\n", "  sessionAffinity: ClientIP\n").replace(
    ",\n     nodePort: 30080}", "}")


def test_session_affinity_and_its_timeout() -> None:
    svc = load_config_text(CLUSTER + AFFINITY, "t.yaml").services[0]
    assert (svc.session_affinity, svc.affinity_timeout) == ("ClientIP", 10800)
    text = CLUSTER + AFFINITY.replace(
        "  sessionAffinity: ClientIP\n",
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n"
        "      timeoutSeconds: 60\n")
    assert load_config_text(text, "t.yaml").services[0].affinity_timeout == 60


@pytest.mark.parametrize("block, line, path, needle", [
    ("  sessionAffinity: Sticky\n", 13, "spec.sessionAffinity", "ClientIP"),
    ("  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n"
     "      timeoutSeconds: 0\n", 16, "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
     "86400"),
    ("  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n"
     "      timeoutSeconds: 86401\n", 16, "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
     "86400"),
    ("  sessionAffinityConfig:\n    clientIP: {timeoutSeconds: 5}\n", 13,
     "spec.sessionAffinityConfig", "needs sessionAffinity: ClientIP"),
])
def test_affinity_errors_are_located(block: str, line: int, path: str, needle: str) -> None:
    err = _error(CLUSTER + AFFINITY.replace("  sessionAffinity: ClientIP\n", block))
    assert (err.line, err.path) == (line, path), str(err)
    assert needle in str(err)


IMPAIRED = CLUSTER.replace("  - name: n2\n",
                           "  - name: n2\n    impairment: {delay: 20ms, jitter: 2ms, "
                           "loss: 1%, rate: 5mbit}\n")


def test_declared_impairment_reaches_the_state_links() -> None:
    st = plan(load_config_text(IMPAIRED, "t.yaml"))
    want = Impairment(delay_ms=20, jitter_ms=2, loss_pct=1, rate_bps=5_000_000)
    assert st.links == {"n2": want}
    assert codec.from_json(codec.to_json(st)).links == {"n2": want}


@pytest.mark.parametrize("value, path, needle", [
    ("{delay: 20}", "spec.nodes[1].impairment.delay", "must be a string"),
    ("{delay: 20s0}", "spec.nodes[1].impairment.delay", "not a duration"),
    ("{}", "spec.nodes[1].impairment", "empty impairment"),
    ("{delay: 5ms, jitter: 9ms}", "spec.nodes[1].impairment.jitter", "larger than the delay"),
    ("{loss: 120%}", "spec.nodes[1].impairment.loss", "percentage"),
    ("{rate: fast}", "spec.nodes[1].impairment.rate", "not a rate"),
    ("{delay: 5ms, corrupt: 1%}", "spec.nodes[1].impairment.corrupt", "unknown field"),
    ("{delay: 5ms, jitter: 1ms, distribution: pareto}",
     "spec.nodes[1].impairment.distribution", "uniform, normal"),
])
def test_impairment_errors_are_located(value: str, path: str, needle: str) -> None:
    text = CLUSTER.replace("  - name: n2\n", f"  - name: n2\n    impairment: {value}\n")
    err = _error(text)
    assert (err.line, err.path) == (8, path), str(err)
    assert needle in str(err)
