"""Real kubectl changes a real cluster through the API (issue 14, phase 2): apply (created,
unchanged, configured), apply --server-side, label, scale, delete, wait and rollout status;
bad objects answered as the API server does (kubectl prints the field path) with nothing
changed. Each change is checked in the cluster itself (`emunet get`, a curl through a Service
that kubectl created, from a pod via `emunet exec`)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import needs_root, unique_prefix
from tests.e2e.cluster import ROOT, Cluster
from tests.e2e.test_kubectl import kubectl_bin

pytestmark = needs_root
NS = "blog-website"

APP = """\
apiVersion: v1
kind: Namespace
metadata:
  name: kapp
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: kapp
spec:
  replicas: REPLICAS
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: nginx:1.27
          imagePullPolicy: Always
          ports:
            - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: kapp
spec:
  selector: {app: web}
  ports:
    - port: 80
      targetPort: 8080
"""


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(str(ROOT / "configs" / "two-node.yaml"), unique_prefix("emw"))
    try:
        c.emunet("up", c.config, timeout=120)
        yield c
    finally:
        c.down_clean()


@pytest.fixture
def kubectl(cluster, tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
           "KUBECONFIG": str(cluster.run_dir / "kubeconfig")}

    def run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        p = subprocess.run([kubectl_bin(), *args], env=env, capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {p.returncode}:\n"
                                 f"{p.stdout}\n{p.stderr}")
        return p
    return run


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def pods_of(cluster: Cluster, ns: str, prefix: str) -> list[dict]:
    return [p for p in cluster.get("pods") if p["metadata"]["namespace"] == ns
            and p["metadata"]["name"].startswith(prefix)]


def until(fn, timeout: float = 30.0):
    end = time.time() + timeout
    while True:
        got = fn()
        if got or time.time() > end:
            return got
        time.sleep(0.3)


def no_tracebacks(cluster: Cluster) -> None:
    for log in (cluster.run_dir / "logs").glob("*.log"):
        assert "Traceback" not in log.read_text(errors="replace"), log


def test_apply_created_unchanged_configured_and_served(cluster, kubectl, tmp_path):
    f = write(tmp_path, "app.yaml", APP.replace("REPLICAS", "2"))
    out = kubectl("apply", "-f", f).stdout.splitlines()
    assert out == ["namespace/kapp created", "deployment.apps/web created",
                   "service/web created"]
    assert until(lambda: len([p for p in pods_of(cluster, "kapp", "web-")
                              if p["status"]["phase"] == "Running"]) == 2)
    # the Service kubectl created answers through the datapath, from a pod
    body = until(lambda: cluster.exec(NS, "frontend-client", "curl", "-s", "-m", "3",
                                      "http://web.kapp", check=False).stdout)
    assert body, "no answer through the Service kubectl applied"
    out = kubectl("apply", "-f", f).stdout.splitlines()
    assert out == ["namespace/kapp unchanged", "deployment.apps/web unchanged",
                   "service/web unchanged"]
    f3 = write(tmp_path, "app3.yaml", APP.replace("REPLICAS", "3"))
    out = kubectl("apply", "-f", f3).stdout.splitlines()
    assert out == ["namespace/kapp unchanged", "deployment.apps/web configured",
                   "service/web unchanged"]
    assert until(lambda: len(pods_of(cluster, "kapp", "web-")) == 3)
    got = json.loads(kubectl("get", "deploy", "-n", "kapp", "web", "-o", "json").stdout)
    last = got["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    assert json.loads(last)["spec"]["replicas"] == 3
    out = kubectl("rollout", "status", "deploy/web", "-n", "kapp", "--timeout=60s").stdout
    assert 'deployment "web" successfully rolled out' in out


def test_scale_label_wait(cluster, kubectl):
    out = kubectl("scale", "deploy", "web", "-n", "kapp", "--replicas=1").stdout
    assert out.strip() == "deployment.apps/web scaled"
    assert until(lambda: len([p for p in pods_of(cluster, "kapp", "web-")
                              if not p["metadata"].get("deletionTimestamp")]) == 1)
    out = kubectl("label", "pod", "-n", NS, "monospaced-test", "tier=web").stdout
    assert out.strip() == "pod/monospaced-test labeled"
    assert cluster.pod(NS, "monospaced-test")["metadata"]["labels"]["tier"] == "web"
    p = kubectl("label", "pod", "-n", NS, "monospaced-test", "tier=db", check=False)
    assert p.returncode == 1 and "already has a value (web)" in p.stderr  # kubectl's own check
    kubectl("label", "pod", "-n", NS, "monospaced-test", "tier-")
    assert "tier" not in cluster.pod(NS, "monospaced-test")["metadata"]["labels"]
    out = kubectl("wait", "--for=condition=Ready", "pod/monospaced-test", "-n", NS,
                  "--timeout=20s").stdout
    assert out.strip() == "pod/monospaced-test condition met"


def test_bad_objects_are_refused_with_the_field_path(cluster, kubectl, tmp_path):
    before = cluster.emunet("get", "svc", "-A", "-o", "json").stdout
    bad = write(tmp_path, "bad.yaml", """\
apiVersion: v1
kind: Service
metadata: {name: bad, namespace: blog-website}
spec:
  selector: {app: x}
  ports: [{port: 80, targetPort: 70000}]
""")
    p = kubectl("apply", "-f", bad, check=False)
    assert p.returncode == 1
    # kubectl's form for a 422 Invalid Status (kubectl cmd/util/helpers.go: "The %s is invalid")
    assert p.stderr.startswith('The Service "bad" is invalid: spec.ports[0].targetPort: '
                               'Invalid value: '), p.stderr
    assert "70000" in p.stderr
    unknown = write(tmp_path, "unknown.yaml", """\
apiVersion: v1
kind: Service
metadata: {name: bad, namespace: blog-website}
spec:
  bogus: 1
  ports: [{port: 80}]
""")
    p = kubectl("apply", "-f", unknown, check=False)
    assert p.returncode == 1 and 'strict decoding error: unknown field "spec.bogus"' in p.stderr
    nons = write(tmp_path, "nons.yaml", """\
apiVersion: v1
kind: Pod
metadata: {name: lost, namespace: nowhere}
spec:
  containers: [{name: c, image: busybox}]
""")
    p = kubectl("apply", "-f", nons, check=False)
    assert p.returncode == 1 and 'namespaces "nowhere" not found' in p.stderr, p.stderr
    assert cluster.emunet("get", "svc", "-A", "-o", "json").stdout == before
    no_tracebacks(cluster)


def test_server_side_apply(cluster, kubectl, tmp_path):
    f = write(tmp_path, "ssa.yaml", """\
apiVersion: v1
kind: Service
metadata: {name: ssa, namespace: kapp}
spec:
  selector: {app: web}
  ports: [{port: 81, targetPort: 8080}]
""")
    assert kubectl("apply", "--server-side", "-f", f).stdout.strip() == \
        "service/ssa serverside-applied"
    assert kubectl("apply", "--server-side", "-f", f).stdout.strip() == \
        "service/ssa serverside-applied"
    body = until(lambda: cluster.exec(NS, "frontend-client", "curl", "-s", "-m", "3",
                                      "http://ssa.kapp:81", check=False).stdout)
    assert body


def test_delete_by_name_and_by_file(cluster, kubectl, tmp_path):
    out = kubectl("delete", "svc", "ssa", "-n", "kapp").stdout
    assert out.strip() == 'service "ssa" deleted'
    p = kubectl("get", "svc", "ssa", "-n", "kapp", check=False)
    assert p.returncode == 1 and 'services "ssa" not found' in p.stderr
    # the objects of the file, then the namespace: emunet deletes a namespace's contents
    # synchronously (upstream's namespace controller does it while the namespace is
    # Terminating), so objects listed after their namespace would be 404 already
    objs = write(tmp_path, "objs.yaml", APP.replace("REPLICAS", "1").split("---\n", 1)[1])
    out = kubectl("delete", "-f", objs).stdout.splitlines()
    assert out == ['deployment.apps "web" deleted', 'service "web" deleted']
    assert kubectl("delete", "ns", "kapp").stdout.strip() == 'namespace "kapp" deleted'
    assert not [s for s in cluster.get("svc") if s["metadata"]["namespace"] == "kapp"]
    assert until(lambda: not pods_of(cluster, "kapp", ""), 20)
    p = kubectl("delete", "pod", "nope", "-n", NS, check=False)
    assert p.returncode == 1 and 'pods "nope" not found' in p.stderr
    no_tracebacks(cluster)
