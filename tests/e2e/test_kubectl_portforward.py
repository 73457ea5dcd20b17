"""Real `kubectl port-forward` against a real cluster's API server, then real curl (and a socket
for a large echo) on the host's loopback: the bytes reach the pod's own port through SPDY
(inside WebSocket for kubectl 1.31+, on the upgraded connection for older ones)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import ROOT, Cluster
from tests.e2e.test_kubectl import BUNDLED, NS, kubectl_bin, make_kubectl
from tests.waiting import Output

POD = "monospaced-test"


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    return module_clusters(ROOT / "configs" / "two-node.yaml", "epf")


@pytest.fixture(scope="module")
def kubectl(cluster, tmp_path_factory):
    return make_kubectl(cluster, tmp_path_factory.mktemp("home"))


@contextlib.contextmanager
def forwarding(kubectl, target: str, remote: int, binary: str | None = None
               ) -> Iterator[tuple[int, subprocess.Popen, Output]]:
    """`kubectl port-forward -n NS TARGET :REMOTE` (kubectl picks a free local port, which it
    prints): yields that port, the process and its stderr."""
    cmd = [binary or kubectl_bin(), "port-forward", "-n", NS, target, f":{remote}"]
    p = subprocess.Popen(cmd, env=kubectl.env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    out, err = Output(p.stdout), Output(p.stderr)
    try:
        text = out.wait(" -> ", 20, f"{' '.join(cmd[1:])} to listen")
        m = re.search(r"Forwarding from 127\.0\.0\.1:(\d+) -> ", text)
        assert m, text
        yield int(m.group(1)), p, err
    finally:
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        for pipe in (p.stdout, p.stderr):
            assert pipe is not None
            pipe.close()


def curl(port: int, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "-m", "10", f"http://127.0.0.1:{port}{path}"],
                          capture_output=True, text=True, timeout=15)


def test_svc_forward_answers_two_curls_from_the_pod(kubectl):
    with forwarding(kubectl, "svc/monospaced", 80) as (port, _, _):
        for path in ("/first", "/second"):  # two local connections: two stream pairs
            r = curl(port, path)
            assert r.returncode == 0, r.stderr
            assert r.stdout.startswith(f"Hello from {POD}\n")
            assert f"pod={POD} namespace={NS}" in r.stdout and f"path={path}" in r.stdout


def test_pod_forward_echoes_megabytes_byte_identical(kubectl):
    payload = os.urandom(4 * 1024 * 1024)  # far past the 64 KiB SPDY windows, both ways
    with forwarding(kubectl, f"pod/{POD}", 3000) as (port, _, _):
        got = bytearray()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            def read() -> None:
                while chunk := s.recv(65536):
                    got.extend(chunk)
            reader = threading.Thread(target=read)
            reader.start()
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)  # the built-in server echoes until this end closes
            reader.join(60)
        assert len(got) == len(payload) and bytes(got) == payload


def test_a_port_with_nothing_listening_is_kubectls_error(kubectl):
    with forwarding(kubectl, f"pod/{POD}", 81) as (port, p, err):
        r = curl(port, "/")
        assert r.returncode != 0  # the connection closes with no answer
        err.wait("lost connection to pod", 10, "kubectl to give up")
        assert p.wait(10) != 0
    assert f"an error occurred forwarding {port} -> 81: error forwarding port 81 to pod" \
        in err.text
    assert "dial tcp4 127.0.0.1:81: connect: connection refused" in err.text


def test_bundled_kubectl_versions_forward_by_websocket_and_by_spdy(cluster, kubectl):
    # 1.30 speaks raw SPDY only (POST + Upgrade: SPDY/3.1); 1.31 tunnels SPDY in WebSocket
    ran = []
    for minor in (30, 31):
        binary = BUNDLED / f"kubectl.1.{minor}"
        if not binary.exists():
            continue
        with forwarding(kubectl, f"pod/{POD}", 3000, binary=str(binary)) as (port, _, _):
            r = curl(port, f"/v{minor}")
            assert r.returncode == 0 and f"path=/v{minor}" in r.stdout, r.stderr
        ran.append(minor)
    if not ran:
        pytest.skip(f"no bundled kubectl 1.30/1.31 in {BUNDLED}")
    log = (cluster.run_dir / "logs" / "apiserver.log").read_text()
    if 30 in ran:
        assert "SPDY/3.1 on the upgraded connection" in log
    assert "SPDY/3.1 over WebSocket" in log


PY_FORWARD = """
import sys
from kubernetes import client, config
from kubernetes.stream import portforward
config.load_kube_config()
v1 = client.CoreV1Api()
pf = portforward(v1.connect_get_namespaced_pod_portforward, sys.argv[1], sys.argv[2],
                 ports=sys.argv[3])
port = int(sys.argv[3])
s = pf.socket(port)
s.settimeout(10)
got = b""
try:
    s.sendall(b"GET /py HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
    while chunk := s.recv(65536):
        got += chunk
except OSError as e:  # the client closes its end when the error channel speaks
    print("closed:", e)
s.close()
print(got.decode(errors="replace"))
print("ERROR:", pf.error(port))
"""


def test_the_python_clients_own_port_forward(kubectl):
    """`kubernetes.stream.portforward`: the WebSocket channel protocol (v4.channel.k8s.io),
    not kubectl's SPDY: the request reaches the pod's port and its answer comes back whole;
    a port nobody listens on is said on the port's error channel."""
    p = subprocess.run([sys.executable, "-c", PY_FORWARD, POD, NS, "3000"], env=kubectl.env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "HTTP/1.1 200 OK" in p.stdout and "path=/py" in p.stdout, p.stdout
    p = subprocess.run([sys.executable, "-c", PY_FORWARD, POD, NS, "81"], env=kubectl.env,
                       capture_output=True, text=True, timeout=60)
    assert "connection refused" in p.stdout, p.stdout + p.stderr


def test_deleting_the_pod_ends_the_forward(kubectl):
    # last in this module: the pod is gone afterwards
    with forwarding(kubectl, f"pod/{POD}", 3000) as (port, p, err):
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(b"ping")
            assert s.recv(10) == b"ping"
            kubectl("delete", "pod", "-n", NS, POD, "--wait=false")
            err.wait("lost connection to pod", 20, "kubectl to see the pod go")
            assert s.recv(10) == b""  # the local connection ends too
        assert p.wait(10) != 0


def test_the_api_server_log_has_no_traceback(cluster):
    log: Path = cluster.run_dir / "logs" / "apiserver.log"
    text = log.read_text()
    assert "port-forward" in text and "Traceback" not in text and " ERROR " not in text
