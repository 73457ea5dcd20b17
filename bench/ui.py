"""`emunet ui` under load: page ready time and the browser tab's memory with 200 pods and a
stream of flow events, and the datapath's throughput with the UI open vs closed.

    sudo scripts/bench ui        (or: sudo .venv/bin/python -m bench.ui --pods 200 --rate 500)

One two-node cluster of --pods pods (built-in pods without ports, plus an iperf3 client on
node-1 and server on node-2 behind a ClusterIP). A flow generator in the client pod opens
--rate new UDP flows a second through a ClusterIP to a pod on node-2 (each is a kept event on
both nodes: about 2 x rate flow records a second, measured from the flow files and printed).
With --drops D a NetworkPolicy lets only that port into the sink, and a second generator sends
D flows a second to another of its ports: D dropped flows a second for the table (in red) and
the map (a broken edge). The generators run throughout, UI open or closed, so the only
difference between the two is the UI:

  page ready       from `driver.get(URL)` until the map shows every pod and the flow table
                   has the stored flows (the last 200) (headless Chromium, Selenium, the
                   system chromedriver), median of --repeat page loads
  tab memory       the JS heap (performance.memory, --enable-precise-memory-info) and the
                   RSS of the tab's renderer process, right after ready and after --soak s of
                   the event stream
  datapath         iperf3 one stream cross-node via the ClusterIP, UI closed (no server, no
                   browser) and UI open (the server and the page streaming), alternated
                   --repeat times; medians and the ratio open/closed (issue 18: >= 0.95x)

With --cpu-only S there is no iperf3: the page streams for S seconds per round and the CPU
seconds of the server and of each browser process type are reported (cores), with Chromium's
own accounting of the page's main thread (script, layout, style); --compare TREE alternates
this tree's UI with another source tree's (e.g. `git archive main`), on one cluster, ABBA.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from bench.common_cluster import ROOT, BenchCluster, median, pod_doc, ratio, service_doc
from bench.common_ui import UI, cpu_delta

NS = "bench"
IPERF_PORT, SINK_PORT = 5201, 9000

GENERATOR = textwrap.dedent("""
    import socket, sys, time
    ip, port, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    gap, nxt = 1.0 / rate, time.monotonic()
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a new source port: a new flow
        s.sendto(b"x", (ip, port))
        s.close()
        nxt += gap
        d = nxt - time.monotonic()
        if d > 0:
            time.sleep(d)
        elif d < -1:
            nxt = time.monotonic()  # behind by a second: do not burst to catch up
""")


def config(pods: int, drops: float = 0) -> str:
    iperf = ["iperf3", "-s", "-p", str(IPERF_PORT)]
    docs = ["apiVersion: emunet/v1alpha1\nkind: Cluster\nmetadata: {name: benchui}\nspec:\n"
            "  apiServer: {port: 0}\n  nodes:\n    - {name: node-1}\n    - {name: node-2}\n",
            f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n",
            pod_doc(NS, "client", "node-1", "client", ["sleep", "infinity"], None),
            pod_doc(NS, "iperf", "node-2", "iperf", iperf, IPERF_PORT),
            service_doc(NS, "iperf", "iperf", IPERF_PORT),
            # the generator's target: a built-in pod on node-2 (nothing listens: the flows
            # are what counts), behind a ClusterIP so each flow is also a DNAT event
            "apiVersion: v1\nkind: Pod\nmetadata: {name: sink, namespace: bench, labels: "
            "{app: sink}}\nspec:\n  nodeName: node-2\n  containers:\n"
            "    - {name: main, image: emunet/builtin}\n",
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: sink, namespace: {NS}}}\n"
            f"spec:\n  selector: {{app: sink}}\n  ports: [{{protocol: UDP, port: {SINK_PORT}, "
            f"targetPort: {SINK_PORT}}}]\n"]
    docs += [f"apiVersion: v1\nkind: Pod\nmetadata: {{name: pod-{i}, namespace: {NS}, "
             f"labels: {{app: app-{i % 10}}}}}\nspec:\n  containers:\n"
             "    - {name: main, image: emunet/builtin}\n" for i in range(max(0, pods - 3))]
    if drops:
        docs.append("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: "
                    f"sink-{SINK_PORT}-only, namespace: {NS}}}\nspec:\n  podSelector: "
                    "{matchLabels: {app: sink}}\n  policyTypes: [Ingress]\n  ingress:\n"
                    f"    - ports: [{{protocol: UDP, port: {SINK_PORT}}}]\n")
    return "---\n".join(docs)


def pod_ip(c: BenchCluster, name: str) -> str:
    items = json.loads(c.emunet("get", "pods", "-n", NS, "-o", "json"))["items"]
    return next(p["status"]["podIP"] for p in items if p["metadata"]["name"] == name)


def cluster_ip(c: BenchCluster, name: str) -> str:
    items = json.loads(c.emunet("get", "services", "-n", NS, "-o", "json"))["items"]
    return next(s["spec"]["clusterIP"] for s in items if s["metadata"]["name"] == name)


def iperf(c: BenchCluster, ip: str, seconds: float) -> float:
    for attempt in range(3):
        p = c.run_in(c.netns(NS, "client"), "iperf3", "-c", ip, "-p", str(IPERF_PORT), "-t",
                     str(seconds), "-J", timeout=seconds + 30, check=False)
        if p.returncode == 0:
            return json.loads(p.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
        if attempt == 2:
            raise RuntimeError(f"iperf3 to {ip} failed: {p.stdout[-500:]}{p.stderr}")
    raise AssertionError("unreachable")


def record_rate(run_dir: Path, seconds: float) -> float:
    """Flow records written per second by the node agents (lines added to flows-*.jsonl)."""
    def lines() -> int:
        n = 0
        for p in run_dir.glob("flows-*.jsonl*"):
            with open(p, "rb") as f:
                n += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        return n
    # rotation moves a file to .1 (dropping the old .1): count both, over a short window
    a, t0 = lines(), time.monotonic()
    time.sleep(seconds)
    return (lines() - a) / (time.monotonic() - t0)


def cpu_only(a: argparse.Namespace, c: BenchCluster, res: dict[str, Any]) -> None:
    """Rounds of --cpu-only seconds of the page streaming, per tree (ABBA): cores used."""
    trees = [ROOT] + ([Path(a.compare).resolve()] if a.compare else [])
    per: dict[str, list[dict[str, float]]] = {str(t): [] for t in trees}
    with UI(c) as ui:
        for i in range(a.repeat):
            for tree in (trees if i % 2 == 0 else trees[::-1]):
                ui.open(tree)
                ui.load(a.pods)
                m0 = ui.page_metrics()
                time.sleep(a.settle)
                m0, cpu0, t0 = ui.page_metrics(), ui.cpu_by_pid(), time.monotonic()
                time.sleep(a.cpu_only)
                m1, cpu1, dt = ui.page_metrics(), ui.cpu_by_pid(), time.monotonic() - t0
                row = {k: round(v / dt, 4) for k, v in cpu_delta(cpu0, cpu1).items()}
                row.update({f"page_{k}": round((m1.get(k, 0.0) - m0.get(k, 0.0)) / dt, 4)
                            for k in m1})
                per[str(tree)].append(row)
                ui.close()
    res["cpu_only_s"] = a.cpu_only
    res["trees"] = {t: {"rounds": rows, "median": {k: median([r.get(k, 0.0) for r in rows])
                                                   for k in rows[0]}}
                    for t, rows in per.items()}


def run(a: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"pods": a.pods, "rate": a.rate, "drops": a.drops,
                           "repeat": a.repeat, "seconds": a.seconds}
    with BenchCluster("bui", config(a.pods, a.drops), timeout=600) as c:
        res["up_s"] = round(c.up_seconds, 1)
        targets = [(cluster_ip(c, "sink"), SINK_PORT, a.rate)]
        if a.drops:
            targets.append((pod_ip(c, "sink"), SINK_PORT + 1, a.drops))  # denied: dropped
        gens = [subprocess.Popen(["ip", "netns", "exec", c.netns(NS, "client"), sys.executable,
                                  "-c", GENERATOR, ip, str(port), str(rate)])
                for ip, port, rate in targets]
        try:
            time.sleep(1)
            res["records_per_s"] = round(record_rate(c.tmp / "run", 3), 0)
            if a.cpu_only:
                cpu_only(a, c, res)
                return res
            vip = cluster_ip(c, "iperf")
            closed, opened, ready, mem0, mem1 = [], [], [], {}, {}
            cpu: list[dict[str, float]] = []
            with UI(c) as ui:
                for i in range(a.repeat):
                    # ABBA order: a drift of the machine's load hits both sides alike
                    for side in (("closed", "open") if i % 2 == 0 else ("open", "closed")):
                        if side == "closed":
                            time.sleep(a.settle)
                            closed.append(iperf(c, vip, a.seconds))
                            continue
                        ui.open()
                        ready.append(ui.load(a.pods))
                        if not mem0:
                            mem0 = ui.memory()
                            time.sleep(a.soak)
                            mem1 = ui.memory()
                        time.sleep(a.settle)
                        cpu0, t0 = ui.cpu_seconds(), time.monotonic()
                        opened.append(iperf(c, vip, a.seconds))
                        cpu1, dt = ui.cpu_seconds(), time.monotonic() - t0
                        cpu.append({k: (cpu1[k] - cpu0[k]) / dt for k in cpu0})
                        ui.close()
            res.update(closed_gbit=closed, open_gbit=opened, ready_s=ready,
                       ready_median_s=median(ready), mem_ready=mem0, mem_after_soak=mem1,
                       soak_s=a.soak, closed_median=median(closed), open_median=median(opened),
                       ratio_open_closed=ratio(median(opened), median(closed)),
                       cpu_open=cpu,
                       server_cpu=median([x["server"] for x in cpu]),
                       browser_cpu=median([x["browser"] for x in cpu]))
        finally:
            for gen in gens:
                gen.send_signal(signal.SIGTERM)
                gen.wait(10)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=200)
    ap.add_argument("--rate", type=float, default=500, help="new UDP flows a second (each "
                    "makes a record on both nodes: about twice as many records)")
    ap.add_argument("--drops", type=float, default=0, help="also this many dropped flows a "
                    "second (denied by a NetworkPolicy)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each iperf3 run")
    ap.add_argument("--soak", type=float, default=30.0, help="seconds of streaming before the "
                    "second memory reading")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds before each iperf3 run")
    ap.add_argument("--cpu-only", type=float, default=0.0, metavar="S", help="no iperf3: "
                    "report the UI's CPU (cores, per process type) over S s of streaming")
    ap.add_argument("--compare", metavar="TREE", help="with --cpu-only: alternate with the UI "
                    "of this source tree")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    res = run(a)
    if a.cpu_only:
        print(f"UI CPU with {res['pods']} pods, {res['records_per_s']:.0f} flow records/s "
              f"({res['drops']:.0f} dropped flows/s), "
              f"{res['repeat']} rounds of {a.cpu_only:.0f} s per tree (medians; cores, and the "
              "page's main thread in s/s)")
        for t, v in res["trees"].items():
            print(f"  {t}")
            print("    " + "  ".join(f"{k} {x:.3f}" for k, x in sorted(v["median"].items())))
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=2))
        return 0
    print(f"UI with {res['pods']} pods, {res['records_per_s']:.0f} flow records/s "
          f"({res['rate']:.0f} new flows/s), {res['repeat']} rounds")
    print(f"  page ready (map + flows)   median {res['ready_median_s']:.2f} s  "
          f"({', '.join(f'{x:.2f}' for x in res['ready_s'])})")
    m0, m1 = res["mem_ready"], res["mem_after_soak"]
    print(f"  tab memory at ready        JS heap {m0['js_heap_mb']:.1f} MB, renderer RSS "
          f"{m0['renderer_rss_mb']:.0f} MB")
    print(f"  after {res['soak_s']:.0f} s of the stream    JS heap {m1['js_heap_mb']:.1f} MB, "
          f"renderer RSS {m1['renderer_rss_mb']:.0f} MB")
    print(f"  iperf3 cross-node          UI closed {res['closed_median']:.2f} Gbit/s, open "
          f"{res['open_median']:.2f} Gbit/s: {res['ratio_open_closed']:.2f}x (medians of "
          f"{res['repeat']} x {res['seconds']:.0f} s, alternated)")
    print(f"  CPU while open             server {res['server_cpu']:.2f} cores, browser "
          f"{res['browser_cpu']:.2f} cores (during the iperf3 runs; 2 cores on this machine)")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
