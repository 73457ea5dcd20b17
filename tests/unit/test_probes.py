"""Probes (tracker semantics, config, tcp/http runners over loopback), events and access logs."""

from __future__ import annotations

import asyncio
import socket

import pytest

from emunet.cluster import events, prober
from emunet.cluster.builtin import access_line
from emunet.config import ConfigError, load_config_text
from emunet.model import Container, ContainerPort, Pod, Probe
from emunet.state import codec
from emunet.state.plan import plan

A_POD = Pod("ns", "p")

# ---- tracker semantics (kubelet prober worker) -------------------------------------------------


def test_readiness_starts_failed_and_needs_success_threshold() -> None:
    t = prober.ProbeTracker(Probe("tcpSocket", 80, initial_delay=5, period=2,
                                  success_threshold=2), prober.READINESS, "c", 100.0)
    assert t.result is False
    assert not t.due(104.9) and t.due(105.0)  # nothing before initialDelaySeconds
    t.running = True
    assert not t.due(200)  # one probe at a time
    assert t.record(True, 105.0) is False and t.result is False  # 1 of 2 successes
    assert t.next_due == 107.0
    assert t.record(True, 107.0) is True and t.result is True


def test_readiness_fails_after_failure_threshold_in_a_row() -> None:
    t = prober.ProbeTracker(Probe("tcpSocket", 80), prober.READINESS, "c", 0.0)
    t.record(True, 0)
    assert t.result
    t.record(False, 10)
    t.record(False, 20)
    t.record(True, 30)  # a success resets the failure count
    t.record(False, 40)
    t.record(False, 50)
    assert t.result
    assert t.record(False, 60) is True and t.result is False  # default failureThreshold 3


def test_liveness_starts_healthy_and_resets_on_restart() -> None:
    t = prober.ProbeTracker(Probe("exec", command=("true",), failure_threshold=1, period=1),
                            prober.LIVENESS, "c", 0.0)
    assert t.result is True
    assert t.record(False, 1) is True and t.result is False
    t.reset(5.0)
    assert t.result is True and t.failures == 0 and t.next_due == 5.0


def test_startup_probe_gates_and_gives_up() -> None:
    t = prober.ProbeTracker(Probe("exec", command=("true",), failure_threshold=2, period=1),
                            prober.STARTUP, "c", 0.0)
    r = prober.ProbeTracker(Probe("tcpSocket", 80), prober.READINESS, "c", 0.0)
    assert t.result is False and not prober.started([t, r], "c")
    assert prober.started([t, r], "other")  # no startup probe: started at once
    t.record(False, 0)
    assert not t.gives_up
    t.record(False, 1)
    assert t.gives_up  # failureThreshold in a row: the container is restarted
    t.reset(2.0)
    assert not t.gives_up and t.due(2.0)
    assert t.record(True, 2.0) is True and prober.started([t, r], "c")
    assert not t.due(100.0)  # done until the next restart
    t.reset(200.0)
    assert t.result is False and t.due(200.0)


def test_trackers_for_containers() -> None:
    c = Container("web", readiness_probe=Probe("tcpSocket", 80),
                  liveness_probe=Probe("httpGet", "http"))
    kinds = [(t.kind, t.container) for t in prober.trackers_for((c, Container("side")), 0)]
    assert kinds == [(prober.READINESS, "web"), (prober.LIVENESS, "web")]
    s = Container("slow", startup_probe=Probe("tcpSocket", 80))
    assert [t.kind for t in prober.trackers_for((s,), 0)] == [prober.STARTUP]


def test_named_probe_port_resolves_against_the_container() -> None:
    c = Container("web", ports=(ContainerPort(8080, name="http"),))
    assert prober.probe_port(Probe("httpGet", "http"), c) == 8080
    assert prober.probe_port(Probe("httpGet", 81), c) == 81
    assert prober.probe_port(Probe("httpGet", "nope"), c) is None


# ---- config -------------------------------------------------------------------------------------

POD = """\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {name: t}
spec: {nodes: [{name: n1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
    - name: c
      image: nginx
      ports: [{containerPort: 8080, name: http}]
"""


def test_probe_defaults_and_round_trip() -> None:
    cfg = load_config_text(POD + """\
      readinessProbe:
        httpGet: {path: /healthz, port: http}
      livenessProbe:
        exec: {command: [cat, /tmp/ok]}
        initialDelaySeconds: 3
        periodSeconds: 1
      startupProbe:
        tcpSocket: {port: 8080}
        failureThreshold: 30
""", "t.yaml")
    c = cfg.pods[0].containers[0]
    assert c.readiness_probe == Probe("httpGet", "http", path="/healthz")
    assert (c.readiness_probe.period, c.readiness_probe.timeout,
            c.readiness_probe.success_threshold, c.readiness_probe.failure_threshold) == (
        10, 1, 1, 3)  # the API server's defaults
    assert c.liveness_probe == Probe("exec", command=("cat", "/tmp/ok"), initial_delay=3,
                                     period=1)
    assert c.startup_probe == Probe("tcpSocket", 8080, failure_threshold=30)
    st = plan(cfg)
    assert codec.from_json(codec.to_json(st)).pods[("default", "p")].pod == cfg.pods[0]


@pytest.mark.parametrize(("probe", "line", "path", "words"), [
    ("      readinessProbe:\n        tcpSocket: {port: 80}\n        exec: {command: [true]}\n",
     14, "spec.containers[0].readinessProbe", "exactly one handler"),
    ("      livenessProbe:\n        tcpSocket: {port: 80}\n        successThreshold: 2\n",
     16, "spec.containers[0].livenessProbe.successThreshold", "must be 1"),
    ("      startupProbe:\n        tcpSocket: {port: 80}\n        successThreshold: 3\n",
     16, "spec.containers[0].startupProbe.successThreshold", "must be 1"),
    ("      readinessProbe:\n        tcpSocket: {port: 80}\n        periodSeconds: 0\n",
     16, "spec.containers[0].readinessProbe.periodSeconds", "must be"),
    ("      readinessProbe:\n        httpGet: {path: /}\n",
     15, "spec.containers[0].readinessProbe.httpGet.port", "required"),
    ("      readinessProbe:\n        grpc: {port: 9000}\n",
     15, "spec.containers[0].readinessProbe.grpc", "not supported"),
])
def test_probe_errors_are_located(probe: str, line: int, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(POD + probe, "t.yaml")
    assert (info.value.line, info.value.path) == (line, path), str(info.value)
    assert words in str(info.value)


# ---- runners over loopback (the netns socket is replaced by a plain one) ------------------------

@pytest.fixture()
def plain_sockets(monkeypatch):
    monkeypatch.setattr(prober, "socket_in_netns",
                        lambda netns, family, type, proto=0: socket.socket(family, type, proto))


async def _http_server(status: bytes) -> tuple[asyncio.AbstractServer, int]:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
        await w.drain()
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("status", "ok"), [(b"200 OK", True), (b"302 Found", True),
                                            (b"404 Not Found", False), (b"500 Oops", False)])
def test_http_probe_status_codes(plain_sockets, status: bytes, ok: bool) -> None:
    async def go() -> tuple[bool, str]:
        srv, port = await _http_server(status)
        async with srv:
            return await prober.run(Probe("httpGet", port, path="/healthz"), Container("c"), A_POD,
                                    "ns", "127.0.0.1")

    result, message = asyncio.run(go())
    assert result is ok
    if not ok:
        assert f"statuscode: {int(status.split()[0])}" in message


def test_tcp_probe_refused_says_so(plain_sockets) -> None:
    port = _free_port()
    ok, message = asyncio.run(prober.run(Probe("tcpSocket", port), Container("c"), A_POD, "ns",
                                         "127.0.0.1"))
    assert not ok and f"dial tcp 127.0.0.1:{port}: connect: connection refused" in message


def test_probe_with_unknown_named_port_fails() -> None:
    ok, message = asyncio.run(prober.run(Probe("tcpSocket", "http"), Container("c"), A_POD, "ns",
                                         "127.0.0.1"))
    assert not ok and "'http'" in message


# ---- events -------------------------------------------------------------------------------------

def test_event_log_folds_repeats_and_is_bounded() -> None:
    log = events.EventLog(limit=3)
    log.record(1, "ns", "Pod", "p", "Unhealthy", "Readiness probe failed", events.WARNING)
    e = log.record(5, "ns", "Pod", "p", "Unhealthy", "Readiness probe failed", events.WARNING)
    assert e.count == 2 and e.first == 1 and e.last == 5 and len(log.events) == 1
    for i in range(4):
        log.record(10 + i, "other", "Pod", f"q{i}", "Started", "Started container c")
    assert [x["name"] for x in log.list()] == ["q1", "q2", "q3"]
    assert log.list("ns") == []


def test_event_rows_like_kubectl() -> None:
    log = events.EventLog()
    log.record(100, "ns", "Deployment", "web", "ScalingReplicaSet", "Scaled up replica set")
    log.record(90, "ns", "Pod", "p", "Unhealthy", "probe failed", events.WARNING)
    log.record(130, "ns", "Pod", "p", "Unhealthy", "probe failed", events.WARNING)
    rows = events.rows(log.list(), now=160, all_namespaces=True)
    assert rows[0] == ["NAMESPACE", "LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert rows[1] == ["ns", "60s", "Normal", "ScalingReplicaSet", "deployment/web",
                       "Scaled up replica set"]
    assert rows[2][1:4] == ["30s (x2 over 70s)", "Warning", "Unhealthy"]


@pytest.mark.parametrize(("s", "text"), [(5, "5s"), (119, "119s"), (200, "3m20s"),
                                         (600, "10m"), (3 * 3600 + 300, "3h5m"),
                                         (20 * 3600, "20h"), (72 * 3600, "3d")])
def test_human_duration(s: float, text: str) -> None:
    assert events.human_duration(s) == text


def test_access_line_is_combined_log_format() -> None:
    line = access_line(("10.42.1.3", 51234), b"GET /x HTTP/1.1\r\nHost: web\r\n"
                       b"User-Agent: curl/8.10.1\r\n\r\n", 200, 42, 0.0)
    assert line == ('10.42.1.3 - - [01/Jan/1970:00:00:00 +0000] "GET /x HTTP/1.1" 200 42 "-" '
                    '"curl/8.10.1"\n')


def test_exec_probe_runs_as_the_containers_user_in_its_namespaces() -> None:
    p = Probe("exec", command=("cat", "/tmp/ok"))
    pod = Pod("ns", "web")
    argv = prober.exec_argv(p, Container("c"), pod, "ns1", target_pid=4242)
    assert argv[:2] == ["nsenter", "--target=4242"] and argv[-2:] == ["cat", "/tmp/ok"]
    assert {"--net", "--uts", "--ipc", "--mount", "--pid"} <= set(argv)
    assert "--reuid=65534" in argv  # nobody, as the container's own processes
    root = prober.exec_argv(p, Container("c", run_as_user=0), pod, "ns1", target_pid=4242)
    assert "setpriv" not in root
    # no process to join (a built-in container): fresh namespaces with the pod's hostname
    fresh = prober.exec_argv(p, Container("c"), pod, "ns1")
    assert fresh[:4] == ["ip", "netns", "exec", "ns1"] and "web" in fresh
