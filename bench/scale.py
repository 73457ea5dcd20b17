"""Datapath throughput at scale: one Service and one NetworkPolicy against 5,000 and 1,000.

    sudo scripts/bench scale       (or: sudo .venv/bin/python -m bench.scale --repeat 3)

The same two-node emunet cluster is built twice in one run: a client pod on node-1, an iperf3
server on node-2 behind one ClusterIP, one NetworkPolicy admitting the client to it. The second
build adds --services extra Services (every other one selects the server on its own port, so
agents hold endpoints for it; the rest select nothing) and --policies extra NetworkPolicies
(every other one selects a pod that does not exist; the rest are additive copies of the
server's rule, so the server's ingress table is built from many policies). The issue's bar:
iperf3 cross-node through the ClusterIP with policy >= 0.9x with one of each. Also reported
for both: `emunet up` time and the resident memory of the node agents (sum over both nodes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.common_cluster import BenchCluster, median, pod_doc, ratio, service_doc
from bench.datapath import IPERF_PORT, iperf

NS = "bench"


def _policy(name: str, app: str) -> str:
    return ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: "
            f"{{name: {name}, namespace: {NS}}}\nspec:\n  podSelector: {{matchLabels: "
            f"{{app: {app}}}}}\n  policyTypes: [Ingress]\n  ingress:\n    - from: "
            "[{podSelector: {matchLabels: {app: client}}}]\n"
            f"      ports: [{{protocol: TCP, port: {IPERF_PORT}}}]\n")


def config(services: int = 0, policies: int = 0) -> str:
    """The base cluster (one Service, one policy) plus `services` Services and `policies`
    NetworkPolicies that change no answer for the measured flow."""
    docs = [
        "apiVersion: emunet/v1alpha1\nkind: Cluster\nmetadata: {name: bench}\nspec:\n"
        "  nodes:\n    - {name: node-1, datapath: emunet}\n"
        "    - {name: node-2, datapath: emunet}\n",
        f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n",
        pod_doc(NS, "client", "node-1", "client", ["sleep", "infinity"], None),
        pod_doc(NS, "iperf-remote", "node-2", "iperf-remote",
                ["iperf3", "-s", "-p", str(IPERF_PORT)], IPERF_PORT),
        service_doc(NS, "iperf-remote", "iperf-remote", IPERF_PORT),
        _policy("iperf", "iperf-remote"),
    ]
    for i in range(services):
        # a distinct port per Service, so no two rules share a (ClusterIP, port) shape by luck
        app = "iperf-remote" if i % 2 else f"nobody-{i}"
        docs.append(service_doc(NS, f"extra-{i}", app, 10000 + i, IPERF_PORT))
    for i in range(policies):
        docs.append(_policy(f"copy-{i}", "iperf-remote") if i % 2
                    else _policy(f"other-{i}", f"nobody-{i}"))
    return "---\n".join(docs)


def measure(tag: str, services: int, policies: int, repeat: int, seconds: float, log) -> dict:
    with BenchCluster(tag, config(services, policies)) as c:
        items = json.loads(c.emunet("get", "services", "-n", NS, "-o", "json"))["items"]
        if len(items) != services + 1:
            raise RuntimeError(f"{len(items)} Services in {NS}, expected {services + 1}")
        cip = next(s["spec"]["clusterIP"] for s in items
                   if s["metadata"]["name"] == "iperf-remote")
        log(f"  {services + 1} Services, {policies + 1} policies: up in {c.up_seconds:.1f}s; "
            "measuring")
        iperf(c, cip, 1.0)  # warm-up: neighbour entries, first conntrack entries
        runs = [iperf(c, cip, seconds) for _ in range(repeat)]
        rss = c.rss_bytes(b"emunet.agent")
    return {"services": services + 1, "policies": policies + 1,
            "tcp_cross_gbps": {"median": median(runs), "runs": runs},
            "up_s": c.up_seconds, "down_s": c.down_seconds, "agent_rss_mb": rss / 2**20}


def run(services: int, policies: int, repeat: int, seconds: float,
        log=lambda s: print(s, file=sys.stderr)) -> dict:
    res: dict = {"repeat": repeat, "seconds": seconds,
                 "one": measure("esc", 0, 0, repeat, seconds, log),
                 "many": measure("esm", services, policies, repeat, seconds, log)}
    res["ratio"] = ratio(res["many"]["tcp_cross_gbps"]["median"],
                         res["one"]["tcp_cross_gbps"]["median"])
    res["met"] = res["ratio"] >= 0.9
    return res


def report(res: dict) -> str:
    one, many = res["one"], res["many"]
    head = f"{many['services']} svc / {many['policies']} netpol"
    lines = [f"{'':44} {'1 svc / 1 netpol':>17} {head:>22} {'ratio':>7}"]
    for label, key, fmt in (("TCP cross-node via ClusterIP + policy, Gbit/s", None, "{:.3f}"),
                            ("emunet up, s", "up_s", "{:.2f}"),
                            ("emunet down, s", "down_s", "{:.2f}"),
                            ("node agents' RSS (both nodes), MB", "agent_rss_mb", "{:.1f}")):
        a = one["tcp_cross_gbps"]["median"] if key is None else one[key]
        b = many["tcp_cross_gbps"]["median"] if key is None else many[key]
        lines.append(f"{label:44} {fmt.format(a):>17} {fmt.format(b):>22} "
                     f"{ratio(b, a):6.2f}x")
    lines.append(f"bar: throughput with many >= 0.9x one: {'met' if res['met'] else 'NOT met'}"
                 f" (medians of {res['repeat']} runs of {res['seconds']}s, iperf3 one stream)")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench.scale", description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=5000, help="extra Services")
    ap.add_argument("--policies", type=int, default=1000, help="extra NetworkPolicies")
    ap.add_argument("--repeat", type=int, default=3, help="iperf3 runs per figure (median)")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each iperf3 run")
    ap.add_argument("--json", type=Path, help="write the results here")
    a, _ = ap.parse_known_args()  # scripts/bench passes every section the same options
    res = run(a.services, a.policies, max(1, a.repeat), a.seconds)
    print(report(res))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0 if res["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
