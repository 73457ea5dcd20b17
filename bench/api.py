"""The Kubernetes API server under load: list, watch fan-out and bulk apply with 2,000 pods.

    sudo scripts/bench api        (or: sudo .venv/bin/python -m bench.api --pods 2000)

One emunet cluster of --nodes nodes (4) and --pods pods (2,000 built-in pods without ports, so
no process and no socket per pod: what is measured is the API, not the workloads), brought up
from a generated config. Each figure is the median of --repeat (5) runs, beside the same
operation answered from the state file by the emunet CLI in the same run (the baseline):

  kubectl get pods -A            wall time of the real kubectl (Table list), vs `emunet get pods -A`
  GET /api/v1/pods               requests/s from one Python client over keep-alive, as JSON and
                                 as a Table, vs `emunet get pods -A [-o json]` per second
  watch fan-out                  20 watchers of all pods (one connection each); one pod's label
                                 changed by a strategic-merge PATCH (what `kubectl label` sends);
                                 time from the PATCH to each watcher's MODIFIED event, p50 / max,
                                 vs `emunet label` of the same pod (the CLI's write, answered
                                 once published)
  apply of 500 objects           `kubectl apply -f` of one file of 500 Services (selecting no
                                 pod) vs `emunet apply -f` of the same file; each is deleted
                                 again (untimed) before the next. kubectl sends one write per
                                 object, each a publish to every agent, proxy, DNS and the API
                                 (about 5 s apiece with 2,000 pods on a shared 2-core VM: 500
                                 objects take some 40 minutes), so its runs are --apply-repeat
                                 (1), the CLI's --repeat; --objects 50 for a quick figure
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.common_cluster import BenchCluster, median, percentile, ratio

NS = "bench"
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
LABEL = "bench-mark"


def pod_cidr(i: int) -> str:
    """Node i's (1-based) pod range: a /22 each (1,022 pods), inside the default 10.42.0.0/16
    and clear of the /24s a node without a podCIDR would get."""
    return f"10.42.{4 * i}.0/22"


def config(nodes: int, pods: int) -> str:
    """`pods` pods in namespace bench, spread over `nodes` by the scheduler; the API server on
    a free port (several clusters share the machine)."""
    node_list = "".join(f"    - {{name: node-{i}, podCIDR: {pod_cidr(i)}}}\n"
                        for i in range(1, nodes + 1))
    docs = ["apiVersion: emunet/v1alpha1\nkind: Cluster\nmetadata: {name: api}\nspec:\n"
            f"  apiServer: {{port: 0}}\n  nodes:\n{node_list}",
            f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n"]
    docs += [f"apiVersion: v1\nkind: Pod\nmetadata: {{name: pod-{i}, namespace: {NS}, "
             f"labels: {{app: app-{i % 20}}}}}\nspec:\n  containers:\n"
             "    - {name: main, image: emunet/builtin}\n" for i in range(pods)]
    return "---\n".join(docs)


def services_file(n: int) -> str:
    """`n` ClusterIP Services in namespace bench that select no pod (so applying them
    changes no agent's endpoints, only the objects and the ClusterIP table)."""
    return "---\n".join(
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: bulk-{i}, namespace: {NS}}}\n"
        f"spec:\n  selector: {{app: nobody-{i}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
        for i in range(n))


def api_port(kubeconfig_text: str) -> int:
    m = re.search(r"server: http://127\.0\.0\.1:(\d+)", kubeconfig_text)
    if not m:
        raise RuntimeError("no http://127.0.0.1:PORT server in the kubeconfig")
    return int(m.group(1))


def table_rows(out: str) -> int:
    """Data rows of a kubectl/emunet table (the header line is not one)."""
    lines = [line for line in out.splitlines() if line.strip()]
    return max(0, len(lines) - 1)


def spread(latencies: list[float]) -> dict[str, float]:
    """p50 and max of one change's arrival times at the watchers."""
    return {"p50": percentile(latencies, 50), "max": max(latencies)}


def kubectl_bin() -> str:
    """$EMUNET_TEST_KUBECTL, the machine's kubectl, else the venv's (scripts/setup --test)."""
    found = (os.environ.get("EMUNET_TEST_KUBECTL") or shutil.which("kubectl")
             or str(Path(sys.executable).parent / "kubectl"))
    if not os.access(found, os.X_OK):
        raise RuntimeError("no kubectl: run `sudo scripts/setup --test`")
    return found


def timed(cmd: list[str], env: dict[str, str], timeout: float = 600) -> tuple[float, str]:
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... exited {p.returncode}: {p.stderr[-2000:]}")
    return dt, p.stdout


class Client:
    """One keep-alive HTTP/1.1 connection to the API server."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> bytes:
        self.conn.request(method, path, body=body, headers=headers or {})
        r = self.conn.getresponse()
        data = r.read()
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:500]!r}")
        return data


def throughput(port: int, accept: str | None, expect: int, seconds: float) -> float:
    """Requests/s of GET /api/v1/pods for `seconds` (at least 3 requests) on one connection."""
    c = Client(port)
    hdr = {"Accept": accept} if accept else {}
    n, t0 = 0, time.monotonic()
    while n < 3 or time.monotonic() - t0 < seconds:
        doc = json.loads(c.call("GET", "/api/v1/pods", headers=hdr))
        got = len(doc["rows"] if accept else doc["items"])
        if got != expect:
            raise RuntimeError(f"GET /api/v1/pods answered {got} pods, expected {expect}")
        n += 1
    return n / (time.monotonic() - t0)


class Watchers:
    """`n` watches of all pods from one resourceVersion; each records when it saw pod
    bench/`pod` MODIFIED with label LABEL=value, per value."""

    def __init__(self, port: int, n: int, rv: str, pod: str) -> None:
        self.seen: list[dict[str, float]] = [{} for _ in range(n)]
        self.cond = threading.Condition()
        self.ready = threading.Barrier(n + 1, timeout=60)
        self.conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=300)
                      for _ in range(n)]
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i, rv, pod), daemon=True)
                        for i in range(n)]
        for t in self.threads:
            t.start()
        self.ready.wait()  # every watch answered its headers: subscribed before the change

    def _run(self, i: int, rv: str, pod: str) -> None:
        conn = self.conns[i]
        try:
            conn.request("GET", f"/api/v1/pods?watch=1&resourceVersion={rv}"
                                "&timeoutSeconds=600")
            r = conn.getresponse()
            self.ready.wait()
            while line := r.readline():
                ev = json.loads(line)
                md = ev["object"]["metadata"]
                if ev["type"] == "MODIFIED" and (md.get("namespace"), md["name"]) == (NS, pod):
                    value = (md.get("labels") or {}).get(LABEL)
                    with self.cond:
                        self.seen[i].setdefault(value, time.monotonic())
                        self.cond.notify_all()
        except (OSError, http.client.HTTPException, ValueError, threading.BrokenBarrierError
                ) as e:
            with self.cond:
                self.errors.append(f"watcher {i}: {type(e).__name__}: {e}")
                self.cond.notify_all()

    def arrivals(self, value: str, timeout: float) -> list[float]:
        """When each watcher saw `value` (waits until all have, or raises)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(value in s for s in self.seen):
                if self.errors or not self.cond.wait(max(0.0, deadline - time.monotonic())):
                    missing = sum(value not in s for s in self.seen)
                    raise RuntimeError(f"{missing} watchers never saw {LABEL}={value} "
                                       f"{self.errors[:3]}")
            return [s[value] for s in self.seen]

    def close(self) -> None:
        for c in self.conns:
            c.close()


def measure_fanout(c: BenchCluster, port: int, watchers: int, repeat: int, log) -> dict:
    client = Client(port)
    pod = "pod-0"
    path = f"/api/v1/namespaces/{NS}/pods/{pod}"
    rv = json.loads(client.call("GET", path))["metadata"]["resourceVersion"]
    w = Watchers(port, watchers, rv, pod)
    runs, writes = [], []
    try:
        for r in range(repeat + 1):  # run 0 warms up (first event through each stream)
            value = f"r{r}"
            body = json.dumps({"metadata": {"labels": {LABEL: value}}}).encode()
            t0 = time.monotonic()
            client.call("PATCH", path, body,
                        {"Content-Type": "application/strategic-merge-patch+json"})
            wrote = time.monotonic() - t0
            lat = [t - t0 for t in w.arrivals(value, 120)]
            if r:
                runs.append(spread(lat))
                writes.append(wrote)
                log(f"  watch fan-out {r}: PATCH {wrote:.3f}s, p50 {runs[-1]['p50']:.3f}s "
                    f"max {runs[-1]['max']:.3f}s")
    finally:
        w.close()
    cli = [timed([sys.executable, "-m", "emunet", "label", "pod", pod, "-n", NS,
                  f"bench-cli=r{r}", "--overwrite"], c.env)[0] for r in range(repeat)]
    return {"watchers": watchers, "p50_s": median([x["p50"] for x in runs]),
            "max_s": median([x["max"] for x in runs]), "patch_s": median(writes),
            "emunet_label_s": median(cli), "runs": runs}


def measure_apply(c: BenchCluster, kubectl: list[str], kenv: dict[str, str], n: int,
                  repeat: int, kubectl_repeat: int, log) -> dict:
    f = c.tmp / f"services-{n}.yaml"
    f.write_text(services_file(n))
    emunet = [sys.executable, "-m", "emunet"]
    k_runs, e_runs = [], []
    for r in range(max(repeat, kubectl_repeat)):
        if r < kubectl_repeat:
            dt, out = timed([*kubectl, "apply", "-f", str(f)], kenv, timeout=3600)
            if out.count(" created") != n:
                raise RuntimeError(f"kubectl apply created {out.count(' created')} of {n}")
            k_runs.append(dt)
            log(f"  kubectl apply -f {n} objects {r + 1}: {dt:.2f}s")
            timed([*emunet, "delete", "-f", str(f)], c.env)
        if r < repeat:
            e_runs.append(timed([*emunet, "apply", "-f", str(f)], c.env)[0])
            timed([*emunet, "delete", "-f", str(f)], c.env)
            log(f"  emunet apply -f {n} objects {r + 1}: {e_runs[-1]:.2f}s")
    return {"objects": n, "kubectl_s": median(k_runs), "emunet_s": median(e_runs),
            "kubectl_runs": k_runs, "emunet_runs": e_runs}


def run(nodes: int, pods: int, watchers: int, objects: int, repeat: int, seconds: float,
        kubectl_apply_repeat: int = 1,
        log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict:
    res: dict = {"nodes": nodes, "pods": pods, "repeat": repeat,
                 "kubectl_apply_repeat": kubectl_apply_repeat}
    home = Path(tempfile.mkdtemp(prefix="emunet-bench-api-home-"))
    try:
        log(f"  up: {nodes} nodes, {pods} pods")
        with BenchCluster("eap", config(nodes, pods), timeout=120 + pods) as c:
            res["up_s"] = c.up_seconds
            kcfg = c.tmp / "run" / "kubeconfig"
            port = api_port(kcfg.read_text())
            kenv = {"PATH": os.environ["PATH"], "HOME": str(home), "KUBECONFIG": str(kcfg)}
            kubectl = [kubectl_bin()]
            emunet = [sys.executable, "-m", "emunet"]
            total = table_rows(c.emunet("get", "pods", "-A"))
            res["listed_pods"] = total
            log(f"  up in {c.up_seconds:.1f}s; {total} pods listed; API on port {port}")
            timed([*kubectl, "get", "pods", "-A"], kenv)  # warm-up: discovery cache
            k, e = [], []
            for _ in range(repeat):
                dt, out = timed([*kubectl, "get", "pods", "-A"], kenv)
                if table_rows(out) != total:
                    raise RuntimeError(f"kubectl listed {table_rows(out)} pods, not {total}")
                k.append(dt)
                e.append(timed([*emunet, "get", "pods", "-A"], c.env)[0])
            res["get"] = {"kubectl_s": median(k), "emunet_s": median(e), "kubectl_runs": k,
                          "emunet_runs": e}
            log(f"  kubectl get pods -A {median(k):.3f}s, emunet {median(e):.3f}s")
            for form, accept, cli in (("json", None, ["-o", "json"]),
                                      ("table", TABLE_ACCEPT, [])):
                rps = [throughput(port, accept, total, seconds) for _ in range(repeat)]
                cli_s = [timed([*emunet, "get", "pods", "-A", *cli], c.env)[0]
                         for _ in range(repeat)]
                res[f"list_{form}"] = {"rps": median(rps), "emunet_per_s": 1 / median(cli_s),
                                       "runs": rps}
                log(f"  GET /api/v1/pods ({form}): {median(rps):.2f} req/s")
            res["watch"] = measure_fanout(c, port, watchers, repeat, log)
            res["apply"] = measure_apply(c, kubectl, kenv, objects, repeat,
                                         kubectl_apply_repeat, log)
        res["down_s"] = c.down_seconds
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return res


def report(res: dict) -> str:
    g, lj, lt, w, a = res["get"], res["list_json"], res["list_table"], res["watch"], res["apply"]
    n = res["listed_pods"]
    rows = [
        (f"kubectl get pods -A ({n} rows), s", g["kubectl_s"], "emunet get pods -A",
         g["emunet_s"]),
        ("GET /api/v1/pods as JSON, req/s", lj["rps"], "emunet get pods -A -o json, /s",
         lj["emunet_per_s"]),
        ("GET /api/v1/pods as Table, req/s", lt["rps"], "emunet get pods -A, /s",
         lt["emunet_per_s"]),
        (f"watch fan-out to {w['watchers']}: p50, s", w["p50_s"], "emunet label pod, s",
         w["emunet_label_s"]),
        (f"watch fan-out to {w['watchers']}: max, s", w["max_s"], "emunet label pod, s",
         w["emunet_label_s"]),
        ("  (the PATCH itself, s)", w["patch_s"], "emunet label pod, s", w["emunet_label_s"]),
        (f"kubectl apply -f {a['objects']} Services, s", a["kubectl_s"],
         "emunet apply -f (same file)", a["emunet_s"]),
        ("  (kubectl, per object, s)", a["kubectl_s"] / a["objects"],
         "emunet, per object", a["emunet_s"] / a["objects"]),
    ]
    lines = [f"{res['nodes']} nodes, {n} pods; up {res['up_s']:.1f}s, down "
             f"{res['down_s']:.1f}s; medians of {res['repeat']} (kubectl apply: "
             f"{res['kubectl_apply_repeat']})",
             f"{'':40} {'API':>9}   {'baseline (state file, same run)':32} {'':>9} {'ratio':>7}"]
    for label, api, base_label, base in rows:
        lines.append(f"{label:40} {api:9.3f}   {base_label:32} {base:9.3f} "
                     f"{ratio(api, base):6.2f}x")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench.api", description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--pods", type=int, default=2000)
    ap.add_argument("--watchers", type=int, default=20)
    ap.add_argument("--objects", type=int, default=500, help="Services in the applied file")
    ap.add_argument("--repeat", type=int, default=5, help="runs per figure (median)")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of a throughput run")
    ap.add_argument("--apply-repeat", type=int, default=1, help="runs of kubectl apply -f")
    ap.add_argument("--json", type=Path, help="write the results here")
    a, _ = ap.parse_known_args()  # scripts/bench passes every section the same options
    res = run(a.nodes, a.pods, a.watchers, a.objects, max(1, a.repeat), a.seconds,
              max(1, a.apply_repeat))
    print(report(res))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
