"""Bad input through the real CLI: exit 2, one located message, no traceback, nothing created.

`up` gets every file of the broken-config corpus (tests/configs/bad; `validate` gets them in
tests/unit/test_badconfigs.py); `apply -f` and `delete` get broken manifests while a cluster
runs, and the cluster must not change.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.badconfigs import BAD, one_located_error
from tests.e2e.cluster import ROOT, Cluster

CONFIG = ROOT / "tests" / "e2e" / "configs" / "robust.yaml"


def _run(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emunet", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def _processes_with(prefix: str) -> list[int]:
    """Pids whose environment carries EMUNET_PREFIX=prefix: whatever a run of ours started."""
    needle = f"EMUNET_PREFIX={prefix}\0".encode()
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                if needle in Path(f"/proc/{d}/environ").read_bytes():
                    out.append(int(d))
            except OSError:
                pass
    return out


def test_up_rejects_every_bad_config_and_creates_nothing(tmp_path, unique_prefix):
    prefix = unique_prefix("emb")
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EMUNET_RUN_DIR": str(run_dir),
           "EMUNET_PREFIX": prefix}
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda f: (f, _run(env, "up", str(f))), BAD))
    wrong = {f.name: why for f, p in results if (why := one_located_error(p, f))}
    assert not wrong
    assert not [n for n in os.listdir("/run/netns") if n.startswith(prefix + "-")]
    assert not list(Path("/etc/netns").glob(prefix + "-*"))
    assert not run_dir.exists()
    assert not _processes_with(prefix)


# ---- runtime input: a running cluster rejects bad manifests whole ----------------------------

BAD_MANIFESTS = {
    "yaml-syntax": "apiVersion: v1\nkind: Pod\nmetadata: {name: [x\n",
    "cluster-doc": "apiVersion: emunet/v1alpha1\nkind: Cluster\nmetadata: {name: x}\n"
                   "spec: {nodes: [{name: n1}]}\n",
    "unknown-kind": "apiVersion: v1\nkind: Serivce\nmetadata: {name: x, namespace: rb}\n",
    "bad-label": "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  namespace: rb\n  labels:"
                 " {app: 'a b'}\nspec:\n  containers: [{name: c, image: busybox}]\n",
    "port-range": "apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: rb}\nspec:\n"
                  "  selector: {app: echo}\n  ports: [{port: 70000}]\n",
    "unknown-node": "apiVersion: v1\nkind: Pod\nmetadata: {name: x, namespace: rb}\nspec:\n"
                    "  nodeName: node-9\n  containers: [{name: c, image: busybox}]\n",
}
# Found only against the running state (in the supervisor), so they test the control
# protocol's error kind: a namespace that does not exist, a changed pod spec, a taken
# clusterIP; each file starts with valid objects that must not be created either.
_GOOD = ("apiVersion: v1\nkind: Namespace\nmetadata: {name: rb-new}\n---\n"
         "apiVersion: v1\nkind: Pod\nmetadata: {name: fresh, namespace: rb}\nspec:\n"
         "  containers: [{name: c, image: busybox, ports: [{containerPort: 80}]}]\n---\n")
RUNTIME_BAD = {
    "missing-namespace": _GOOD + "apiVersion: v1\nkind: Pod\nmetadata: {name: y, namespace: "
                                 "nope}\nspec:\n  containers: [{name: c, image: busybox}]\n",
    "pod-spec-change": _GOOD + "apiVersion: v1\nkind: Pod\nmetadata: {name: server, namespace:"
                               " rb, labels: {app: echo}}\nspec:\n  nodeName: node-2\n"
                               "  containers: [{name: echo, image: other, ports: "
                               "[{containerPort: 7000, name: echo}]}]\n",
    "clusterip-taken": _GOOD + "apiVersion: v1\nkind: Service\nmetadata: {name: other, "
                               "namespace: rb}\nspec:\n  clusterIP: {ip}\n  selector: {{app: "
                               "echo}}\n  ports: [{{port: 1}}]\n",
}


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    return module_clusters(CONFIG, "ebi")


def _snapshot(c: Cluster) -> tuple:
    pods = sorted((p["metadata"]["namespace"], p["metadata"]["name"], p["status"]["podIP"])
                  for p in c.get("pods"))
    svcs = sorted((s["metadata"]["namespace"], s["metadata"]["name"], s["spec"]["clusterIP"])
                  for s in c.get("services"))
    return pods, svcs, sorted(c.netns())


@pytest.mark.parametrize("name", sorted(BAD_MANIFESTS) + sorted(RUNTIME_BAD))
def test_apply_of_a_bad_manifest_changes_nothing(cluster, tmp_path, name):
    text = BAD_MANIFESTS.get(name) or RUNTIME_BAD[name]
    if name == "clusterip-taken":
        ip = next(s["spec"]["clusterIP"] for s in cluster.get("services")
                  if s["metadata"]["name"] == "echo")
        text = text.replace("{ip}", ip).replace("{{", "{").replace("}}", "}")
    f = tmp_path / f"{name}.yaml"
    f.write_text(text)
    before = _snapshot(cluster)
    p = cluster.emunet("apply", "-f", str(f), check=False)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    errs = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(errs) == 1 and errs[0].startswith("emunet: "), errs
    if name in BAD_MANIFESTS:  # caught by the CLI before anything is sent: located
        assert re.match(rf"emunet: {re.escape(str(f))}:\d+: ", errs[0]), errs
    assert _snapshot(cluster) == before


def test_delete_of_something_missing_is_bad_input(cluster):
    before = _snapshot(cluster)
    p = cluster.emunet("delete", "pod", "nope", "-n", "rb", check=False)
    assert p.returncode == 2 and "not found" in p.stderr, p.stderr
    p = cluster.emunet("delete", "service", "kube-dns", "-n", "kube-system", check=False)
    assert p.returncode == 2 and "cannot be deleted" in p.stderr, p.stderr
    assert _snapshot(cluster) == before
