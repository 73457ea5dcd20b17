"""NetworkPolicy cost per packet: 1 policy against 1,000, through the pure datapath (no root).

    sudo scripts/bench policy      (or: .venv/bin/python -m bench.policy --repeat 5)

The x/y/z model (9 pods, two nodes). Node-2's datapath is fed (a) new TCP connections (each SYN
a fresh source port: conntrack miss, so every packet takes the egress and ingress policy
lookups) and (b) packets of one established connection. Once with a single policy selecting the
destination, once with that policy plus 999 others (selecting other pods, and copies of rules
for the same pod). The issue's bar: throughput with 1,000 policies >= 0.9x with one, because
the compiled tables are dict lookups keyed by identity, not a rule list walked per packet.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

# The repo root first, also when run as a script: this tree's emunet and its test helpers
# (the package tests.unit).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emunet.datapath import Datapath, NodeTables  # noqa: E402
from tests.unit.netpol_cluster import state  # noqa: E402

TARGET = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: {ns}}}
spec:
  podSelector: {{matchLabels: {{pod: {pod}}}}}
  ingress:
    - from: [{{namespaceSelector: {{matchLabels: {{ns: {peer}}}}}}}]
      ports: [{{port: 80}}]
---
"""


def policies(n: int) -> str:
    docs = [TARGET.format(name="target", ns="x", pod="a", peer="y")]
    for i in range(1, n):
        if i % 2:  # selects a pod that does not exist
            docs.append(TARGET.format(name=f"other-{i}", ns="z", pod=f"nobody-{i}", peer="x"))
        else:  # another rule for the same pod (additive; same answer)
            docs.append(TARGET.format(name=f"copy-{i}", ns="x", pod="a", peer="y"))
    return "".join(docs)


def run(n_policies: int, packets: int) -> dict[str, float]:
    st = state(policies(n_policies))
    dst = st.pods[("x", "a")]
    # a client in y on the same node: every new flow takes the ingress lookup on this node
    src = next(p for p in st.pods.values() if p.pod.namespace == "y" and p.node == dst.node)
    node = dst.node
    dp = Datapath(NodeTables.from_state(st, node), random.Random(1))
    gw = st.node(node).gateway_mac
    base = Ether(src=src.mac, dst=gw) / IP(src=src.ip, dst=dst.ip)
    syns = [bytes(base / TCP(sport=1024 + i, dport=80, flags="S")) for i in range(packets)]
    est = bytes(base / TCP(sport=999, dport=80, flags="A"))
    out = {}
    gc.collect()  # start both runs from a clean heap (building 1,000 policies leaves garbage)
    gc.freeze()  # and keep the policy objects out of the timed collections
    t0 = time.perf_counter()
    for i, f in enumerate(syns):
        dp.process(f, src.host_ifname, float(i))
    out["new_conn_pps"] = packets / (time.perf_counter() - t0)
    assert dp.counters["policy_allowed"] == packets, dp.counters  # every SYN was judged
    dp.process(est, src.host_ifname, 0.0)
    t0 = time.perf_counter()
    for _ in range(packets):
        dp.process(est, src.host_ifname, 1.0)
    out["established_pps"] = packets / (time.perf_counter() - t0)
    gc.unfreeze()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench.policy", description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--packets", type=int, default=20000)
    ap.add_argument("--json", type=Path, help="write the results here")
    a = ap.parse_args()
    runs: dict[int, list[dict[str, float]]] = {1: [], 1000: []}
    for _ in range(a.repeat):  # interleaved, so drifting machine load hits both alike
        for n in runs:
            runs[n].append(run(n, a.packets))
    res = {str(n): {k: statistics.median(r[k] for r in rs) for k in rs[0]}
           for n, rs in runs.items()}
    ratio = {k: res["1000"][k] / res["1"][k] for k in res["1"]}
    print(f"{'':<18}{'1 policy':>12}{'1000 policies':>15}{'ratio':>8}")
    for k in res["1"]:
        print(f"{k:<18}{res['1'][k]:>12.0f}{res['1000'][k]:>15.0f}{ratio[k]:>8.2f}")
    ok = all(r >= 0.9 for r in ratio.values())
    print(f"bar: 1000 policies >= 0.9x one: {'met' if ok else 'NOT met'} "
          f"(median of {a.repeat} runs of {a.packets} packets)")
    if a.json:
        a.json.write_text(json.dumps({"results": res, "ratio": ratio, "met": ok}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
