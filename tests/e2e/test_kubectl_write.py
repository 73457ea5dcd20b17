"""Real kubectl changes a real cluster through the API (issue 14, phase 2): apply (created,
unchanged, configured), apply --server-side, label, scale, delete, wait and rollout status;
bad objects answered as the API server does (kubectl prints the field path) with nothing
changed. Each change is checked in the cluster itself (`emunet get`, a curl through a Service
that kubectl created, from a pod via `emunet exec`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.cluster import ROOT, Cluster
from tests.e2e.test_kubectl import make_kubectl

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
def cluster(module_clusters) -> Cluster:
    return module_clusters(ROOT / "configs" / "two-node.yaml", "emkw")


@pytest.fixture
def kubectl(cluster, tmp_path):
    return make_kubectl(cluster, tmp_path, default_timeout=60)


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


def deleted(out: str) -> list[str]:
    """kubectl's delete lines; 1.35 adds ` from NS namespace` (older ones do not)."""
    return [re.sub(r" from \S+ namespace$", "", line) for line in out.strip().splitlines()]


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
    ops = '[{"op": "replace", "path": "/spec/replicas", "value": 2}]'
    out = kubectl("patch", "deploy", "web", "-n", "kapp", "--type=json", "-p", ops).stdout
    assert out.strip() == "deployment.apps/web patched"
    assert until(lambda: len(pods_of(cluster, "kapp", "web-")) == 2)
    out = kubectl("patch", "deploy", "web", "-n", "kapp", "-p",
                  '{"spec": {"replicas": 1}}').stdout  # strategic, kubectl's default
    assert out.strip() == "deployment.apps/web patched"
    # kubectl set image: a strategic merge patch of the container named web (merge key: name)
    out = kubectl("set", "image", "deploy/web", "-n", "kapp", "web=nginx:1.28").stdout
    assert out.strip() == "deployment.apps/web image updated"
    kubectl("rollout", "status", "deploy/web", "-n", "kapp", "--timeout=60s")
    # the rolling update ran: the pods emunet runs now have the new image, ports kept
    assert until(lambda: {c["image"] for p in pods_of(cluster, "kapp", "web-")
                          if not p["metadata"].get("deletionTimestamp")
                          for c in p["spec"]["containers"]} == {"nginx:1.28"})
    web = [p for p in pods_of(cluster, "kapp", "web-")
           if not p["metadata"].get("deletionTimestamp")][0]
    assert web["spec"]["containers"][0]["ports"][0]["containerPort"] == 8080
    out = kubectl("annotate", "pod", "-n", NS, "monospaced-test", "note=hi").stdout
    assert out.strip() == "pod/monospaced-test annotated"
    got = json.loads(kubectl("get", "pod", "-n", NS, "monospaced-test", "-o", "json").stdout)
    assert got["metadata"]["annotations"]["note"] == "hi"
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
    assert deleted(out) == ['service "ssa" deleted']
    p = kubectl("get", "svc", "ssa", "-n", "kapp", check=False)
    assert p.returncode == 1 and 'services "ssa" not found' in p.stderr
    # the file lists the namespace first: its objects go with it, and their own DELETEs are
    # answered as upstream's are while the namespace terminates
    f = write(tmp_path, "app.yaml", APP.replace("REPLICAS", "1"))
    out = deleted(kubectl("delete", "-f", f).stdout)
    assert out == ['namespace "kapp" deleted', 'deployment.apps "web" deleted',
                   'service "web" deleted']
    assert kubectl("get", "ns", "kapp", check=False).returncode == 1
    assert not [s for s in cluster.get("svc") if s["metadata"]["namespace"] == "kapp"]
    assert until(lambda: not pods_of(cluster, "kapp", ""), 20)
    p = kubectl("delete", "pod", "nope", "-n", NS, check=False)
    assert p.returncode == 1 and 'pods "nope" not found' in p.stderr
    no_tracebacks(cluster)


POLICY_APP = """\
apiVersion: v1
kind: Namespace
metadata:
  name: kpol
---
apiVersion: v1
kind: Pod
metadata:
  name: srv
  namespace: kpol
  labels: {app: srv}
spec:
  containers:
    - name: srv
      image: nginx:1.27
      ports: [{containerPort: 8080}]
"""
DENY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: kpol}
spec:
  podSelector: {matchLabels: {app: srv}}
  policyTypes: [Ingress]
"""
CNP = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: l7, namespace: kpol}
spec:
  endpointSelector: {matchLabels: {app: srv}}
  ingress:
    - toPorts:
        - ports: [{port: "8080", protocol: TCP}]
          rules:
            http: [{method: GET, path: "PATH"}]
"""


def test_network_policies_through_kubectl_take_effect(cluster, kubectl, tmp_path):
    app = write(tmp_path, "pol-app.yaml", POLICY_APP)
    assert kubectl("apply", "-f", app).stdout.splitlines() == ["namespace/kpol created",
                                                              "pod/srv created"]
    ip = until(lambda: next((p["status"]["podIP"] for p in pods_of(cluster, "kpol", "srv")
                             if p["status"]["phase"] == "Running"), None))

    def curl() -> int:
        return cluster.exec(NS, "frontend-client", "curl", "-s", "-o", "/dev/null", "-m", "2",
                            f"http://{ip}:8080/", check=False).returncode

    assert until(lambda: curl() == 0)
    deny = write(tmp_path, "deny.yaml", DENY)
    assert kubectl("apply", "-f", deny).stdout.strip() == \
        "networkpolicy.networking.k8s.io/deny created"
    assert until(lambda: curl() != 0), "the NetworkPolicy kubectl applied did not deny"
    assert kubectl("apply", "-f", deny).stdout.strip() == \
        "networkpolicy.networking.k8s.io/deny unchanged"
    assert deleted(kubectl("delete", "-f", deny).stdout) == [
        'networkpolicy.networking.k8s.io "deny" deleted']
    assert until(lambda: curl() == 0)
    # a CRD: kubectl sends a JSON merge patch (no strategic merge for custom resources)
    cnp = write(tmp_path, "cnp.yaml", CNP.replace("PATH", "/a"))
    assert kubectl("apply", "-f", cnp).stdout.strip() == \
        "ciliumnetworkpolicy.cilium.io/l7 created"
    assert kubectl("apply", "-f", cnp).stdout.strip() == \
        "ciliumnetworkpolicy.cilium.io/l7 unchanged"
    cnp = write(tmp_path, "cnp.yaml", CNP.replace("PATH", "/b"))
    assert kubectl("apply", "-f", cnp).stdout.strip() == \
        "ciliumnetworkpolicy.cilium.io/l7 configured"
    got = json.loads(kubectl("get", "cnp", "-n", "kpol", "l7", "-o", "json").stdout)
    assert got["spec"]["ingress"][0]["toPorts"][0]["rules"]["http"][0]["path"] == "/b"
    assert deleted(kubectl("delete", "cnp", "l7", "-n", "kpol").stdout) == [
        'ciliumnetworkpolicy.cilium.io "l7" deleted']


PY_CLIENT = """
from kubernetes import client, config
config.load_kube_config()
apps = client.AppsV1Api()
dep = {"metadata": {"name": "py"}, "spec": {
    "replicas": 1, "selector": {"matchLabels": {"app": "py"}},
    "template": {"metadata": {"labels": {"app": "py"}},
                 "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}
print(apps.create_namespaced_deployment("kpol", dep).metadata.name)
s = apps.patch_namespaced_deployment_scale("py", "kpol", {"spec": {"replicas": 2}})
print(s.spec.replicas)
try:
    apps.create_namespaced_deployment("kpol", dep)
except client.ApiException as e:
    print(e.status, e.reason)
import time
core = client.CoreV1Api()
for _ in range(200):
    listed = core.list_namespaced_pod("kpol", label_selector="app=py").items
    names = [p.metadata.name for p in listed]
    if len(names) == 2:
        break
    time.sleep(0.1)
core.delete_collection_namespaced_pod("kpol", label_selector="app=py", grace_period_seconds=0)
print(" ".join(sorted(names)))
"""


def test_python_client_creates_and_scales(cluster, kubectl, tmp_path):
    p = subprocess.run([sys.executable, "-c", PY_CLIENT], env=kubectl.env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[:3] == ["py", "2", "409 Conflict"]
    # deletecollection took both pods; the Deployment made two new ones
    deleted_pods = set(p.stdout.split("\n")[3].split())
    assert len(deleted_pods) == 2
    assert until(lambda: len(pods_of(cluster, "kpol", "py-")) == 2 and not deleted_pods & {
        q["metadata"]["name"] for q in pods_of(cluster, "kpol", "py-")}, 20)
    # kubectl create (POST) and replace (PUT)
    f = write(tmp_path, "c.yaml", POLICY_APP.split("---\n")[1].replace("srv", "made"))
    assert kubectl("create", "-f", f).stdout.strip() == "pod/made created"
    p = kubectl("create", "-f", f, check=False)
    assert p.returncode == 1 and 'pods "made" already exists' in p.stderr
    f = write(tmp_path, "c.yaml", open(f).read().replace("{app: made}", "{app: made, v: '2'}"))
    assert kubectl("replace", "-f", f).stdout.strip() == "pod/made replaced"
    assert cluster.pod("kpol", "made")["metadata"]["labels"] == {"app": "made", "v": "2"}
    # a pod terminates for its grace period; kubectl waits for the watch's DELETED
    assert deleted(kubectl("delete", "pod", "made", "-n", "kpol").stdout) == [
        'pod "made" deleted']
    p = kubectl("get", "pod", "made", "-n", "kpol", check=False)
    assert p.returncode == 1 and 'pods "made" not found' in p.stderr
    assert kubectl("delete", "ns", "kpol").stdout.strip() == 'namespace "kpol" deleted'
    assert until(lambda: not pods_of(cluster, "kpol", ""), 20)


def test_apply_over_an_object_emunet_up_created(cluster, kubectl, tmp_path):
    """No last-applied annotation yet: kubectl warns, patches, and keeps it from then on."""
    f = write(tmp_path, "svc.yaml", """\
apiVersion: v1
kind: Service
metadata:
  name: monospaced
  namespace: blog-website
  labels: {team: blog}
spec:
  selector: {app: monospaced}
  ports: [{protocol: TCP, port: 80, targetPort: 3000}]
  type: ClusterIP
""")
    p = kubectl("apply", "-f", f)
    assert p.stdout.strip() == "service/monospaced configured"
    assert "missing the kubectl.kubernetes.io/last-applied-configuration" in p.stderr
    svc = [s for s in cluster.get("svc") if s["metadata"]["name"] == "monospaced"][0]
    assert svc["metadata"]["labels"] == {"team": "blog"}
    assert svc["spec"]["clusterIP"] == "10.43.0.11"  # kept
    assert kubectl("apply", "-f", f).stdout.strip() == "service/monospaced unchanged"
    # dryRun=All: kubectl diff and apply --dry-run=server see the change, nothing happens
    changed = write(tmp_path, "svc2.yaml", open(f).read().replace("team: blog", "team: web"))
    p = kubectl("diff", "-f", changed, check=False)
    assert p.returncode == 1, p.stderr  # 1: differences found
    assert "-    team: blog" in p.stdout and "+    team: web" in p.stdout
    out = kubectl("apply", "--dry-run=server", "-f", changed).stdout.strip()
    assert out == "service/monospaced configured (server dry run)"
    assert kubectl("diff", "-f", f, check=False).returncode == 0
    svc = [s for s in cluster.get("svc") if s["metadata"]["name"] == "monospaced"][0]
    assert svc["metadata"]["labels"] == {"team": "blog"}
    assert cluster.exec(NS, "frontend-client", "curl", "-s", "-m", "3",
                        "http://monospaced").returncode == 0


def test_bad_requests_straight_to_the_api(cluster):
    """What kubectl never sends: malformed JSON, a huge body, a patch of the wrong type; a
    Status each time, nothing in the logs."""
    server = [line.split()[-1] for line in (cluster.run_dir / "kubeconfig").read_text()
              .splitlines() if "server:" in line][0]

    def send(method: str, path: str, data: bytes, ctype: str) -> tuple[int, dict]:
        req = urllib.request.Request(server + path, data=data, method=method,
                                     headers={"Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    pods = f"/api/v1/namespaces/{NS}/pods"
    code, st = send("POST", pods, b"{nope", "application/json")
    assert code == 400 and st["kind"] == "Status" and st["reason"] == "BadRequest"
    code, st = send("POST", pods, b" " * (4 * 1024 * 1024), "application/json")
    assert code == 413 and st["reason"] == "RequestEntityTooLarge"
    code, st = send("PATCH", f"{pods}/monospaced-test", b"<x/>", "application/xml")
    assert code == 415 and st["reason"] == "UnsupportedMediaType"
    code, st = send("PATCH", f"{pods}/monospaced-test", b'[{"op": "remove", "path": "/x"}]',
                    "application/json-patch+json")
    assert code == 400 and "not found" in st["message"]
    code, st = send("PATCH", f"{pods}/monospaced-test", b'{"spec": {"containers": [1]}}',
                    "application/strategic-merge-patch+json")
    assert code == 400 and "merge key" in st["message"]
    no_tracebacks(cluster)
