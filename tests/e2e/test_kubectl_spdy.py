"""kubectl <= 1.29 execs and attaches over SPDY/3.1 (it has no WebSocket exec): the story's
nslookup, exit codes, piped stdin, a tty with its size, and `kubectl run -i`/`-it` (attach), with
the google-cloud-sdk's bundled kubectl.1.27..1.29 builds (skipped where they are absent), and
kubectl 1.30+ with its WebSocket feature gate off (the path its fallback takes). In the same
cluster (one `up` less), DeleteOptions with the machine's kubectl: `--grace-period=0 --force`
and `--cascade=orphan|foreground`.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.cluster import ROOT, Cluster
from tests.e2e.test_kubectl import BUNDLED, make_kubectl
from tests.e2e.test_kubectl_attach import on_pty, pod_gone
from tests.waiting import wait_for

NS = "blog-website"
OLD = [m for m in (27, 28, 29) if (BUNDLED / f"kubectl.1.{m}").exists()]
pytestmark = pytest.mark.skipif(not OLD, reason=f"no kubectl 1.27-1.29 in {BUNDLED}")
NEWEST_OLD = str(BUNDLED / f"kubectl.1.{OLD[-1]}") if OLD else ""
# Debian 12's kubernetes-client, unpacked by `scripts/setup --test` (not installed)
KUBECTL_120 = ROOT / ".venv" / "kubectl-1.20" / "kubectl"


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    return module_clusters(ROOT / "configs" / "two-node.yaml", "ems")


@pytest.fixture(scope="module")
def kubectl(cluster, tmp_path_factory):
    return make_kubectl(cluster, tmp_path_factory.mktemp("home"), default_timeout=60)


def test_the_storys_nslookup_with_each_old_kubectl(kubectl):
    for minor in OLD:
        p = kubectl("exec", "-n", NS, "frontend-client", "--", "nslookup", "monospaced",
                    binary=str(BUNDLED / f"kubectl.1.{minor}"))
        assert "Name:\tmonospaced.blog-website.svc.cluster.local" in p.stdout, (minor, p)
        assert "Address: 10.43.0.11" in p.stdout


@pytest.mark.skipif(not KUBECTL_120.exists(), reason="no kubernetes-client package here "
                    "(Debian 12 has it; scripts/setup --test unpacks it)")
def test_debians_kubectl_1_20_gets_execs_forwards_and_runs(kubectl, tmp_path):
    """The oldest kubectl a learner meets (Debian 12's): get, SPDY exec with its exit code,
    port-forward through a Service, `run -i --rm`. Its `apply` wants protobuf OpenAPI v2,
    which emunet does not serve: `--validate=false` (tested) is the way round."""
    k = str(KUBECTL_120)
    assert "v1.20" in kubectl("version", "--client", binary=k).stdout
    pods = kubectl("get", "pods", "-n", NS, "-o", "wide", binary=k).stdout.splitlines()
    assert pods[0].split()[:3] == ["NAME", "READY", "STATUS"]
    assert any(row.split()[0] == "frontend-client" and row.split()[2] == "Running"
               for row in pods[1:])
    p = kubectl("exec", "-n", NS, "frontend-client", "--", "nslookup", "monospaced", binary=k)
    assert "Address: 10.43.0.11" in p.stdout
    p = kubectl("exec", "-n", NS, "frontend-client", "--", "sh", "-c", "exit 3", binary=k,
                check=False)
    assert p.returncode == 3 and "command terminated with exit code 3" in p.stderr
    pf = subprocess.Popen([k, "port-forward", "-n", NS, "svc/monospaced", ":80"],
                          env=kubectl.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    try:
        line = pf.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 3000"
        port = int(line.split("127.0.0.1:")[1].split()[0])
        body = subprocess.run(["curl", "-s", "-m", "5", f"http://127.0.0.1:{port}/"],
                              capture_output=True, text=True, timeout=10).stdout
        assert body.startswith("Hello from monospaced-test"), (line, body)
    finally:
        pf.terminate()
        pf.wait(timeout=10)
    p = kubectl("run", "-i", "--rm", "old120", "--image=busybox", "--restart=Never", "--",
                "sh", "-c", "echo hi; exit 3", binary=k, check=False)
    assert p.returncode == 3 and p.stdout.startswith("hi\n"), p.stdout + p.stderr
    f = tmp_path / "ns.yaml"
    f.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: old120}\n")
    assert kubectl("apply", "--validate=false", "-f", str(f), binary=k).stdout.strip() == \
        "namespace/old120 created"
    kubectl("delete", "-f", str(f), binary=k)


def test_exit_code_and_both_streams(kubectl):
    p = kubectl("exec", "-n", NS, "frontend-client", "--", "sh", "-c",
                "echo out; echo err >&2; exit 3", binary=NEWEST_OLD, check=False)
    assert p.returncode == 3, p.stderr
    assert p.stdout == "out\n"
    assert "err\n" in p.stderr and "command terminated with exit code 3" in p.stderr


def test_piped_stdin_reaches_the_command_and_ends_it(kubectl):
    data = "".join(f"line {i}\n" for i in range(2000))  # ~20 KB, several DATA frames
    p = kubectl("exec", "-i", "-n", NS, "frontend-client", "--", "cat", input=data,
                binary=NEWEST_OLD)
    assert p.stdout == data


def test_tty_has_the_terminals_size(kubectl):
    cmd = (f"stty cols 100 rows 30; {NEWEST_OLD} exec -it -n {NS} frontend-client -- "
           "sh -c 'tty; stty size; exit 4'")
    p = subprocess.run(["script", "-qec", cmd, "/dev/null"], env=kubectl.env,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 4, p.stdout + p.stderr
    assert "/dev/pts/" in p.stdout and "30 100" in p.stdout


def test_run_i_rm_attaches_with_stdin(cluster, kubectl):
    p = kubectl("run", "-i", "--rm", "old-cat", "--image=busybox", "--restart=Never", "--",
                "sh", "-c", "read line; echo got $line; exit 3", input="hello\n",
                binary=NEWEST_OLD, check=False)
    assert p.returncode == 3, p.stdout + p.stderr
    assert "got hello" in p.stdout, p.stdout + p.stderr
    wait_for(lambda: pod_gone(cluster, "default", "old-cat"), 10, "the --rm pod deleted")


def test_run_it_attaches_a_shell_on_a_tty(kubectl):
    rc, out = on_pty(kubectl, "run", "-it", "--rm", "old-sh", "--image=busybox",
                     "--restart=Never", "--", "sh",
                     send=[(b"try pressing enter", b"echo $((6*7))\r"),
                           (b"42", b"tty; exit 5\r")], binary=NEWEST_OLD)
    assert "42" in out and "/dev/pts/" in out, out
    assert rc == 5, out  # kubectl run reads the exit code from the pod's status


def spdy_execs(cluster: Cluster) -> int:
    text = (cluster.run_dir / "logs" / "apiserver.log").read_text()
    return text.count("exec blog-website/frontend-client: SPDY/3.1 (v4.channel.k8s.io)")


def test_newer_kubectl_without_websockets_takes_the_same_spdy_path(cluster, kubectl):
    # kubectl >= 1.30 falls back to SPDY when the WebSocket upgrade fails; its feature gate
    # KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false makes it go there directly (it then offers v5
    # first, which over SPDY is v4)
    newer = [m for m in (30, 31, 32, 33) if (BUNDLED / f"kubectl.1.{m}").exists()]
    if not newer:
        pytest.skip(f"no kubectl 1.30-1.33 in {BUNDLED}")
    env = {**kubectl.env, "KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
    before = spdy_execs(cluster)
    for minor in newer:
        p = subprocess.run([str(BUNDLED / f"kubectl.1.{minor}"), "exec", "-i", "-n", NS,
                            "frontend-client", "--", "sh", "-c", "tr a-z A-Z; exit 6"],
                           env=env, input="spdy\n", capture_output=True, text=True,
                           timeout=60)
        assert (p.returncode, p.stdout) == (6, "SPDY\n"), (minor, p.stderr)
    wait_for(lambda: spdy_execs(cluster) == before + len(newer), 5, "the SPDY execs logged")


WEB = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: NAME, namespace: blog-website}
spec:
  replicas: 2
  selector: {matchLabels: {app: NAME}}
  template:
    metadata: {labels: {app: NAME}}
    spec:
      containers: [{name: web, image: busybox, command: [sleep, infinity]}]
"""


def pods_of(kubectl, app: str) -> list[str]:
    out = kubectl("get", "pods", "-n", NS, "-l", f"app={app}", "-o", "name").stdout
    return sorted(out.split())


def test_delete_with_grace_period_zero_force_is_immediate(cluster, kubectl):
    # intruder's `sleep infinity` is PID 1 of its PID namespace: it ignores SIGTERM, so
    # emunet's own termination takes GRACE + TERM_WAIT (3 s); a force delete kills at once
    t0 = time.monotonic()
    p = kubectl("delete", "pod", "-n", NS, "intruder", "--grace-period=0", "--force")
    took = time.monotonic() - t0
    assert 'pod "intruder" force deleted' in p.stdout, p.stdout + p.stderr
    assert took < 2.0, took
    wait_for(lambda: not any(x["metadata"]["name"] == "intruder" for x in cluster.get("pods")),
             1.5, "the pod gone from the state")


def test_delete_deployment_orphan_keeps_its_pods_and_foreground_takes_them_first(kubectl):
    for name in ("orph", "fore"):
        kubectl("apply", "-f", "-", input=WEB.replace("NAME", name))
        kubectl("rollout", "status", f"deploy/{name}", "-n", NS, "--timeout=60s")
    kept = pods_of(kubectl, "orph")
    assert len(kept) == 2
    p = kubectl("delete", "deploy", "orph", "-n", NS, "--cascade=orphan")
    assert 'deployment.apps "orph" deleted' in p.stdout
    assert kubectl("get", "deploy", "orph", "-n", NS, check=False).returncode == 1
    assert pods_of(kubectl, "orph") == kept  # still there, and nothing replaces them
    owners = kubectl("get", "pods", "-n", NS, "-l", "app=orph", "-o",
                     "jsonpath={.items[*].metadata.ownerReferences}").stdout
    assert owners.strip() == ""
    p = kubectl("delete", "deploy", "fore", "-n", NS, "--cascade=foreground")
    assert 'deployment.apps "fore" deleted' in p.stdout
    assert pods_of(kubectl, "fore") == []  # the answer came after the pods were gone
    assert kubectl("get", "deploy", "fore", "-n", NS, check=False).returncode == 1


def test_the_api_server_spoke_spdy_and_logged_no_traceback(cluster):
    log: Path = cluster.run_dir / "logs" / "apiserver.log"
    text = log.read_text()
    assert "exec blog-website/frontend-client: SPDY/3.1 (v4.channel.k8s.io)" in text
    assert "attach default/old-cat: SPDY/3.1 (v4.channel.k8s.io)" in text
    assert "Traceback" not in text and " ERROR " not in text
