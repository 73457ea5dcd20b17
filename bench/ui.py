"""`emunet ui` under load: page ready time and the browser tab's memory with 200 pods and a
stream of flow events, and the datapath's throughput with the UI open vs closed.

    sudo scripts/bench ui        (or: sudo .venv/bin/python -m bench.ui --pods 200 --rate 500)

One two-node cluster of --pods pods (built-in pods without ports, plus an iperf3 client on
node-1 and server on node-2 behind a ClusterIP). A flow generator in the client pod opens
--rate new UDP flows a second through a ClusterIP to a pod on node-2 (each is a kept event on
both nodes: about 2 x rate flow records a second, measured from the flow files and printed).
It runs throughout, UI open or closed, so the only difference between the two is the UI:

  page ready       from `driver.get(URL)` until the map shows every pod and the flow table
                   has the stored flows (the last 200) (headless Chromium, Selenium, the
                   system chromedriver), median of --repeat page loads
  tab memory       the JS heap (performance.memory, --enable-precise-memory-info) and the
                   RSS of the tab's renderer process, right after ready and after --soak s of
                   the event stream
  datapath         iperf3 one stream cross-node via the ClusterIP, UI closed (no server, no
                   browser) and UI open (the server and the page streaming), alternated
                   --repeat times; medians and the ratio open/closed (issue 18: >= 0.95x)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from bench.common_cluster import BenchCluster, median, pod_doc, ratio, service_doc

NS = "bench"
IPERF_PORT, SINK_PORT = 5201, 9000
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--enable-precise-memory-info", "--window-size=1280,800"]

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


def config(pods: int) -> str:
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
    return "---\n".join(docs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


class UI:
    """A headless Chromium for the whole run, and `emunet ui` started (`open`) and stopped
    (`close`) per round: "closed" is no server and the tab on about:blank, so a round does not
    also pay for a browser starting up (seconds of CPU on this machine)."""

    def __init__(self, c: BenchCluster) -> None:
        self.c, self.port = c, free_port()
        self.proc: subprocess.Popen | None = None
        self.driver: Any = None
        self.profile = tempfile.mkdtemp(prefix="emunet-bench-ui-")
        self.url = ""

    def __enter__(self) -> UI:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for f in [*FLAGS, f"--user-data-dir={self.profile}"]:
            opts.add_argument(f)
        self.driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"),
                                       options=opts)
        return self

    def open(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "emunet", "ui", "--port",
                                      str(self.port)], env=self.c.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.url = next((w for w in line.split() if w.startswith("http://")), "")
        if not self.url:
            raise RuntimeError(f"emunet ui did not print its URL: {line!r}")

    def close(self) -> None:
        self.driver.get("about:blank")
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def load(self, pods: int) -> float:
        """Seconds from navigation until every pod is on the map and flows are listed."""
        d = self.driver
        d.get("about:blank")
        t0 = time.monotonic()
        d.get(self.url)
        deadline = t0 + 120
        while time.monotonic() < deadline:
            n, rows = d.execute_script(
                "return [document.querySelectorAll('#map g.pod').length,"
                " document.querySelectorAll('#flows tbody tr').length"
                " * (document.body.dataset.flowsLoaded === '1')];")
            if n >= pods and rows > 0:
                return time.monotonic() - t0
            time.sleep(0.02)
        raise RuntimeError(f"the page did not show {pods} pods within 120 s")

    def memory(self) -> dict[str, float]:
        heap = self.driver.execute_script("return performance.memory.usedJSHeapSize;")
        rss = 0
        for proc in Path("/proc").iterdir():  # the tab's renderer: ours by its profile dir
            try:
                cmd = (proc / "cmdline").read_bytes()
                if b"--type=renderer" in cmd and self.profile.encode() in cmd:
                    for line in (proc / "status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            rss = max(rss, int(line.split()[1]) * 1024)
            except OSError:
                continue
        return {"js_heap_mb": heap / 2**20, "renderer_rss_mb": rss / 2**20}

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time so far of the UI server and of all the browser's processes."""
        tick = os.sysconf("SC_CLK_TCK")
        out = {"server": 0.0, "browser": 0.0}
        for proc in Path("/proc").iterdir():
            try:
                if not proc.name.isdigit():
                    continue
                if self.proc is not None and int(proc.name) == self.proc.pid:
                    who = "server"
                elif self.profile.encode() in (proc / "cmdline").read_bytes():
                    who = "browser"
                else:
                    continue
                f = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                out[who] += (int(f[11]) + int(f[12])) / tick
            except (OSError, ValueError, IndexError):
                continue
        return out

    def __exit__(self, *exc: object) -> None:
        try:
            self.close()
        finally:
            self.driver.quit()
            shutil.rmtree(self.profile, ignore_errors=True)


def run(a: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"pods": a.pods, "rate": a.rate, "repeat": a.repeat,
                           "seconds": a.seconds}
    with BenchCluster("bui", config(a.pods), timeout=600) as c:
        res["up_s"] = round(c.up_seconds, 1)
        gen = subprocess.Popen(["ip", "netns", "exec", c.netns(NS, "client"), sys.executable,
                                "-c", GENERATOR, cluster_ip(c, "sink"), str(SINK_PORT),
                                str(a.rate)])
        try:
            time.sleep(1)
            res["records_per_s"] = round(record_rate(c.tmp / "run", 3), 0)
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
            gen.send_signal(signal.SIGTERM)
            gen.wait(10)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=200)
    ap.add_argument("--rate", type=float, default=500, help="new UDP flows a second (each "
                    "makes a record on both nodes: about twice as many records)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each iperf3 run")
    ap.add_argument("--soak", type=float, default=30.0, help="seconds of streaming before the "
                    "second memory reading")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds before each iperf3 run")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    res = run(a)
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
