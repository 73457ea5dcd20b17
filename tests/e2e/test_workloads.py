"""A living cluster, end to end with the real CLI: Deployments scale, pods die and come back with
new IPs, rolling updates, probes, logs and events, while a client's requests never fail."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from tests.e2e.cluster import ROOT, Cluster
from tests.waiting import Output, wait_for

NS = "shop"

CLUSTER = """\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {name: living}
spec:
  nodes: [{name: node-1}, {name: node-2}]
---
"""

WEB = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: IMAGE
          ports:
            - {containerPort: 8080, name: http}
            - {containerPort: 9100, name: metrics}
          readinessProbe:
            httpGet: {path: /healthz, port: http}
            periodSeconds: 1
"""

OBJECTS = """\
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
    - {name: http, port: 80, targetPort: http}
    - {name: metrics, port: 9090, targetPort: metrics}
---
apiVersion: v1
kind: Service
metadata: {name: web-headless, namespace: shop}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: gated, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: gated}}
  template:
    metadata: {labels: {app: gated}}
    spec:
      securityContext: {runAsUser: 0}  # the exec probes' files sit in the test's private tmp
      containers:
        - name: app
          image: nginx
          ports: [{containerPort: 8080}]
          readinessProbe:
            exec: {command: [test, -e, GATE]}
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: gated, namespace: shop}
spec:
  selector: {app: gated}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: lively, namespace: shop}
spec:
  securityContext: {runAsUser: 0}
  nodeName: node-2
  containers:
    - name: main
      image: busybox
      command: [sleep, infinity]
      livenessProbe:
        exec: {command: [test, -e, ALIVE]}
        periodSeconds: 1
        failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {name: slowstart, namespace: shop}
spec:
  securityContext: {runAsUser: 0}
  nodeName: node-2
  containers:
    - name: main
      image: busybox
      command: [sleep, infinity]
      startupProbe:
        exec: {command: [test, -e, STARTED]}
        periodSeconds: 1
        failureThreshold: 600
      livenessProbe:  # fails until STARTED exists: it must not run before the startup probe passes
        exec: {command: [test, -e, STARTED]}
        periodSeconds: 1
        failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {name: neverstarts, namespace: shop}
spec:
  securityContext: {runAsUser: 0}
  nodeName: node-1
  containers:
    - name: main
      image: busybox
      command: [sleep, infinity]
      startupProbe:
        exec: {command: [test, -e, STARTED.never]}
        periodSeconds: 1
        failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata: {name: whoami, namespace: shop}
spec:
  nodeName: node-1
  securityContext: {runAsUser: 1234, runAsGroup: 1234}
  containers:
    - name: main
      image: busybox
      command: [sleep, infinity]
      readinessProbe:  # the kubelet runs exec probes in the container, as its user
        exec: {command: [sh, -c, 'test "$(id -u):$(id -g)" = 1234:1234']}
        periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop}
spec:
  nodeName: node-1
  containers:
    - name: client
      image: curlimages/curl
      command: [sleep, infinity]
"""


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    c = module_clusters(None, "emw", up=False)  # the probes' files sit in its scratch dir
    tmp = c.tmp
    (tmp / "alive").touch()
    config = tmp / "living.yaml"
    config.write_text(CLUSTER + WEB.replace("IMAGE", "nginx:1.27") + OBJECTS.replace(
        "GATE", str(tmp / "gate")).replace("ALIVE", str(tmp / "alive")).replace(
        "STARTED", str(tmp / "started")))
    c.config = str(config)
    c.up()
    return c


def pods(c: Cluster, prefix: str) -> dict[str, tuple[str, str]]:
    """Running (not terminating) pods of the shop namespace named prefix-*: name -> (ip, status)."""
    out = {}
    for line in c.emunet("get", "pods", "-n", NS).stdout.splitlines()[1:]:
        f = line.split()
        if f[0].startswith(prefix + "-") and f[2] != "Terminating":
            out[f[0]] = (f[4], f[1])
    return out


def ready_ips(c: Cluster, svc: str) -> set[str]:
    for item in c.get("endpoints"):
        if (item["metadata"]["namespace"], item["metadata"]["name"]) == (NS, svc):
            return {a["ip"] for s in item["subsets"] for a in s.get("addresses", [])}
    raise KeyError(svc)


def curl(c: Cluster, url: str, n: int = 1) -> list[str]:
    """n requests from the client pod; the pod name of each answer ('' for a failure)."""
    script = (f'for i in $(seq {n}); do curl -s -m 2 {url} | head -1 || true; echo; done')
    out = c.exec(NS, "client", "sh", "-c", script, check=False, timeout=60).stdout
    return [m.group(1) if (m := re.match(r"Hello from (\S+)", line)) else ""
            for line in out.split("\n") if line or False][:n]


class CurlLoop:
    """A client curling a Service in a loop (one request at a time) until told to stop."""

    def __init__(self, c: Cluster, url: str) -> None:
        self.stop = c.tmp / f"stop-{time.monotonic_ns()}"
        script = (f'while [ ! -e {self.stop} ]; do '
                  f'curl -s -m 2 -o /dev/null -w "%{{http_code}} " {url} || echo -n "ERR "; '
                  f'curl -s -m 2 {url} | head -1; done')
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "emunet", "exec", "-n", NS, "client", "--", "sh", "-c",
             script], env=c.env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        self.out = Output(self.proc.stdout)

    def lines(self) -> list[str]:
        """The loop's complete lines so far (one per round: status code, then the answer)."""
        self.out.read()
        return [line for line in self.out.text.splitlines(keepends=True)
                if line.endswith("\n") and line.strip()]

    def answers(self, n: int, timeout: float = 15) -> None:
        """Until the loop has done `n` more rounds from now."""
        have = len(self.lines())
        wait_for(lambda: len(self.lines()) >= have + n, timeout,
                 f"{n} more rounds of the client's curl loop")

    def finish(self) -> list[str]:
        self.answers(10)  # rounds that began after what the test waited for
        self.stop.touch()
        self.out.rest(30)
        self.proc.wait(10)
        return [line for line in self.out.text.splitlines() if line.strip()]


def test_deployment_pods_are_named_labelled_and_ready(cluster):
    (name,) = pods(cluster, "web")
    m = re.fullmatch(r"web-([456789bcdf]+)-([bcdfghjklmnpqrstvwxz2456789]{5})", name)
    assert m, name
    item = cluster.pod(NS, name)
    assert item["metadata"]["labels"] == {"app": "web", "pod-template-hash": m.group(1)}
    out = cluster.emunet("get", "deployments", "-n", NS).stdout
    assert re.search(r"web\s+1/1\s+1\s+1", out), out


def test_scale_1_5_2_endpoints_dns_and_spread(cluster):
    assert "deployment.apps/web scaled" in cluster.emunet(
        "scale", "deployment", "web", "--replicas", "5", "-n", NS).stdout
    wait_for(lambda: len(ready_ips(cluster, "web")) == 5, 15, "5 ready endpoints")
    five = pods(cluster, "web")
    assert len(five) == 5 and ready_ips(cluster, "web") == {ip for ip, _ in five.values()}
    nodes = {cluster.pod(NS, n)["spec"]["nodeName"] for n in five}
    assert nodes == {"node-1", "node-2"}  # spread
    dns = cluster.exec(NS, "client", "getent", "ahostsv4", "web-headless").stdout
    assert {line.split()[0] for line in dns.splitlines()} == ready_ips(cluster, "web")
    answers = curl(cluster, "http://web/", 60)
    assert set(answers) == set(five), answers  # every replica serves through the ClusterIP
    # a second port of the same Service, by its named targetPort
    assert curl(cluster, "http://web:9090/")[0] in five

    cluster.emunet("scale", "deployment/web", "--replicas", "2", "-n", NS)
    wait_for(lambda: len(ready_ips(cluster, "web")) == 2, 15, "2 endpoints")
    wait_for(lambda: len(pods(cluster, "web")) == 2, 15, "3 pods gone")
    dns = cluster.exec(NS, "client", "getent", "ahostsv4", "web-headless").stdout
    assert {line.split()[0] for line in dns.splitlines()} == ready_ips(cluster, "web")
    assert set(curl(cluster, "http://web/", 30)) == set(pods(cluster, "web"))


def test_deleted_pod_comes_back_with_a_new_ip_and_no_request_fails(cluster):
    before = pods(cluster, "web")
    victim = sorted(before)[0]
    loop = CurlLoop(cluster, "http://web.shop.svc.cluster.local/")
    loop.answers(10)  # the client is served steadily before the pod goes
    t0 = time.monotonic()
    assert f"pod/{victim} deleted" in cluster.emunet("delete", "pod", victim, "-n", NS).stdout
    after = wait_for(lambda: (p := pods(cluster, "web")) and len(
        ready_ips(cluster, "web")) == 2 and victim not in p and len(p) == 2 and p, 15,
        "a ready replacement")
    took = time.monotonic() - t0
    (new,) = set(after) - set(before)
    assert after[new][0] not in {ip for ip, _ in before.values()}  # a new IP
    assert ready_ips(cluster, "web") == {ip for ip, _ in after.values()}
    lines = loop.finish()
    assert len(lines) > 20 and all(line.startswith("200 Hello from") for line in lines), \
        [line for line in lines if not line.startswith("200")]
    assert took < 30, f"replacement took {took:.1f}s"
    # The supervisor's own clock (events): the victim leaves the endpoints at once, and its
    # replacement is in them within a couple of seconds (build, start, first readiness probe).
    evs = json.loads(cluster.emunet("get", "events", "-n", NS, "-o", "json").stdout)["items"]
    killed = next(e["firstTimestamp"] for e in evs
                  if e["reason"] == "Killing" and e["involvedObject"]["name"] == victim)
    changes = [e for e in evs if e["reason"] == "EndpointsChanged"
               and e["involvedObject"]["name"] == "web" and e["lastTimestamp"] >= killed]
    left = min(e["lastTimestamp"] for e in changes if f"-{before[victim][0]}" in e["message"])
    joined = min(e["lastTimestamp"] for e in changes if f"+{after[new][0]}" in e["message"])
    assert left - killed < 0.5 and joined - killed < 3.0, (left - killed, joined - killed)


def test_rolling_update_serves_every_request(cluster):
    old = pods(cluster, "web")
    loop = CurlLoop(cluster, "http://web/")
    loop.answers(10)  # the client is served steadily before the rollout starts
    update = cluster.tmp / "web-v2.yaml"
    update.write_text(WEB.replace("IMAGE", "nginx:1.28").replace("replicas: 1", "replicas: 2"))
    assert "deployment.apps/web configured" in cluster.emunet("apply", "-f", str(update)).stdout

    def rolled():
        now = pods(cluster, "web")
        return len(now) == 2 and not set(now) & set(old) and len(ready_ips(cluster, "web")) == 2
    wait_for(rolled, 30, "the rollout")
    new = pods(cluster, "web")
    lines = loop.finish()
    bad = [line for line in lines if not line.startswith("200 Hello from")]
    assert not bad, bad
    served = {line.split()[-1] for line in lines}
    assert served & set(old) and served & set(new)  # old pods served until new ones were Ready
    events = cluster.emunet("get", "events", "-n", NS).stdout
    assert re.search(r"Scaled up replica set web-\w+ from 0 to 1", events)
    assert "Scaled down replica set" in events


def test_readiness_probe_keeps_pods_out_of_endpoints(cluster):
    gated = pods(cluster, "gated")
    assert len(gated) == 2 and all(ready == "0/1" for _, ready in gated.values())
    assert ready_ips(cluster, "gated") == set()
    fail = cluster.exec(NS, "client", "curl", "-s", "-m", "3", "http://gated/", check=False)
    assert fail.returncode == 7  # rejected at once (no ready endpoints), not a timeout
    events = cluster.emunet("get", "events", "-n", NS).stdout
    assert "Readiness probe failed" in events and "Warning" in events
    (cluster.tmp / "gate").touch()
    wait_for(lambda: len(ready_ips(cluster, "gated")) == 2, 15, "gated pods ready")
    assert set(curl(cluster, "http://gated/", 20)) == set(gated)


def test_liveness_probe_restarts_the_container(cluster):
    def restarts() -> int:
        line = next(x for x in cluster.emunet("get", "pods", "-n", NS).stdout.splitlines()
                    if x.startswith("lively "))
        return int(line.split()[3])
    assert restarts() == 0
    (cluster.tmp / "alive").unlink()
    wait_for(lambda: restarts() >= 1, 10, "a restart")
    (cluster.tmp / "alive").touch()
    events = cluster.emunet("get", "events", "-n", NS).stdout
    assert "failed liveness probe, will be restarted" in events
    assert "Liveness probe failed" in events


def _restarts(cluster, pod: str) -> int:
    line = next(x for x in cluster.emunet("get", "pods", "-n", NS).stdout.splitlines()
                if x.startswith(pod + " "))
    return int(line.split()[3])


def test_startup_probe_holds_the_other_probes_then_the_pod_starts(cluster):
    """kubelet: every other probe is off until the startup probe passes; no readiness probe,
    so the pod is Ready once it has started."""
    # The point of the test: a stretch of time in which the liveness probe (every second,
    # one failure) would have restarted it, had it run; nothing to wait for but the clock.
    time.sleep(3)
    line = next(x for x in cluster.emunet("get", "pods", "-n", NS).stdout.splitlines()
                if x.startswith("slowstart "))
    assert line.split()[1] == "0/1" and _restarts(cluster, "slowstart") == 0
    assert "Startup probe failed" in cluster.emunet("get", "events", "-n", NS).stdout
    (cluster.tmp / "started").touch()

    def ready() -> bool:
        return any(x.startswith("slowstart ") and x.split()[1] == "1/1"
                   for x in cluster.emunet("get", "pods", "-n", NS).stdout.splitlines())
    wait_for(ready, 10, "slowstart Ready")
    assert _restarts(cluster, "slowstart") == 0


def test_exec_probe_runs_as_the_containers_user(cluster):
    def ready() -> bool:
        return any(x.startswith("whoami ") and x.split()[1] == "1/1"
                   for x in cluster.emunet("get", "pods", "-n", NS).stdout.splitlines())
    wait_for(ready, 10, "whoami Ready")


def test_failing_startup_probe_restarts_the_container(cluster):
    wait_for(lambda: _restarts(cluster, "neverstarts") >= 1, 15, "a restart")
    events = cluster.emunet("get", "events", "-n", NS).stdout
    assert "failed startup probe, will be restarted" in events
    cluster.emunet("delete", "pod", "neverstarts", "-n", NS)  # end its restart loop here


def test_logs_and_events(cluster):
    name = sorted(pods(cluster, "web"))[0]
    curl(cluster, "http://web/", 4)
    out = cluster.emunet("logs", "-n", NS, name).stdout
    assert re.search(r'"GET / HTTP/1.1" 200 \d+ "-" "curl/', out), out
    assert "kube-probe/" in out  # the readiness probe's requests, as a web server logs them
    assert cluster.emunet("logs", "-n", NS, name, "--tail", "1").stdout.count("\n") == 1
    follow = subprocess.Popen([sys.executable, "-m", "emunet", "logs", "-f", "-n", NS, name,
                               "--tail", "0"], env=cluster.env, cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    out = Output(follow.stdout)
    url = f"http://{pods(cluster, 'web')[name][0]}:8080/followed"

    def followed() -> bool:
        # logs -f prints from when it starts and says nothing when it does: request until
        # a line comes out (it polls the log every 0.2 s)
        cluster.exec(NS, "client", "curl", "-s", url)
        out.read(1.0)
        return '"GET /followed HTTP/1.1" 200' in out.text
    wait_for(followed, 20, "logs -f to print a request made while it follows")
    follow.terminate()
    assert '"GET /followed HTTP/1.1" 200' in out.rest(10)
    follow.wait(10)
    missing = cluster.emunet("logs", "-n", NS, name, "-c", "nope", check=False)
    assert missing.returncode == 2 and "choose one of: [web]" in missing.stderr
    events = cluster.emunet("get", "events", "-A").stdout
    assert events.splitlines()[0].split()[:3] == ["NAMESPACE", "LAST", "SEEN"]
    for reason in ("Scheduled", "Started", "Ready", "Killing", "ScalingReplicaSet",
                   "SuccessfulCreate", "SuccessfulDelete", "EndpointsChanged"):
        assert reason in events, reason
