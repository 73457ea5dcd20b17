"""The agent's receive rings end to end (issue 16 §4): request/response, ping and cross-node
TCP through emunet clusters with pod frames read from PACKET_MMAP rings (the default) and with
recv() (`EMUNET_RX_RING=0`), one cluster per variant, the variants alternated.

    sudo scripts/bench rings          (python -m bench.rings --rounds 2 --repeat 3)

Per cluster: the rr client of bench.datapath (connect/request/response/close through a
ClusterIP), ping p50/p99 to the echo pod, one iperf3 stream cross-node; medians of `--repeat`
runs of 3 s. `scripts/bench rxring` measures the reading itself, per frame, without a cluster.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common_cluster import median, percentile  # noqa: E402
from bench.datapath import NS, BenchCluster, _cluster_ips, _pod_ip, config, iperf, ping, rr  # noqa: E402


def one(ring: bool, repeat: int) -> dict[str, float]:
    os.environ["EMUNET_RX_RING"] = "1" if ring else "0"  # the agents inherit it
    with BenchCluster("ebr", config("emunet")) as c:
        c.run_in(c.netns(NS, "client"), "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1",
                 "net.ipv4.ip_local_port_range=1024 65535")
        cips, echo = _cluster_ips(c), _pod_ip(c, "echo")
        ping(c, echo, 20)
        rrs, p50, p99, cross = [], [], [], []
        for _ in range(repeat):
            rrs.append(rr(c, cips["echo"], 3.0))
            t = ping(c, echo, 200)
            p50.append(percentile(t, 50))
            p99.append(percentile(t, 99))
            cross.append(iperf(c, cips["iperf-remote"], 3.0))
    return {"rr": median(rrs), "p50": median(p50), "p99": median(p99), "cross": median(cross)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    a, _rest = ap.parse_known_args()  # scripts/bench passes its options to every section
    print(f"  {'variant':<10}{'rr /s':>10}{'ping p50 ms':>13}{'p99 ms':>9}{'cross Gbit/s':>14}")
    for _ in range(a.rounds):
        for ring in (True, False):
            r = one(ring, a.repeat)
            print(f"  {'ring' if ring else 'recv()':<10}{r['rr']:>10.0f}{r['p50']:>13.3f}"
                  f"{r['p99']:>9.3f}{r['cross']:>14.3f}", flush=True)
    os.environ.pop("EMUNET_RX_RING", None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
