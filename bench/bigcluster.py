"""Scale (issue 17): `emunet up` of 1,000 and 2,000 pods, and what a running big cluster costs.

    sudo scripts/bench bigcluster     (or: sudo .venv/bin/python -m bench.bigcluster --sizes 2k)

Sizes (every node `datapath: emunet`; built-in HTTP servers labelled app=app-<i % Services>,
each Service selects one label; the NetworkPolicies each admit the whole namespace to one
label's pods on 8080, so every probe below is still allowed, and each agent compiles them):

  base   10 nodes,   200 pods,  20 Services               the rate baseline (same run)
  1k     10 nodes, 1,000 pods, 100 Services               up <= 30 s
  2k     20 nodes, 2,000 pods, 200 Services, 100 policies up <= 60 s, memory <= 1.5 GB,
                                                          down <= 30 s
  5k     50 nodes, 5,000 pods, 500 Services, 100 policies the stretch: up <= 180 s,
                                                          memory <= 3 GB

Per size: `up` and `down` time, pods per second during `up` (and its ratio to base's: >= 0.8x
at 2k), the resident memory of every cluster process, the CPU all of them use idle over
--idle seconds (< 5% of one core at 2k), a probe of --pairs random (client pod, Service)
pairs over HTTP through the ClusterIP, the time `apply` of one new pod takes until it is Ready
and in its Service's endpoints (<= 2 s), the time from applying a deny-all NetworkPolicy
for one Service's pods (a label no allow policy selects: policies add up) until a probe to
them fails (<= 1 s), and the time `scale deployment --replicas 100` of a Deployment applied
with one replica takes until all 100 pods are Ready (<= 15 s).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import time
from pathlib import Path

from bench.common_cluster import BenchCluster, median, ratio

SIZES = {"base": (10, 200, 20, 0), "1k": (10, 1000, 100, 0), "2k": (20, 2000, 200, 100),
         "5k": (50, 5000, 500, 100)}
TARGETS = {"1k": {"up_s": 30.0}, "2k": {"up_s": 60.0, "rss_mb": 1536.0, "down_s": 30.0,
                                        "idle_cpu_pct": 5.0, "apply_pod_s": 2.0,
                                        "policy_s": 1.0, "scale_100_s": 15.0},
           "5k": {"up_s": 180.0, "rss_mb": 3072.0}}  # the stretch, reported
NS = "apps"


def config(nodes: int, pods: int, services: int, policies: int) -> str:
    from bench.lifecycle import config as lifecycle_config

    docs = [lifecycle_config(nodes, pods, services, "emunet")]
    for i in range(policies):
        docs.append("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: "
                    f"{{name: allow-{i}, namespace: {NS}}}\nspec:\n  podSelector: "
                    f"{{matchLabels: {{app: app-{i % services}}}}}\n  policyTypes: [Ingress]\n"
                    "  ingress:\n    - from: [{podSelector: {}}]\n"
                    "      ports: [{protocol: TCP, port: 8080}]\n")
    return "---\n".join(docs)


def http_get(netns: str, ip: str, port: int, timeout: float = 2.0) -> bool:
    """One HTTP GET from inside `netns`; True on a 200."""
    from emunet.host.netns import socket_in_netns

    s = socket_in_netns(netns, socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect((ip, port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
    finally:
        s.close()


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except (OSError, IndexError):
            pass
    return total / tick


def _state(c: BenchCluster):
    from emunet.state import store

    return store.read(c.tmp / "run" / "state.json")


def probe(c: BenchCluster, pairs: int, rng: random.Random) -> dict:
    st = _state(c)
    pods = [p for p in st.pods.values() if p.pod.namespace == NS]
    svcs = [s for s in st.services.values() if s.service.namespace == NS]
    ok, t0 = 0, time.monotonic()
    for _ in range(pairs):
        client, svc = rng.choice(pods), rng.choice(svcs)
        ok += http_get(client.netns, svc.cluster_ip, 80)
    return {"pairs": pairs, "ok": ok, "seconds": time.monotonic() - t0}


def apply_pod(c: BenchCluster, name: str = "newcomer") -> float:
    """`apply` of one pod labelled app=app-0 until it is Ready and in app-0's endpoints."""
    doc = c.tmp / f"{name}.yaml"
    doc.write_text(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {NS}, "
                   "labels: {app: app-0}}\nspec:\n  containers:\n    - name: web\n"
                   "      image: emunet/builtin\n      ports: [{containerPort: 8080}]\n")
    t0 = time.monotonic()
    c.emunet("apply", "-f", str(doc))
    while time.monotonic() - t0 < 30:
        st = _state(c)
        ps = st.pods.get((NS, name))
        if ps is not None and ps.ready and any(
                e.ip == ps.ip and e.ready for eps in st.endpoints((NS, "app-0")).values()
                for e in eps):
            return time.monotonic() - t0
        time.sleep(0.02)
    return float("nan")


def policy_change(c: BenchCluster) -> float:
    """From applying a deny-all ingress policy for one label's pods until a probe to one
    fails. The label is one no `allow-*` policy selects: policies are additive, so a deny-all
    beside an allow for the same pods changes nothing (NetworkPolicy API)."""
    st = _state(c)
    # labels an allow or an earlier run's deny selects (each run denies a new label)
    allowed = {v for p in st.policies.values() for _k, v in p.pod_selector.match_labels}
    app = next(f"app-{i}" for i in range(len(st.services), -1, -1)
               if f"app-{i}" not in allowed and any(
                   p.pod.labels.get("app") == f"app-{i}" for p in st.pods.values()))
    target = next(p for p in st.pods.values() if p.pod.labels.get("app") == app)
    client = next(p for p in st.pods.values() if p.pod.namespace == NS
                  and p.node != target.node)
    if not http_get(client.netns, target.ip, 8080):
        raise RuntimeError(f"{client.pod.name} cannot reach {target.pod.name} before the policy")
    doc = c.tmp / "deny.yaml"
    doc.write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: "
                   f"{{name: deny-{app}, namespace: {NS}}}\nspec:\n  podSelector: "
                   f"{{matchLabels: {{app: {app}}}}}\n  policyTypes: [Ingress]\n")
    t0 = time.monotonic()
    c.emunet("apply", "-f", str(doc))
    while time.monotonic() - t0 < 30:
        if not http_get(client.netns, target.ip, 8080, timeout=0.2):
            return time.monotonic() - t0
    return float("nan")


def scale_deployment(c: BenchCluster, replicas: int = 100) -> float:
    """A Deployment of built-in servers applied with one replica (waited Ready), then
    `emunet scale deployment --replicas N`: seconds until N of its pods are Ready."""
    doc = c.tmp / "scaled.yaml"
    doc.write_text(f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: scaled, "
                   f"namespace: {NS}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: "
                   "{app: scaled}}\n  template:\n    metadata: {labels: {app: scaled}}\n"
                   "    spec:\n      containers:\n        - name: web\n"
                   "          image: emunet/builtin\n          ports: [{containerPort: 8080}]\n")

    def ready() -> int:
        return sum(1 for p in _state(c).pods.values()
                   if p.pod.labels.get("app") == "scaled" and p.ready)

    c.emunet("apply", "-f", str(doc))
    t0 = time.monotonic()
    while ready() < 1:
        if time.monotonic() - t0 > 60:
            raise RuntimeError("the one-replica Deployment is not Ready after 60 s")
        time.sleep(0.05)
    t0 = time.monotonic()
    c.emunet("scale", "deployment", "scaled", "--replicas", str(replicas), "-n", NS)
    while time.monotonic() - t0 < 120:
        if ready() >= replicas:
            return time.monotonic() - t0
        time.sleep(0.1)
    return float("nan")


def once(size: str, idle: float, pairs: int, changes: int, rng: random.Random, log) -> dict:
    nodes, pods, services, policies = SIZES[size]
    with BenchCluster(f"bg{size}", config(nodes, pods, services, policies), timeout=900) as c:
        log(f"  {size}: up in {c.up_seconds:.1f}s; measuring")
        res = {"up_s": c.up_seconds, "pods_per_s": (pods + 1) / c.up_seconds,
               "rss_mb": c.rss_bytes() / 2**20, "processes": len(c.pids())}
        time.sleep(2)  # let the last publishes settle before idling
        pids = c.pids()
        a = cpu_seconds(pids)
        time.sleep(idle)
        res["idle_cpu_pct"] = 100 * (cpu_seconds(pids) - a) / idle
        res["probe"] = probe(c, pairs, rng)
        # --changes: several of each in this cluster (the median; one sample is noisy when
        # the machine is shared)
        res["apply_pod_runs"] = [apply_pod(c, f"newcomer-{i}") for i in range(changes)]
        res["policy_runs"] = [policy_change(c) for _ in range(changes)]
        res["apply_pod_s"] = median(res["apply_pod_runs"])
        res["policy_s"] = median(res["policy_runs"])
        res["scale_100_s"] = scale_deployment(c)
    res["down_s"] = c.down_seconds
    return res


def run(sizes: list[str], repeat: int, idle: float, pairs: int, log, changes: int = 1) -> dict:
    rng = random.Random(17)
    res: dict = {"sizes": {k: dict(zip(("nodes", "pods", "services", "policies"), SIZES[k],
                                       strict=True)) for k in sizes}}
    for size in sizes:
        runs = [once(size, idle, pairs, changes, rng, log) for _ in range(repeat)]
        for r in runs:
            log(f"  {size}: up {r['up_s']:.1f}s down {r['down_s']:.1f}s rss {r['rss_mb']:.0f} MB"
                f" idle CPU {r['idle_cpu_pct']:.1f}% probes {r['probe']['ok']}/"
                f"{r['probe']['pairs']} apply {r['apply_pod_s']:.2f}s policy "
                f"{r['policy_s']:.2f}s scale 1->100 {r['scale_100_s']:.1f}s (runs: apply "
                f"{' '.join(f'{x:.2f}' for x in r['apply_pod_runs'])}, policy "
                f"{' '.join(f'{x:.2f}' for x in r['policy_runs'])})")
        keys = [k for k in runs[0] if k not in ("probe", "apply_pod_runs", "policy_runs")]
        res[size] = {k: median([r[k] for r in runs]) for k in keys}
        res[size]["probe_ok"] = min(r["probe"]["ok"] for r in runs)
        res[size]["runs"] = runs
    if "base" in res and "2k" in res:
        res["rate_ratio_2k_vs_base"] = ratio(res["2k"]["pods_per_s"], res["base"]["pods_per_s"])
    return res


def report(res: dict) -> str:
    lines = []
    for size, s in res["sizes"].items():
        r, t = res[size], TARGETS.get(size, {})
        lines.append(f"{s['nodes']} nodes / {s['pods']} pods / {s['services']} Services / "
                     f"{s['policies']} policies:")
        for key, label in (("up_s", "up, s"), ("down_s", "down, s"),
                           ("pods_per_s", "pods per second during up"),
                           ("rss_mb", "memory of all processes, MB"),
                           ("idle_cpu_pct", "idle CPU, % of one core"),
                           ("apply_pod_s", "apply 1 pod -> Ready + endpoints, s"),
                           ("policy_s", "NetworkPolicy change enforced, s"),
                           ("scale_100_s", "scale 1 -> 100 replicas Ready, s")):
            target = t.get(key)
            verdict = "" if target is None else \
                f"  target <= {target:g}: {'ok' if r[key] <= target else 'MISSED'}"
            lines.append(f"  {label:40} {r[key]:9.2f}{verdict}")
        lines.append(f"  {'probes through Services (worst run)':40} {r['probe_ok']:>9}"
                     f" / {r['runs'][0]['probe']['pairs']}")
    if "rate_ratio_2k_vs_base" in res:
        q = res["rate_ratio_2k_vs_base"]
        lines.append(f"pods/s at 2,000 vs 200 pods: {q:.2f}x (target >= 0.8x: "
                     f"{'ok' if q >= 0.8 else 'MISSED'})")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench.bigcluster", description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="base,1k,2k",
                    help="comma-separated: base, 1k, 2k, 5k (the stretch)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per size (median)")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU sampling")
    ap.add_argument("--pairs", type=int, default=200, help="random pod -> Service probes")
    ap.add_argument("--changes", type=int, default=1,
                    help="pod applies and policy changes per cluster (their median)")
    ap.add_argument("--json", type=Path, help="write the results here")
    a, _ = ap.parse_known_args()  # scripts/bench passes every section the same options
    sizes = [s for s in a.sizes.split(",") if s]
    bad = [s for s in sizes if s not in SIZES]
    if bad:
        ap.error(f"unknown size(s) {', '.join(bad)}: use {', '.join(SIZES)}")
    res = run(sizes, max(1, a.repeat), a.idle, a.pairs,
              lambda m: print(m, file=sys.stderr, flush=True), max(1, a.changes))
    print(report(res))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
