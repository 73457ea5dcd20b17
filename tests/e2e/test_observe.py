"""Watching the packet, as a user does: `emunet trace`, `observe`, `capture` and `status`.

One two-node story cluster for the module, plus a same-node web Service and a Service without
endpoints applied on top.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.cluster import ROOT, Cluster
from tests.waiting import Output, wait_for

NS = "blog-website"
EXTRA = """\
apiVersion: v1
kind: Pod
metadata: {name: local-web, namespace: blog-website, labels: {app: local-web}}
spec:
  nodeName: node-1
  containers:
    - name: web
      image: nginx
      ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: local-web, namespace: blog-website}
spec:
  selector: {app: local-web}
  ports: [{port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: blog-website}
spec:
  selector: {app: nobody}
  ports: [{port: 80, targetPort: 80, protocol: TCP}]
"""
HUBBLE_FIELDS = {"time", "verdict", "IP", "l4", "source", "destination", "Type", "node_name",
                 "traffic_direction", "is_reply", "Summary", "event_type"}
# trace (4) and drop (1) events say where they were seen; policy verdicts and L7 do not
POINT_TYPES = {1, 4}
ENDPOINT_FIELDS = {"namespace", "pod_name", "labels", "identity"}


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    c = module_clusters(ROOT / "configs" / "two-node.yaml", "emo")
    (c.tmp / "extra.yaml").write_text(EXTRA)
    c.emunet("apply", "-f", str(c.tmp / "extra.yaml"))
    wait_for(lambda: c.exec(NS, "frontend-client", "curl", "-s", "-m", "1", "http://local-web",
                            check=False).returncode == 0, 20, "local-web to answer")
    return c


def trace_json(c: Cluster, pod: str, dest: str, *extra: str) -> tuple[int, dict]:
    p = c.emunet("trace", "-n", NS, pod, dest, "-o", "json", "--timeout", "1", *extra,
                 check=False)
    assert p.returncode in (0, 1), p.stderr
    return p.returncode, json.loads(p.stdout)


def steps(packet: dict) -> list[tuple[str, str]]:
    return [(h["node"], h["step"]) for h in packet["hops"]]


def test_trace_cross_node_service_tells_every_hop(cluster):
    p = cluster.emunet("trace", "-n", NS, "frontend-client", "monospaced")
    out = p.stdout
    for text in ("[L7 DNS] monospaced.blog-website.svc.cluster.local. -> 10.43.",
                 "DNAT 10.43.", "-> backend 10.42.2.2:3000 (blog-website/monospaced-test)",
                 "VXLAN encapsulation (RFC 7348): outer IP 192.168.1.11 -> 192.168.1.12, "
                 "UDP port 8472, VNI 1", "VXLAN decapsulation: VNI 1",
                 "ingress policy: allowed by NetworkPolicy blog-website/monospaced-access",
                 "reverse NAT: source 10.42.2.2:3000 -> 10.43.", "result: connected"):
        assert text in out, out
    code, j = trace_json(cluster, "frontend-client", "monospaced")
    assert code == 0 and j["dns"][0]["rcode"] == "NOERROR"
    req, reply = j["packets"][0], next(p for p in j["packets"] if p["reply"])
    assert steps(req) == [("node-1", "send"), ("node-1", "veth"), ("node-1", "conntrack"),
                          ("node-1", "dnat"), ("node-1", "policy"), ("node-1", "route"),
                          ("node-1", "encap"), ("node-2", "underlay"), ("node-2", "decap"),
                          ("node-2", "conntrack"), ("node-2", "policy"), ("node-2", "route"),
                          ("node-2", "deliver")]
    assert ("node-1", "reverse-nat") in steps(reply) and steps(reply)[-1] == ("node-1",
                                                                              "deliver")


def test_trace_same_node_service_has_no_overlay_hop(cluster):
    code, j = trace_json(cluster, "frontend-client", "local-web")
    assert code == 0 and j["result"]["result"] == "connected"
    s = steps(j["packets"][0])
    assert ("node-1", "dnat") in s and ("node-1", "deliver") in s
    assert not any(step in ("encap", "decap") for _, step in s)
    assert all(node == "node-1" for node, _ in s)


def test_trace_policy_drop_names_the_policy(cluster):
    p = cluster.emunet("trace", "-n", NS, "intruder", "monospaced", "--timeout", "1",
                       check=False)
    assert p.returncode == 1
    assert "DROPPED at NetworkPolicy: POLICY_DENIED" in p.stdout
    assert "isolated by blog-website/monospaced-access" in p.stdout
    assert "result: timeout" in p.stdout


def test_trace_service_without_endpoints(cluster):
    code, j = trace_json(cluster, "frontend-client", "empty:80")
    assert code == 1 and j["result"]["result"] == "refused (TCP RST)"
    drop = j["packets"][0]["hops"][-1]
    assert drop["step"] == "drop" and drop["hubble_reason"] == "SERVICE_BACKEND_NOT_FOUND"
    assert "no ready endpoints" in drop["text"] and "RST" in drop["text"]


def test_trace_name_that_does_not_resolve(cluster):
    p = cluster.emunet("trace", "-n", NS, "frontend-client", "no-such-svc", check=False)
    assert p.returncode == 1
    assert "no-such-svc.blog-website.svc.cluster.local. -> NXDOMAIN" in p.stdout
    assert "does not resolve" in p.stdout and "probe:" not in p.stdout


def observe(c: Cluster, *args: str) -> list[dict]:
    out = c.emunet("observe", "-o", "json", *args).stdout
    return [json.loads(line)["flow"] for line in out.splitlines()]


def test_observe_json_has_hubble_fields_and_filters_work(cluster):
    cluster.exec(NS, "frontend-client", "curl", "-s", "-m", "2", "http://monospaced")
    flows = observe(cluster, "--last", "500")
    assert flows
    for f in flows:
        assert HUBBLE_FIELDS <= f.keys(), f.keys()
        if f["event_type"]["type"] in POINT_TYPES:
            assert f["trace_observation_point"] in ("TO_ENDPOINT", "TO_OVERLAY",
                                                    "FROM_ENDPOINT", "FROM_OVERLAY")
        if f["Type"] == "L7":
            assert "http" in f["l7"] or "dns" in f["l7"]
    pods = [e for f in flows for e in (f["source"], f["destination"]) if "pod_name" in e]
    assert pods and all(ENDPOINT_FIELDS <= e.keys() for e in pods)
    dnat = [f for f in flows if f.get("dnat", {}).get("service", "").startswith(
        "blog-website/monospaced:80")]
    assert dnat and dnat[0]["destination_service"] == {"name": "monospaced",
                                                       "namespace": NS}
    assert dnat[0]["dnat"]["backend"] == "10.42.2.2:3000"
    drops = observe(cluster, "--verdict", "DROPPED", "--last", "500")
    assert drops and all(f["verdict"] == "DROPPED" and f["drop_reason_desc"] for f in drops)
    denied = [f for f in drops if f["drop_reason_desc"] == "POLICY_DENIED"]
    assert denied and denied[0]["ingress_denied_by"][0]["name"] == "monospaced-access"
    pv = observe(cluster, "--type", "policy-verdict", "--last", "500")
    assert pv and all(f["event_type"]["type"] == 5 for f in pv)
    to = observe(cluster, "--to-pod", f"{NS}/monospaced", "--last", "500")
    assert to and all(f["destination"]["pod_name"].startswith("monospaced") for f in to)
    dns = observe(cluster, "--protocol", "udp", "--port", "53", "--last", "500")
    assert dns and all("UDP" in f["l4"] for f in dns)
    lab = observe(cluster, "-l", "app=intruder", "--last", "500")
    assert lab and all("k8s:app=intruder" in f["source"].get("labels", []) +
                       f["destination"].get("labels", []) for f in lab)
    assert len(observe(cluster, "--last", "3")) == 3
    assert observe(cluster, "--since", "2030-01-01T00:00:00Z") == [] or \
        time.time() > 1893456000
    table = cluster.emunet("observe", "-o", "table", "--last", "2").stdout
    assert table.startswith("TIMESTAMP") and "VERDICT" in table
    compact = cluster.emunet("observe", "-n", NS, "--last", "5").stdout
    assert " -> " in compact or " <- " in compact
    bad = cluster.emunet("observe", "--type", "nonsense", check=False)
    assert bad.returncode == 2 and "--type" in bad.stderr


def test_observe_follow_streams_new_flows(cluster):
    follow = subprocess.Popen(
        [sys.executable, "-m", "emunet", "observe", "-f", "--follow-for", "30", "--last", "0",
         "-o", "json", "--from-pod", f"{NS}/frontend-client"],
        env=cluster.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # Ctrl-C's SIGINT as in a terminal: a background job of a script (nohup ... &)
        # ignores it, and a child would inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    out = Output(follow.stdout)

    def flows() -> list[dict]:
        whole = out.text[:out.text.rfind("\n") + 1]  # a line still being written waits
        return [json.loads(line)["flow"] for line in whole.splitlines() if line.strip()]

    def streamed() -> bool:
        # observe -f shows flows from when it starts, and says nothing when it does: curl
        # until one comes out (each curl a new flow; they come 0.3-0.5 s after it ends)
        cluster.exec(NS, "frontend-client", "curl", "-s", "-m", "2", "http://local-web")
        out.read(1.0)
        return any(f["destination"].get("pod_name") == "local-web" for f in flows())

    try:
        wait_for(streamed, 20, "observe -f to stream a curl's flow")
    finally:
        follow.send_signal(signal.SIGINT)  # Ctrl-C: it prints what it holds and exits 0
        out.rest(10)
        assert follow.wait(10) == 0, follow.stderr.read() if follow.stderr else ""
    assert any(f["destination"].get("pod_name") == "local-web" for f in flows()), flows()


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed "
                    "(sudo scripts/setup --test installs it)")
def test_underlay_capture_decodes_as_vxlan_with_inner_pod_ips(cluster):
    pcap = cluster.tmp / "underlay.pcap"
    result: dict = {}

    def cap():
        result["p"] = cluster.emunet("capture", "node/node-1", "-w", str(pcap), "-c", "4",
                                     "--duration", "10", timeout=30)

    t = threading.Thread(target=cap)
    t.start()
    # capture writes the pcap header once its sockets are bound: from then on it records
    wait_for(lambda: pcap.exists() and pcap.stat().st_size >= 24, 10,
             "capture to start (the pcap file header)")
    cluster.exec(NS, "frontend-client", "curl", "-s", "-m", "2", "http://monospaced")
    t.join()
    assert "4 packets" in result["p"].stdout
    out = subprocess.run(["tshark", "-r", str(pcap), "-d", "udp.port==8472,vxlan", "-T",
                          "fields", "-e", "vxlan.vni", "-e", "ip.src", "-e", "ip.dst"],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows and all(r[0] == "1" for r in rows)
    # outer then inner addresses: underlay IPs and the pods' IPs
    assert any("192.168.1.11" in r[1] and "10.42.1.3" in r[1] and "10.42.2.2" in r[2]
               for r in rows), rows


def _forwarded(status: str, node: str) -> int:
    m = re.search(rf"node {node}:.*\n  forwarded: (\d+) packets", status)
    assert m, status
    return int(m.group(1))


def test_status_counters_move_with_traffic(cluster):
    before = cluster.emunet("status").stdout
    cluster.exec(NS, "frontend-client", "curl", "-s", "-m", "2", "http://monospaced")
    # agents write their counters every second: wait for the writes that follow the curl
    cluster.counters_after(time.time(), "node-1", "node-2")
    after = cluster.emunet("status").stdout
    assert _forwarded(after, "node-1") > _forwarded(before, "node-1")
    assert _forwarded(after, "node-2") > _forwarded(before, "node-2")
    assert "drops: " in after and "POLICY_DENIED" in after
    assert re.search(r"dns: \d+ queries; answers .*NOERROR \d+", after), after
    assert "restarts 0" in after and "Service DNAT:" in after


def test_capture_point_errors_are_clear(cluster, tmp_path: Path):
    p = cluster.emunet("capture", "nosuchpod", "-w", str(tmp_path / "x.pcap"), "-c", "1",
                       check=False)
    assert p.returncode == 2 and "no pod 'nosuchpod'" in p.stderr
