"""`emunet up` / `emunet down` time and memory, for emunet nodes and kernel-mode nodes.

    sudo scripts/bench lifecycle      (or: sudo .venv/bin/python -m bench.lifecycle)

Two cluster sizes, each built from one generated config with every node `datapath: emunet`
and again with every node `datapath: kernel` (the baseline: the same namespaces, veths and
workloads, but Flannel-style kernel devices and nftables instead of node agents):

  small   2 nodes,   6 pods (plus CoreDNS), 3 Services    --repeat runs (median)
  large   4 nodes, 200 pods (plus CoreDNS), 20 Services   --repeat-large runs (median)

`up` is timed from the CLI's start until it returns (every pod Ready and DNS answering through
the datapath); `down` until everything is removed. Memory is the summed VmRSS of every process
the cluster runs (supervisor, node agents, DNS responder, their children), read after `up`.
Targets from issue 6: small up <= 3 s; large up <= 30 s, memory <= 1.5 GB, down <= 10 s.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.common_cluster import BenchCluster, median, ratio

SIZES = {"small": (2, 6, 3), "large": (4, 200, 20)}  # nodes, pods, Services
TARGETS = {"small": {"up_s": 3.0}, "large": {"up_s": 30.0, "rss_mb": 1536.0, "down_s": 10.0}}


def config(nodes: int, pods: int, services: int, datapath: str) -> str:
    """`pods` built-in HTTP servers spread over `nodes` by the scheduler, `services` in front."""
    node_list = "".join(f"    - {{name: node-{i}, datapath: {datapath}}}\n"
                        for i in range(1, nodes + 1))
    docs = ["apiVersion: emunet/v1alpha1\nkind: Cluster\nmetadata: {name: lifecycle}\n"
            f"spec:\n  nodes:\n{node_list}",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n"]
    for i in range(pods):
        docs.append(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: app-{i}, namespace: apps, "
                    f"labels: {{app: app-{i % services}}}}}\nspec:\n  containers:\n"
                    "    - name: web\n      image: emunet/builtin\n"
                    "      ports: [{containerPort: 8080}]\n")
    for s in range(services):
        docs.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: app-{s}, "
                    f"namespace: apps}}\nspec:\n  selector: {{app: app-{s}}}\n"
                    "  ports: [{port: 80, targetPort: 8080}]\n")
    return "---\n".join(docs)


def once(size: str, datapath: str) -> dict:
    nodes, pods, services = SIZES[size]
    tag = {"emunet": "elp", "kernel": "elk"}[datapath]
    with BenchCluster(tag, config(nodes, pods, services, datapath)) as c:
        rss = c.rss_bytes()
        nproc = len(c.pids())
    return {"up_s": c.up_seconds, "down_s": c.down_seconds, "rss_mb": rss / 2**20,
            "processes": nproc}


def run(repeat: int, repeat_large: int, log=lambda s: print(s, file=sys.stderr)) -> dict:
    res: dict = {"sizes": {k: {"nodes": n, "pods": p, "services": s}
                           for k, (n, p, s) in SIZES.items()}}
    for size, reps in (("small", repeat), ("large", repeat_large)):
        res[size] = {}
        for datapath in ("emunet", "kernel"):
            runs = []
            for _ in range(reps):
                runs.append(once(size, datapath))
                log(f"  {size} {datapath}: up {runs[-1]['up_s']:.2f}s down "
                    f"{runs[-1]['down_s']:.2f}s rss {runs[-1]['rss_mb']:.0f} MB")
            res[size][datapath] = {k: median([r[k] for r in runs]) for k in runs[0]}
            res[size][datapath]["runs"] = runs
    return res


def report(res: dict) -> str:
    lines = [f"{'':50} {'emunet':>9} {'kernel':>9} {'ratio':>7}  target (emunet)"]
    for size in ("small", "large"):
        n, p = res["sizes"][size]["nodes"], res["sizes"][size]["pods"]
        for key, label in (("up_s", "up, s"), ("down_s", "down, s"),
                           ("rss_mb", "memory of all processes, MB")):
            e, k = res[size]["emunet"][key], res[size]["kernel"][key]
            target = TARGETS[size].get(key)
            verdict = "" if target is None else (
                f"<= {target:g} {'ok' if e <= target else 'MISSED'}")
            lines.append(f"{f'{n} nodes / {p} pods: {label}':50} {e:9.2f} {k:9.2f} "
                         f"{ratio(e, k):6.2f}x  {verdict}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench.lifecycle", description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs of the small cluster")
    ap.add_argument("--repeat-large", type=int, default=1, help="runs of the large cluster")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    res = run(max(1, args.repeat), max(1, args.repeat_large))
    print(report(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
