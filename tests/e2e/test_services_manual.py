"""Services without a selector, as a user meets them: `kubernetes.default` from a pod (DNS and
the API server's /version through 10.43.0.1:443), and a Service backed by an Endpoints object
the user applies and deletes (curl by ClusterIP and name, dig's A and SRV records). One
cluster for the module, the real CLI, curl and dig inside the pods."""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.cluster import Cluster
from tests.waiting import wait_for

NS = "manual"
CONFIG = f"""\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {{name: manual}}
spec:
  nodes: [{{name: node-1}}, {{name: node-2}}]
---
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: near, namespace: {NS}}}
spec:
  nodeName: node-1
  containers: [{{name: c, image: curlimages/curl:8.10.1, command: [sleep, infinity]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: far, namespace: {NS}}}
spec:
  nodeName: node-2
  containers: [{{name: c, image: curlimages/curl:8.10.1, command: [sleep, infinity]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: {NS}}}
spec:
  nodeName: node-2
  containers: [{{name: web, image: nginx:1.27, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: legacy-db, namespace: {NS}}}
spec:
  clusterIP: 10.43.0.99
  ports: [{{name: http, port: 80}}]
"""


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    return module_clusters(None, "manual", text=CONFIG)


def _curl(c: Cluster, pod: str, url: str) -> str:
    p = c.exec(NS, pod, "curl", "-s", "-S", "-m", "5", url, check=False)
    return p.stdout + p.stderr


@pytest.mark.parametrize("pod", ["near", "far"])  # the API's node, and across VXLAN
def test_kubernetes_default_resolves_and_serves_version(cluster, pod):
    out = cluster.exec(NS, pod, "nslookup", "kubernetes.default").stdout
    assert re.search(r"Name:\s+kubernetes\.default\.svc\.cluster\.local\s+Address:\s+"
                     r"10\.43\.0\.1\b", out), out
    body = _curl(cluster, pod, "http://kubernetes.default:443/version")
    version = json.loads(body)
    assert "emunet" in version["gitVersion"] and int(version["minor"]) >= 30, body


def test_kubernetes_endpoints_name_the_first_node(cluster):
    eps = {(e["metadata"]["namespace"], e["metadata"]["name"]): e
           for e in cluster.get("endpoints")}
    ep = eps[("default", "kubernetes")]
    node1 = next(n for n in cluster.get("nodes") if n["metadata"]["name"] == "node-1")
    ip = next(a["address"] for a in node1["status"]["addresses"] if a["type"] == "InternalIP")
    assert ep["subsets"][0]["addresses"][0]["ip"] == ip
    assert ep["subsets"][0]["ports"][0] == {"name": "https", "port": 6443, "protocol": "TCP"}


def test_endpoints_back_a_selectorless_service_until_deleted(cluster):
    assert "curl: (7)" in _curl(cluster, "near", "http://legacy-db.manual")  # RST: no backend
    web_ip = cluster.pod(NS, "web")["status"]["podIP"]
    path = cluster.tmp / "ep.yaml"
    path.write_text(f"""\
apiVersion: v1
kind: Endpoints
metadata: {{name: legacy-db, namespace: {NS}}}
subsets:
- addresses: [{{ip: {web_ip}, hostname: primary}}]
  notReadyAddresses: [{{ip: 10.42.1.250}}]
  ports: [{{name: http, port: 8080}}]
""")
    assert "endpoints/legacy-db created" in cluster.emunet("apply", "-f", str(path)).stdout
    for url in ("http://10.43.0.99", "http://legacy-db", "http://legacy-db.manual.svc"):
        assert "Hello from web" in _curl(cluster, "near", url), url
    fqdn = "legacy-db.manual.svc.cluster.local"
    srv = cluster.exec(NS, "near", "dig", "+short", "SRV", f"_http._tcp.{fqdn}").stdout
    assert srv.split() == ["0", "100", "80", f"{fqdn}."]  # a ClusterIP: the Service's port
    a = cluster.exec(NS, "near", "dig", "+short", f"primary.{fqdn}").stdout
    assert a.split() == [web_ip]  # the endpoint's hostname; the unready address has no name
    assert cluster.exec(NS, "near", "dig", "+short", fqdn).stdout.split() == ["10.43.0.99"]
    ep = next(e for e in cluster.get("endpoints") if e["metadata"]["name"] == "legacy-db")
    assert ep["subsets"][0]["addresses"] == [{"ip": web_ip, "hostname": "primary",
                                              "nodeName": "node-2"}]
    assert "endpoints/legacy-db deleted" in cluster.emunet("delete", "-f", str(path)).stdout
    wait_for(lambda: "curl: (7)" in _curl(cluster, "near", "http://legacy-db"), 10,
             "legacy-db without backends")
