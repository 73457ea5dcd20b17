"""Real kubectl (and the official Python client) against a real cluster's API server.

`emunet up` writes the kubeconfig; every kubectl runs with it and a fresh HOME (kubectl caches
discovery there). The kubectl is the machine's (on CI the google-cloud-cli dispatcher, which
runs the build matching the server's minor) or the one `scripts/setup --test` puts in the
venv (1.35), or $EMUNET_TEST_KUBECTL; the bundled kubectl.1.3x builds, where present, each run
an exec too.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.cluster import ROOT, Cluster

NS = "blog-website"
BUNDLED = Path("/usr/lib/google-cloud-sdk/bin")  # the dispatcher's per-minor builds


def kubectl_bin() -> str:
    """$EMUNET_TEST_KUBECTL, else the machine's kubectl, else the venv's (scripts/setup)."""
    found = (os.environ.get("EMUNET_TEST_KUBECTL") or shutil.which("kubectl")
             or str(Path(sys.executable).parent / "kubectl"))
    if not os.access(found, os.X_OK):
        pytest.fail("no kubectl on PATH or in the venv: run `sudo scripts/setup --test`")
    return found


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    return module_clusters(ROOT / "configs" / "two-node.yaml", "emk")


def make_kubectl(cluster: Cluster, home: Path, default_timeout: float = 30):
    """`run(*args)`: the real kubectl against `cluster`, with `home` as HOME (a discovery cache
    of its own, so a changed resource list is always seen)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(home),
           "KUBECONFIG": str(cluster.run_dir / "kubeconfig")}
    binary = kubectl_bin()

    def run(*args: str, check: bool = True, timeout: float = default_timeout,
            binary: str = binary, input: str | None = None) -> subprocess.CompletedProcess:
        p = subprocess.run([binary, *args], env=env, capture_output=True, text=True,
                           timeout=timeout, input=input)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {p.returncode}:\n"
                                 f"{p.stdout}\n{p.stderr}")
        return p
    run.env = env  # type: ignore[attr-defined]
    return run


@pytest.fixture
def kubectl(cluster, tmp_path):
    return make_kubectl(cluster, tmp_path)


def header(out: str) -> list[str]:
    return out.splitlines()[0].split()


def rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in out.splitlines()[1:]}


def test_kubeconfig_is_root_only_and_up_says_how_to_use_it(cluster):
    p = cluster.run_dir / "kubeconfig"
    assert p.stat().st_mode & 0o777 == 0o600
    assert "server: http://127.0.0.1:" in p.read_text()
    assert cluster.emunet("kubeconfig").stdout == p.read_text()


def test_version_and_cluster_info(kubectl):
    out = kubectl("version").stdout
    assert "Server Version: v1.32.0-emunet" in out
    info = kubectl("cluster-info").stdout
    assert "Kubernetes control plane is running at http://127.0.0.1:" in info
    assert "CoreDNS is running at" in info and "kube-dns:dns/proxy" in info


def test_get_nodes_wide(kubectl):
    out = kubectl("get", "nodes", "-o", "wide").stdout
    assert header(out)[:7] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP",
                               "EXTERNAL-IP"]
    r = rows(out)
    assert r["node-1"][1] == "Ready" and r["node-1"][5] == "192.168.1.11"
    assert r["node-2"][5] == "192.168.1.12"


def test_get_pods_all_namespaces_wide_match_the_state(cluster, kubectl):
    out = kubectl("get", "pods", "-A", "-o", "wide").stdout
    assert out.splitlines()[0].split() == [
        "NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED",
        "NODE", "READINESS", "GATES"]
    r = {line.split()[1]: line.split() for line in out.splitlines()[1:]}
    for item in cluster.get("pods"):
        row = r[item["metadata"]["name"]]
        assert row[0] == item["metadata"]["namespace"]
        assert row[2:4] == ["1/1", "Running"]
        assert row[6:8] == [item["status"]["podIP"], item["spec"]["nodeName"]]


def test_get_services_and_endpoints(cluster, kubectl):
    out = kubectl("get", "svc,ep", "-n", NS).stdout
    assert "service/monospaced   ClusterIP   10.43.0.11   <none>        80/TCP" in out
    backend = cluster.pod(NS, "monospaced-test")["status"]["podIP"]
    assert f"endpoints/monospaced   {backend}:3000" in out
    out = kubectl("get", "svc", "-A", "-o", "wide").stdout
    assert header(out)[-1] == "SELECTOR"
    assert any(line.split()[:4] == ["default", "kubernetes", "ClusterIP", "10.43.0.1"]
               and "443/TCP" in line for line in out.splitlines())


def test_get_all_and_policies(kubectl):
    out = kubectl("get", "all", "-n", NS).stdout
    assert "pod/monospaced-test" in out and "service/monospaced" in out
    out = kubectl("get", "netpol", "-A").stdout
    assert header(out) == ["NAMESPACE", "NAME", "POD-SELECTOR", "AGE"]
    assert "monospaced-access" in out
    assert kubectl("get", "cnp", "-A").returncode == 0
    names = [line.split()[0] for line in kubectl("api-resources").stdout.splitlines()[1:]]
    assert {"pods", "services", "deployments", "networkpolicies",
            "ciliumnetworkpolicies"} <= set(names)


def test_json_output_and_not_found(kubectl):
    pod = json.loads(kubectl("get", "pod", "-n", NS, "monospaced-test", "-o", "json").stdout)
    assert pod["metadata"]["uid"] and pod["status"]["phase"] == "Running"
    p = kubectl("get", "pod", "-n", NS, "nope", check=False)
    assert p.returncode == 1
    assert 'Error from server (NotFound): pods "nope" not found' in p.stderr


def test_describe_pod_shows_its_events(kubectl):
    out = kubectl("describe", "pod", "-n", NS, "monospaced-test").stdout
    assert "Node:             node-2/192.168.1.12" in out
    assert "Events:" in out and "Scheduled" in out and "default-scheduler" in out


def test_the_storys_exec_verbatim(kubectl):
    p = kubectl("exec", "-n", NS, "frontend-client", "--", "nslookup", "monospaced")
    assert "Name:\tmonospaced.blog-website.svc.cluster.local" in p.stdout
    assert "Address: 10.43.0.11" in p.stdout


def test_exec_exit_code_and_streams(kubectl):
    p = kubectl("exec", "-n", NS, "frontend-client", "--", "sh", "-c",
                "echo out; echo err >&2; exit 3", check=False)
    assert p.returncode == 3
    assert p.stdout == "out\n"
    assert "err\n" in p.stderr and "command terminated with exit code 3" in p.stderr
    p = kubectl("exec", "-i", "-n", NS, "frontend-client", "--", "tr", "a-z", "A-Z",
                input="hello\n")
    assert p.stdout == "HELLO\n"
    assert kubectl("exec", "-n", NS, "frontend-client", "--", "id", "-u").stdout == "65534\n"


def test_exec_tty_with_resize(kubectl):
    cmd = (f"stty cols 100 rows 30; {kubectl_bin()} exec -it -n {NS} frontend-client -- "
           "sh -c 'tty; stty size; exit 4'")
    p = subprocess.run(["script", "-qec", cmd, "/dev/null"], env=kubectl.env,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 4, p.stdout + p.stderr
    assert "/dev/pts/" in p.stdout and "30 100" in p.stdout


def test_bundled_kubectl_versions_exec(kubectl):
    ran = 0
    for minor in (30, 31, 32, 33):
        binary = BUNDLED / f"kubectl.1.{minor}"
        if binary.exists():
            p = kubectl("exec", "-n", NS, "frontend-client", "--", "sh", "-c", "exit 7",
                        binary=str(binary), check=False)
            assert p.returncode == 7, (minor, p.stderr)
            ran += 1
    assert ran or not BUNDLED.exists()


def test_logs_tail(kubectl):
    kubectl("exec", "-n", NS, "frontend-client", "--", "curl", "-s", "http://monospaced")
    out = kubectl("logs", "-n", NS, "monospaced-test", "--tail=1").stdout
    assert out.count("\n") == 1 and '"GET / HTTP/1.1" 200' in out


def test_python_client_lists_and_execs(cluster, kubectl):
    code = ("from kubernetes import client, config; from kubernetes.stream import stream; "
            "config.load_kube_config(); v1 = client.CoreV1Api(); "
            "print(sorted(p.metadata.name for p in v1.list_pod_for_all_namespaces().items)); "
            "print(stream(v1.connect_get_namespaced_pod_exec, 'frontend-client', "
            "'blog-website', command=['echo', 'py'], stderr=True, stdin=False, stdout=True, "
            "tty=False), end='')")
    p = subprocess.run([sys.executable, "-c", code], env=kubectl.env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    listed, out = p.stdout.splitlines()
    assert "'monospaced-test'" in listed and out == "py"


def test_watch_sees_a_deletion(cluster, kubectl):
    w = subprocess.Popen([kubectl_bin(), "get", "pods", "-n", NS, "-w"], env=kubectl.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        cluster.emunet("delete", "pod", "intruder", "-n", NS)
        time.sleep(3)
    finally:
        w.terminate()
    out = w.communicate(timeout=10)[0]
    lines = [line.split() for line in out.splitlines()]
    assert lines[0][:3] == ["NAME", "READY", "STATUS"]
    assert any(line[0] == "intruder" and line[2] == "Terminating" for line in lines[4:]), out


def test_api_server_listens_on_loopback_only(cluster):
    port = int((cluster.run_dir / "kubeconfig").read_text().split("127.0.0.1:")[1].split()[0])
    out = subprocess.run(["ss", "-Htln", f"sport = :{port}"], capture_output=True,
                         text=True).stdout
    assert out.split() and all(line.split()[3] == f"127.0.0.1:{port}"
                               for line in out.splitlines())
    p = subprocess.run([sys.executable, "-m", "emunet.api", "--state", "/nonexistent",
                        "--port", "0", "--host", "0.0.0.0"], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 2 and "loopback" in p.stderr


def test_up_with_the_api_port_taken_is_a_clear_error(clusters):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        c = clusters(ROOT / "configs" / "two-node.yaml", "emq", up=False)
        c.env["EMUNET_API_PORT"] = str(port)
        p = c.emunet("up", c.config, check=False)
        c.is_down = True  # nothing was built: nothing to take down
    assert p.returncode == 1
    assert f"127.0.0.1:{port} is taken" in p.stderr and "spec.apiServer.port" in p.stderr
    assert not c.netns() and not (c.run_dir / "manifest.json").exists()
