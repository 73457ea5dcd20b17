"""Pure-pipeline cost per packet, the full pipeline (fast path off: what every packet paid
before emunet.datapath.fastpath) against the established fast path, in the same run.

Rows (issue 16): an established packet client -> ClusterIP through DNAT + VXLAN encap (node-1),
its reply coming back over VXLAN through decap + reverse NAT (node-1), the forward packet's
decap + deliver on the backend's node (node-2), and a new connection's SYN through DNAT, egress
policy and encap (node-1); and the three established rows over IPv6 in the same (dual-stack)
cluster. The datapath is the agent's (`ObservedDatapath`: the event hook on);
`--plain` measures the bare `Datapath`. Each figure is the minimum of 5 runs, a run's figure
the fastest chunk of 1,000 packets (500 SYNs) among its N (a shared machine preempts us: the
minimum is what the code costs, as bench/observe.py measures), the modes alternating so a load
spike hits both. Pure: no root, no sockets.

Both builds of the hot modules (emunet.native) in the same run, when the tree has a compiled
one: each run is a child process per build (`EMUNET_PURE=1` for the Python sources), the builds
alternating run by run; the table shows each row pure and compiled, and their ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The repo root first, also when run as a script: this tree's emunet and its test helpers.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scapy.layers.inet import IP, TCP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

from emunet import native  # noqa: E402
from emunet.config import load_config_text  # noqa: E402
from emunet.datapath import Datapath, Encap, NodeTables, Send  # noqa: E402
from emunet.observe.hook import ObservedDatapath  # noqa: E402
from emunet.packets import U16  # noqa: E402
from tests.unit.dualstack import VIP6, make_dual  # noqa: E402
from tests.unit.pipeline_pair import BLOG_CLUSTER, WEB_FROM_CLIENT, make_state, pod  # noqa: E402

GW1, GW2 = "0a:58:0a:2a:01:01", "0a:58:0a:2a:02:01"
VIP = "10.43.0.11"
RUNS = 5
N = 20_000
N_SYN = 4_000
CHUNK = 1000
# egress of the client and ingress of the web pods: the SYN row pays a policy decision
POLICY = BLOG_CLUSTER + """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-egress, namespace: blog}
spec:
  podSelector: {matchLabels: {role: client}}
  policyTypes: [Egress]
  egress:
    - to: [{podSelector: {matchLabels: {app: web}}}]
      ports: [{port: 8080}]
---
""" + WEB_FROM_CLIENT


def _state():
    st = make_dual(make_state())  # dual-stack: the IPv6 rows use the same cluster
    st.policies = {p.key: p for p in load_config_text(POLICY, "bench.yaml").network_policies}
    c = pod(st, "client")
    c.pod = dataclasses.replace(c.pod, labels={"role": "client"})
    return st


def _tcp(src, dst_ip, dst_mac, sport, dport, flags, size=64) -> bytes:
    ip = IPv6(src=src.ip6, dst=dst_ip) if ":" in dst_ip else IP(src=src.ip, dst=dst_ip)
    return bytes(Ether(src=src.mac, dst=dst_mac) / ip /
                 TCP(sport=sport, dport=dport, flags=flags, seq=1, ack=1) / (b"x" * size))


def _pair(st, cls, fast: bool, six: bool = False
          ) -> tuple[Datapath, Datapath, dict[str, bytes]]:
    """node-1 and node-2 with client -> VIP:80 (web-0 on node-2) established, and the
    frames each row feeds; `six`: over IPv6 (VIP6, flannel-v6's underlay addresses)."""
    n1 = cls(NodeTables.from_state(st, "node-1"), random.Random(1), fastpath=fast)
    n2 = cls(NodeTables.from_state(st, "node-2"), random.Random(1), fastpath=fast)
    u1, u2 = (st.node(n).underlay_ip6 if six else st.node(n).underlay_ip
              for n in ("node-1", "node-2"))
    c, w = pod(st, "client"), pod(st, "web-0")
    vip, cip = (VIP6, c.ip6) if six else (VIP, c.ip)
    now = 1.0

    def fwd(flags: str) -> bytes:
        e = n1.process(_tcp(c, vip, GW1, 40000, 80, flags), c.host_ifname, now)[-1]
        assert type(e) is Encap, e  # after the policy verdicts of the SYN
        s = n2.process_underlay(e.payload, u1, now)[-1]
        assert type(s) is Send and s.port == w.host_ifname, s
        return e.payload

    def back(flags: str) -> bytes:
        [e] = n2.process(_tcp(w, cip, GW2, 8080, 40000, flags), w.host_ifname, now)
        assert type(e) is Encap, e
        s = n1.process_underlay(e.payload, u2, now)[-1]
        assert type(s) is Send and s.port == c.host_ifname, s
        return e.payload

    fwd("S")
    back("SA")
    fwd("A")
    frames = {"fwd_frame": _tcp(c, vip, GW1, 40000, 80, "PA"), "fwd_payload": fwd("PA"),
              "back_payload": back("PA")}
    return n1, n2, frames


def _per_packet(call, args: tuple, n: int) -> float:
    """µs per packet: the fastest chunk of CHUNK calls among n (see the module doc)."""
    best = float("inf")
    for _ in range(n // CHUNK):
        t0 = time.perf_counter()
        for _ in range(CHUNK):
            call(*args)
        best = min(best, time.perf_counter() - t0)
    return best / CHUNK * 1e6


def _syn(n1, frames: list[bytes], port: str) -> float:
    """The same for new connections: every SYN another source port."""
    best = float("inf")
    for i in range(0, len(frames), CHUNK // 2):
        chunk = frames[i:i + CHUNK // 2]
        t0 = time.perf_counter()
        for f in chunk:
            n1.process(f, port, 2.0)
        best = min(best, (time.perf_counter() - t0) / len(chunk))
    return best * 1e6


ROWS = ("established_dnat_encap", "reply_revnat_decap", "decap_deliver",
        "new_syn_dnat_policy_encap", "ipv6_established_dnat_encap", "ipv6_reply_revnat_decap",
        "ipv6_decap_deliver")


def run(plain: bool = False, runs: int = RUNS) -> dict:
    st = _state()
    cls = Datapath if plain else ObservedDatapath
    c = pod(st, "client")
    u1, u2 = st.node("node-1").underlay_ip, st.node("node-2").underlay_ip
    base = _tcp(c, VIP, GW1, 1, 80, "S")
    syns = [base[:34] + U16.pack(10000 + i) + base[36:] for i in range(N_SYN)]
    res: dict[str, float] = {}
    for _ in range(runs):
        for mode, fast in (("pipeline", False), ("fastpath", True)):
            n1, n2, fr = _pair(st, cls, fast)
            rows = {
                "established_dnat_encap": _per_packet(
                    n1.process, (fr["fwd_frame"], c.host_ifname, 2.0), N),
                "reply_revnat_decap": _per_packet(
                    n1.process_underlay, (fr["back_payload"], u2, 2.0), N),
                "decap_deliver": _per_packet(
                    n2.process_underlay, (fr["fwd_payload"], u1, 2.0), N),
                "new_syn_dnat_policy_encap": _syn(_pair(st, cls, fast)[0], syns,
                                                  c.host_ifname),
            }
            n1, n2, fr = _pair(st, cls, fast, six=True)
            v1, v2 = st.node("node-1").underlay_ip6, st.node("node-2").underlay_ip6
            rows.update({
                "ipv6_established_dnat_encap": _per_packet(
                    n1.process, (fr["fwd_frame"], c.host_ifname, 2.0), N),
                "ipv6_reply_revnat_decap": _per_packet(
                    n1.process_underlay, (fr["back_payload"], v2, 2.0), N),
                "ipv6_decap_deliver": _per_packet(
                    n2.process_underlay, (fr["fwd_payload"], v1, 2.0), N),
            })
            for k, v in rows.items():
                key = f"{k}_{mode}_us"
                res[key] = min(res.get(key, v), v)
    for k in ROWS:
        res[f"{k}_speedup"] = res[f"{k}_pipeline_us"] / res[f"{k}_fastpath_us"]
    return res


def _child(build: str, plain: bool) -> dict:
    """One run in a new process on `build` ("pure" or "compiled")."""
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        env = {**os.environ, native.ENV_PURE: "1" if build == "pure" else ""}
        argv = [sys.executable, "-m", "bench.pipeline", "--runs", "1", "--json", f.name,
                "--quiet", *(["--plain"] if plain else [])]
        subprocess.run(argv, env=env, check=True, cwd=Path(__file__).resolve().parents[1])
        res = json.loads(Path(f.name).read_text())
    assert res["build"].startswith(build), (build, res["build"])  # the build asked for ran
    return res


def run_builds(plain: bool) -> dict[str, dict]:
    """Both builds, alternating run by run: build -> min over its runs."""
    out: dict[str, dict] = {"pure": {}, "compiled": {}}
    for _ in range(RUNS):
        for build in out:
            for k, v in _child(build, plain).items():
                if isinstance(v, float):
                    out[build][k] = min(out[build].get(k, v), v)
    for res in out.values():
        for k in ROWS:
            res[f"{k}_speedup"] = res[f"{k}_pipeline_us"] / res[f"{k}_fastpath_us"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plain", action="store_true", help="the bare Datapath, no event hook")
    ap.add_argument("--this-build", action="store_true",
                    help="only the build this process imports (EMUNET_PURE=1: pure Python)")
    ap.add_argument("--runs", type=int, default=RUNS, help=argparse.SUPPRESS)
    ap.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    a, _rest = ap.parse_known_args()  # scripts/bench passes its options to every section
    if a.this_build or a.quiet or not native.decision()[0]:
        res = run(a.plain, a.runs)
        res["build"] = native.running()
        if not a.quiet:
            print(f"  datapath: {res['build']}")
            print(f"  {'per packet, µs (min of 5)':<28} {'pipeline':>9} {'fast path':>9} "
                  f"{'ratio':>7}")
            for k in ROWS:
                print(f"  {k:<28} {res[k + '_pipeline_us']:9.2f} "
                      f"{res[k + '_fastpath_us']:9.2f} {res[k + '_speedup']:6.2f}x")
        if a.json:
            a.json.write_text(json.dumps(res, indent=2))
        return 0
    both = run_builds(a.plain)
    p, c = both["pure"], both["compiled"]
    print(f"  per packet, µs (min of {RUNS})      pure Python      "
          f"{native.decision()[1]}")
    print(f"  {'':<28} {'pipeline':>9} {'fast path':>9}  {'pipeline':>9} {'fast path':>9}"
          f"  {'compiled/pure':>13}")
    for k in ROWS:
        print(f"  {k:<28} {p[k + '_pipeline_us']:9.2f} {p[k + '_fastpath_us']:9.2f}  "
              f"{c[k + '_pipeline_us']:9.2f} {c[k + '_fastpath_us']:9.2f}  "
              f"{p[k + '_pipeline_us'] / c[k + '_pipeline_us']:5.2f}x "
              f"{p[k + '_fastpath_us'] / c[k + '_fastpath_us']:5.2f}x")
    print("  (compiled/pure: how many times faster the compiled build is, pipeline and fast path)")
    if a.json:
        a.json.write_text(json.dumps(both, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
