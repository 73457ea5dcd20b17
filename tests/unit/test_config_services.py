"""Service kinds DNS needs, from YAML to state: ExternalName, headless, a given clusterIP
(range, clusterDNS, in use, immutable on apply) and pod hostname/subdomain."""

from __future__ import annotations

from pathlib import Path

import pytest

from emunet.cluster.apply import apply_config
from emunet.config import ConfigError, load_config_text
from emunet.dns.zone import EXTERNAL, HEADLESS, Zone
from emunet.state import codec
from emunet.state.cluster import ClusterState, StateError
from emunet.state.plan import plan

BASE = """\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {name: t}
spec:
  nodes: [{name: n1}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, labels: {app: web}}
spec:
  hostname: web-0
  subdomain: web
  containers: [{name: c, image: nginx, ports: [{containerPort: 80, name: http}]}]
"""

HEADLESS_SVC = """\
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80}]
"""

EXTERNAL_SVC = """\
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  type: ExternalName
  externalName: db.example.com.
"""


def test_external_name_service_has_no_cluster_ip_and_no_ports() -> None:
    cfg = load_config_text(BASE + EXTERNAL_SVC, "t.yaml")
    svc = cfg.services[0]
    assert (svc.type, svc.external_name, svc.cluster_ip, svc.ports) == (
        "ExternalName", "db.example.com.", None, ())
    st = plan(cfg)
    assert st.services[("default", "ext")].cluster_ip is None
    rec = Zone.from_state(st).services[("default", "ext")]
    assert (rec.kind, rec.external_name, rec.endpoints) == (EXTERNAL, "db.example.com", ())


def test_headless_service_and_pod_hostname_subdomain_reach_the_zone() -> None:
    st = plan(load_config_text(BASE + HEADLESS_SVC, "t.yaml"))
    pod = st.pods[("default", "web-0")].pod
    assert (pod.hostname, pod.subdomain) == ("web-0", "web")
    st.pods[("default", "web-0")].ready = True
    rec = Zone.from_state(codec.from_json(codec.to_json(st))).services[("default", "web")]
    assert rec.kind == HEADLESS and rec.cluster_ip is None
    assert [(e.hostname, e.ip) for e in rec.endpoints] == [("web-0", st.pods[
        ("default", "web-0")].ip)]


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "t.yaml")
    return info.value


@pytest.mark.parametrize("edit, line, path, needle", [
    ("  externalName: db.example.com.\n", 18, "spec.externalName", "required field is missing"),
    ("  externalName: Db_Example\n", 20, "spec.externalName", "DNS-1123 subdomain"),
    ("  externalName: db.example.com\n  clusterIP: 10.43.0.50\n", 21, "spec.clusterIP",
     "may not be set for an ExternalName"),
])
def test_external_name_errors_are_located(edit: str, line: int, path: str, needle: str
                                          ) -> None:
    text = BASE + EXTERNAL_SVC.replace("  externalName: db.example.com.\n",
                                       edit if "clusterIP" in edit or "_" in edit else "")
    err = _error(text)
    assert (err.line, err.path) == (line, path), str(err)
    assert needle in err.message


def test_external_name_only_with_its_type() -> None:
    err = _error(BASE + HEADLESS_SVC.replace("  clusterIP: None\n",
                                             "  externalName: db.example.com\n"))
    assert (err.line, err.path) == (19, "spec.externalName")


@pytest.mark.parametrize("ip, needle", [
    ("10.44.0.5", "not a host address of serviceCIDR"),
    ("10.43.0.10", "is clusterDNS"),
])
def test_given_cluster_ip_is_checked(ip: str, needle: str) -> None:
    err = _error(BASE + HEADLESS_SVC.replace("None", ip))
    assert (err.line, err.path) == (19, "spec.clusterIP") and needle in err.message


def _running() -> ClusterState:
    return plan(load_config_text(
        BASE + HEADLESS_SVC.replace("None", "10.43.0.50").replace("name: web}", "name: a}"),
        "t.yaml"))


def test_apply_honours_cluster_ip_and_rejects_one_in_use(tmp_path: Path) -> None:
    st = _running()
    assert st.services[("default", "a")].cluster_ip == "10.43.0.50"
    f = tmp_path / "b.yaml"
    f.write_text(HEADLESS_SVC.lstrip("-\n").replace("None", "10.43.0.50")
                 .replace("name: web}", "name: b}"))
    with pytest.raises(StateError, match=r"b.yaml:1: spec.clusterIP: clusterIP 10.43.0.50 is "
                       r"already used by Service default/a"):
        apply_config(st, str(f))
    assert ("default", "b") not in st.services  # all-or-nothing
    f.write_text(f.read_text().replace("10.43.0.50", "10.43.0.51"))
    apply_config(st, str(f))
    assert st.services[("default", "b")].cluster_ip == "10.43.0.51"


def test_apply_cannot_change_a_cluster_ip(tmp_path: Path) -> None:
    st = _running()
    f = tmp_path / "a.yaml"
    f.write_text(HEADLESS_SVC.lstrip("-\n").replace("None", "10.43.0.60")
                 .replace("name: web}", "name: a}"))
    with pytest.raises(StateError, match="spec.clusterIP: .* has clusterIP 10.43.0.50; it is "
                       "immutable"):
        apply_config(st, str(f))
    f.write_text(EXTERNAL_SVC.lstrip("-\n"))
    assert [c.message for c in apply_config(st, str(f))] == ["service/ext created"]
    assert st.services[("default", "ext")].cluster_ip is None
