"""Pods are sandboxes, as on Kubernetes (emunet.host.sandbox): a pod's processes see only their own
PID namespace, cannot signal or ptrace another pod's, have the pod's name as hostname, a private
/proc and /tmp, and an image's PATH. The attack this prevents: a pod that no policy admits finds
another pod's process by the IP in its /proc/PID/net/fib_trie and kills it (or makes it act with
that pod's NetworkPolicy identity)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from emunet.config import load_config_text
from emunet.state.plan import plan
from tests.e2e.cluster import Cluster

CONFIG = """\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {name: sandbox}
spec:
  nodes: [{name: node-1}]
---
apiVersion: v1
kind: Namespace
metadata: {name: sb}
---
apiVersion: v1
kind: Pod
metadata: {name: victim, namespace: sb}
spec:
  containers:
    - {name: main, image: busybox, command: [sleep, infinity]}
---
apiVersion: v1
kind: Pod
metadata: {name: shared, namespace: sb}
spec:
  shareProcessNamespace: true
  containers:
    - {name: a, image: busybox, command: [sleep, infinity]}
    - {name: b, image: busybox, command: [sleep, "1000000"]}
---
apiVersion: v1
kind: Pod
metadata: {name: attacker, namespace: sb}
spec:
  containers:
    - name: main
      image: python
      # twice a second: kill every process whose /proc/PID/net/fib_trie holds the victim's IP
      command: [python3, -c]
      args:
        - |
          import os, signal, time
          while True:
              ip = os.environ["VICTIM_IP"]
              for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
                  try:
                      trie = open(f"/proc/{pid}/net/fib_trie").read()
                  except OSError:
                      continue
                  if os.environ["OWN_IP"] in trie:
                      print("found itself", pid, flush=True)  # the scan works
                  if ip in trie:
                      try:
                          os.kill(int(pid), signal.SIGKILL)
                          print("killed", pid, flush=True)
                      except OSError as e:
                          print("cannot kill", pid, e, flush=True)
              print("scanned", flush=True)
              time.sleep(0.5)
      env: [{name: VICTIM_IP, value: "VICTIM_IP_VALUE"}, {name: OWN_IP, value: "OWN_IP_VALUE"}]
---
apiVersion: v1
kind: Pod
metadata: {name: builtin, namespace: sb}
spec:
  containers:
    - name: web
      image: nginx
      ports: [{containerPort: 8080}]
"""


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    # IPAM is deterministic: the victim's IP is known before `up` (the attacker's pod has no
    # file of the host's to read it from)
    st = plan(load_config_text(CONFIG, "sandbox.yaml"))
    ips = {name: st.pods[("sb", name)].ip for name in ("victim", "attacker")}
    return module_clusters(None, "emsb", text=CONFIG.replace(
        "VICTIM_IP_VALUE", ips["victim"]).replace("OWN_IP_VALUE", ips["attacker"]))


def test_hostname_is_the_pods_name(cluster):
    assert cluster.exec("sb", "victim", "hostname").stdout.strip() == "victim"
    assert cluster.exec("sb", "builtin", "hostname").stdout.strip() == "builtin"


def test_a_pod_sees_only_its_own_processes(cluster):
    ps = cluster.exec("sb", "victim", "ps", "-e", "-o", "pid=,args=").stdout
    cmds = [line.split(None, 1)[1] for line in ps.splitlines() if line.strip()]
    assert "sleep infinity" in cmds, ps
    assert not any("python3" in c or "emunet" in c or "catatonit" in c for c in cmds), ps
    pids = cluster.exec("sb", "victim", "sh", "-c", "ls /proc | grep -c '^[0-9]'").stdout
    assert int(pids) <= 4, pids  # sleep, the exec'd sh, ls, grep


def test_share_process_namespace_shows_the_pods_other_containers(cluster):
    ps = cluster.exec("sb", "shared", "ps", "-e", "-o", "pid=,args=").stdout
    assert "sleep infinity" in ps and "sleep 1000000" in ps and "catatonit" in ps, ps
    # PID 1 is the pod's pause, as with a Kubernetes pause container
    assert any(line.split()[0] == "1" and "catatonit" in line for line in ps.splitlines()), ps


def test_tmp_is_the_pods_own(cluster):
    cluster.exec("sb", "victim", "sh", "-c", "echo mine > /tmp/emunet-sandbox-test")
    assert cluster.exec("sb", "victim", "cat", "/tmp/emunet-sandbox-test").stdout == "mine\n"
    other = cluster.exec("sb", "builtin", "cat", "/tmp/emunet-sandbox-test", check=False)
    assert other.returncode != 0
    assert not Path("/tmp/emunet-sandbox-test").exists()  # the write stayed in the pod's layer


def test_containers_get_an_images_path(cluster):
    env = cluster.exec("sb", "victim", "cat", "/proc/1/environ").stdout
    assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in env.split("\0")
    assert "HOSTNAME=victim" in env.split("\0")


def test_another_pods_process_cannot_be_found_or_killed(cluster):
    victim = next(p for p in cluster.get("pods") if p["metadata"]["name"] == "victim")
    before = victim["status"]["containerStatuses"][0]["restartCount"] \
        if "containerStatuses" in victim["status"] else 0
    log = cluster.run_dir / "logs" / "sb_attacker_main.log"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and log.read_text().count("scanned") < 3:
        time.sleep(0.2)
    text = log.read_text()
    assert text.count("scanned") >= 3, text  # the attacker ran its scan several times
    assert "found itself" in text, text  # and it does find a process by its IP
    assert "killed" not in text and "cannot kill" not in text, text  # nothing of the victim seen
    still = cluster.exec("sb", "victim", "ps", "-e", "-o", "args=").stdout
    assert "sleep infinity" in still
    after = next(p for p in cluster.get("pods") if p["metadata"]["name"] == "victim")
    assert json.dumps(after["status"]).count("Running") or after["status"]["phase"] == "Running"
    if "containerStatuses" in after["status"]:
        assert after["status"]["containerStatuses"][0]["restartCount"] == before
