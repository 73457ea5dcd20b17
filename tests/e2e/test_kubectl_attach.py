"""Real kubectl runs one-off pods and attaches to containers (issue 14): `kubectl run -i --rm`
with restartPolicy Never (the container's output, its exit code as kubectl's, the pod deleted),
the classic DNS debug pod with a tty, `kubectl run` of a plain pod, `kubectl attach -it` to a
shell held by the supervisor (emunet.cluster.stdio), and `emunet get pods` showing Completed and
Error for pods that ran to completion.

kubectl -t needs a terminal: those runs get a pty (the `pty` module) as their stdin/stdout.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time

import pytest

from tests.e2e.cluster import Cluster
from tests.e2e.test_kubectl import kubectl_bin, make_kubectl
from tests.waiting import wait_for

NS = "att"
CONFIG = f"""\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {{name: attach}}
spec:
  nodes: [{{name: node-1}}, {{name: node-2}}]
---
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
# a shell on a tty that `kubectl attach -it` joins
apiVersion: v1
kind: Pod
metadata: {{name: shell, namespace: {NS}}}
spec:
  containers:
    - name: sh
      image: busybox
      command: [sh]
      stdin: true
      tty: true
---
# what the DNS debug pod looks up (TODO for the lead: kubernetes.default once it resolves)
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: default, labels: {{app: web}}}}
spec:
  containers:
    - name: web
      image: nginx
      ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    return module_clusters(None, "ema", text=CONFIG)


@pytest.fixture(scope="module")
def kubectl(cluster, tmp_path_factory):
    return make_kubectl(cluster, tmp_path_factory.mktemp("home"), default_timeout=60)


def on_pty(kubectl, *args: str, send: list[tuple[bytes, bytes]] = (), timeout: float = 60,
           binary: str | None = None) -> tuple[int, str]:
    """kubectl with a pty as its terminal: for each (wait_for, data) in `send`, once the
    output holds `wait_for`, type `data`; the exit code and everything it printed."""
    master, slave = pty.openpty()
    p = subprocess.Popen([binary or kubectl_bin(), *args], stdin=slave, stdout=slave,
                         stderr=slave, env=kubectl.env, start_new_session=True)
    os.close(slave)
    out, todo, deadline = b"", list(send), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if todo and todo[0][0] in out:
                os.write(master, todo.pop(0)[1])
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: kubectl closed the terminal (it exited)
                    break
                if not chunk:
                    break
                out += chunk
            elif p.poll() is not None:
                break
        rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)
    return rc, out.decode(errors="replace")


def pod_gone(cluster: Cluster, ns: str, name: str) -> bool:
    return not any(p["metadata"]["name"] == name and p["metadata"]["namespace"] == ns
                   for p in cluster.get("pods"))


def test_run_i_rm_prints_the_output_and_returns_the_exit_code(cluster, kubectl):
    p = kubectl("run", "-i", "--rm", "t", "--image=busybox", "--restart=Never", "--",
                "sh", "-c", "echo hi; exit 3", check=False)
    assert p.returncode == 3, p.stdout + p.stderr
    # once: printed by the container's only run, read back from its logs (the pod was done
    # before kubectl saw it Running) or live through attach
    assert p.stdout.splitlines().count("hi") == 1, p.stdout
    assert 'pod "t" deleted' in p.stdout
    assert "pod default/t terminated (Error)" in p.stderr
    wait_for(lambda: pod_gone(cluster, "default", "t"), 10, "the --rm pod deleted")


def test_run_i_feeds_stdin_through_attach(kubectl):
    p = kubectl("run", "-i", "--rm", "cat", "--image=busybox", "--restart=Never", "--",
                "sh", "-c", "read line; echo got $line", input="hello\n", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "got hello" in p.stdout, p.stdout + p.stderr


def test_dns_debug_pod_with_a_tty(kubectl):
    rc, out = on_pty(kubectl, "run", "-it", "--rm", "dnsutils", "--image=busybox",
                     "--restart=Never", "--", "nslookup", "kubernetes.default")
    assert rc == 0, out  # the command verbatim: the API server's own Service
    assert "Name:\tkubernetes.default.svc.cluster.local" in out, out
    assert "Address: 10.43.0.1" in out, out
    assert 'pod "dnsutils" deleted' in out


def test_run_makes_a_plain_pod(cluster, kubectl):
    p = kubectl("run", "plain", "--image=nginx")
    assert p.stdout.strip() == "pod/plain created"
    kubectl("wait", "--for=condition=Ready", "pod/plain", "--timeout=30s")
    pod = next(x for x in cluster.get("pods") if x["metadata"]["name"] == "plain")
    assert pod["status"]["phase"] == "Running"


def test_attach_it_joins_the_shell(kubectl):
    rc, out = on_pty(kubectl, "attach", "-it", "-n", NS, "shell", "-c", "sh",
                     send=[(b"try pressing enter", b"echo $((6*7))\r"),
                           (b"42", b"tty; exit 5\r")])
    assert "42" in out and "/dev/pts/" in out, out
    assert rc == 0, out  # attach reports no exit code; the session ended with the shell


def test_completed_pods_show_completed_and_error(cluster, kubectl):
    kubectl("run", "ok", "--image=busybox", "--restart=Never", "--", "true")
    kubectl("run", "bad", "--image=busybox", "--restart=Never", "--", "sh", "-c", "exit 7")

    def statuses() -> dict[str, str]:
        rows = cluster.emunet("get", "pods", "-n", "default").stdout.splitlines()[1:]
        return {r.split()[0]: r.split()[2] for r in rows}
    wait_for(lambda: statuses().get("ok") == "Completed" and statuses().get("bad") == "Error",
             15, "Completed and Error in emunet get pods")
    out = kubectl("get", "pods").stdout
    assert any(r.split()[:3] == ["ok", "0/1", "Completed"] for r in out.splitlines()), out
    assert any(r.split()[:3] == ["bad", "0/1", "Error"] for r in out.splitlines()), out
    bad = kubectl("get", "pod", "bad", "-o",
                  "jsonpath={.status.phase} {.status.containerStatuses[0].state.terminated."
                  "exitCode}").stdout
    assert bad == "Failed 7"
