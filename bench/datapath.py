"""Datapath throughput and latency: emunet's Python datapath against Linux's, side by side.

    sudo scripts/bench datapath       (or: sudo .venv/bin/python -m bench.datapath --repeat 3)

The same two-node cluster is built twice from one config, once with both nodes `datapath:
emunet` and once with both `datapath: kernel` (emunet.host.kernelnode: a Flannel cni0 bridge and
flannel.1 VXLAN device, kube-proxy-style nftables DNAT; Linux forwards, pod veths keep their
offloads). The same clients then run on both, each figure the median of --repeat runs:

  tcp cross-node    iperf3, one stream, client on node-1 -> ClusterIP -> server on node-2,
                    a NetworkPolicy selecting the server (enforced by emunet only: Flannel
                    alone enforces none; k3s adds kube-router's controller for that)
  tcp same-node     iperf3, one stream, client -> ClusterIP -> server, all on node-1
  ping p50/p99      ICMP echo to the echo pod's IP (node-2), 10 ms apart
  tcp rr            transactions/s through the ClusterIP: one Python client in the client
                    pod doing connect, send 64 B, receive the echo, close, in a loop, against
                    a small Python echo server on node-2 (the same programs on both sides)

Prints a table with the emunet/kernel ratio and writes JSON with --json. A second baseline,
"flannel pair" (bench.common_flannel: built by hand, no emunet code; --no-pair skips it), runs
the same clients (TCP cross-node through its ClusterIP, ping, rr) so the kernel nodes' figures
are checked against an independent build of the same topology. The underlay (the
"wire") carries MTU-sized frames with complete checksums on both sides (see kernelnode).
emunet pods keep TSO/checksum offloads (spec.offloads, the default; emunet.datapath.gso);
--offloads-off adds a column, the same emunet cluster with `offloads: false`; --busy-poll-off
one with `busyPoll: 0`. The "py floor" column (bench.common_floor; --no-floor skips it) replaces
the agents with a forwarder that has no logic at all: the least any Python datapath costs here.

--family 6 (issue 19): both clusters dual-stack (k3s-style CIDRs, every Service
PreferDualStack), the same rows measured to the IPv6 addresses (IPv6 ClusterIPs, the echo pod's
IPv6 address), and the IPv4 rows in the same clusters beside them (`*_v4` columns): IPv4 in a
dual-stack cluster against IPv6. The Flannel pair and the floor are IPv4-only: skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
from pathlib import Path

from bench.common_cluster import BenchCluster, median, percentile, pod_doc, ratio, service_doc
from bench.common_flannel import VIP, FlannelPair
from bench.common_floor import PythonFloor

NS = "bench"
IPERF_PORT, ECHO_PORT = 5201, 7000

ECHO_SERVER = textwrap.dedent(f"""
    import socket
    s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # both families on one socket
    s.bind(("::", {ECHO_PORT})); s.listen(512)
    while True:
        c, _ = s.accept()
        try:
            d = c.recv(4096)
            if d:
                c.sendall(d)
                while c.recv(4096):  # the client closes first: TIME_WAIT stays on its side
                    pass
        finally:
            c.close()
""")

RR_CLIENT = textwrap.dedent("""
    import socket, sys, time
    ip, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    msg, n, end = b"x" * 64, 0, time.monotonic() + secs
    t0 = time.monotonic()
    while time.monotonic() < end:
        c = socket.create_connection((ip, port), timeout=2)
        c.sendall(msg)
        got = b""
        while len(got) < len(msg):
            d = c.recv(4096)
            if not d:
                raise SystemExit("short echo")
            got += d
        c.close()
        n += 1
    print(n / (time.monotonic() - t0))
""")


# --family 6: the k3s flags' dual-stack form (configs/dual-stack.yaml)
DUAL_STACK = ("  clusterCIDR: 10.42.0.0/16,2001:cafe:42::/56\n"
              "  serviceCIDR: 10.43.0.0/16,2001:cafe:43::/112\n")


def config(datapath: str, offloads: bool = True, busy_poll: int | None = None,
           family: int = 4) -> str:
    """Two nodes; iperf3 servers on each node, an echo server on node-2, a client on node-1.
    Family 6: dual-stack, every Service PreferDualStack (both ClusterIPs)."""
    iperf = ["iperf3", "-s", "-p", str(IPERF_PORT)]

    def svc(name: str, port: int) -> str:
        doc = service_doc(NS, name, name, port)
        return doc + ("  ipFamilyPolicy: PreferDualStack\n" if family == 6 else "")

    docs = [
        "apiVersion: emunet/v1alpha1\nkind: Cluster\nmetadata: {name: bench}\nspec:\n"
        + (DUAL_STACK if family == 6 else "")
        + ("" if offloads else "  offloads: false\n")
        + ("" if busy_poll is None else f"  busyPoll: {busy_poll}\n")
        +
        f"  nodes:\n    - {{name: node-1, datapath: {datapath}}}\n"
        f"    - {{name: node-2, datapath: {datapath}}}\n",
        f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n",
        pod_doc(NS, "client", "node-1", "client", ["sleep", "infinity"], None),
        pod_doc(NS, "iperf-remote", "node-2", "iperf-remote", iperf, IPERF_PORT),
        pod_doc(NS, "iperf-local", "node-1", "iperf-local", iperf, IPERF_PORT),
        # the system Python: containers run as nobody, who may not read a user's pyenv/venv
        pod_doc(NS, "echo", "node-2", "echo", ["/usr/bin/python3", "-c", ECHO_SERVER],
                ECHO_PORT),
        svc("iperf-remote", IPERF_PORT), svc("iperf-local", IPERF_PORT), svc("echo", ECHO_PORT),
        # the policy the issue asks for: only the client may reach the cross-node server
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: iperf, "
        f"namespace: {NS}}}\nspec:\n  podSelector: {{matchLabels: {{app: iperf-remote}}}}\n"
        "  policyTypes: [Ingress]\n  ingress:\n    - from: [{podSelector: {matchLabels: "
        "{app: client}}}]\n" f"      ports: [{{protocol: TCP, port: {IPERF_PORT}}}]\n",
    ]
    return "---\n".join(docs)


def _of(addrs: list[str], family: int) -> str:
    """The address of `family` among a dual-stack object's addresses."""
    return next(a for a in addrs if (":" in a) == (family == 6))


def _cluster_ips(c: BenchCluster, family: int = 4) -> dict[str, str]:
    items = json.loads(c.emunet("get", "services", "-n", NS, "-o", "json"))["items"]
    return {s["metadata"]["name"]: _of(s["spec"].get("clusterIPs") or [s["spec"]["clusterIP"]],
                                       family) for s in items}


def _pod_ip(c: BenchCluster, name: str, family: int = 4) -> str:
    items = json.loads(c.emunet("get", "pods", "-n", NS, "-o", "json"))["items"]
    st = next(p["status"] for p in items if p["metadata"]["name"] == name)
    return _of([a["ip"] for a in st.get("podIPs") or [{"ip": st["podIP"]}]], family)


def iperf(c: BenchCluster, ip: str, seconds: float) -> float:
    """Gbit/s received by the server, one TCP stream from the client pod."""
    return iperf_in(c, c.netns(NS, "client"), ip, seconds)


def iperf_in(c, netns: str, ip: str, seconds: float) -> float:
    """Gbit/s received by the server, one TCP stream (retried once: the server may be busy);
    `c` runs commands in namespaces (a BenchCluster or a FlannelPair)."""
    for attempt in (1, 2):
        p = c.run_in(netns, "iperf3", "-c", ip, "-p", str(IPERF_PORT), "-t", str(seconds),
                     "-J", timeout=seconds + 30, check=False)
        if p.returncode == 0:
            return json.loads(p.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
        if attempt == 2:
            raise RuntimeError(f"iperf3 to {ip} failed: {p.stdout[-500:]}{p.stderr}")
    raise AssertionError("unreachable")


def ping(c: BenchCluster, ip: str, count: int) -> list[float]:
    return ping_in(c, c.netns(NS, "client"), ip, count)


def ping_in(c, netns: str, ip: str, count: int) -> list[float]:
    out = c.run_in(netns, "ping", "-c", str(count), "-i", "0.01", "-W", "1", ip,
                   check=False).stdout
    return [float(t) for t in re.findall(r"time=([\d.]+) ms", out)]


def rr(c: BenchCluster, ip: str, seconds: float) -> float:
    p = c.run_in(c.netns(NS, "client"), sys.executable, "-c", RR_CLIENT, ip, str(ECHO_PORT),
                 str(seconds), timeout=seconds + 30)
    return float(p.stdout)


def measure(datapath: str, repeat: int, seconds: float, log, offloads: bool = True,
            floor: bool = False, busy_poll: int | None = None, family: int = 4) -> dict:
    tag = ("ebp" if offloads else "ebo") if datapath == "emunet" else "ebk"
    tag = "ebb" if busy_poll is not None else tag
    with BenchCluster(tag, config(datapath, offloads, busy_poll, family)) as c:
        res: dict = {}
        # family 6: the IPv6 rows, then the IPv4 rows of the same dual-stack cluster
        for fam in ((6, 4) if family == 6 else (4,)):
            rows = _measure_rows(c, datapath, repeat, seconds, log, offloads, busy_poll, fam)
            suffix = "_v4" if family == 6 and fam == 4 else ""
            res.update({k + suffix: {"median": median(v), "runs": v} for k, v in rows.items()})
        if floor:
            log("  python floor: the agents replaced by a no-logic forwarder; measuring")
            res["floor"] = measure_floor(c, _pod_ip(c, "echo"), repeat, seconds)
    res["up_s"], res["down_s"] = c.up_seconds, c.down_seconds
    return res


def _measure_rows(c: BenchCluster, datapath: str, repeat: int, seconds: float, log,
                  offloads: bool, busy_poll: int | None, family: int) -> dict[str, list[float]]:
    """Each row's runs to the addresses of `family` in a running cluster."""
    cips = _cluster_ips(c, family)
    remote_ip = _pod_ip(c, "echo", family)  # iperf-remote: the policy admits TCP 5201
    variant = ("" if offloads else " (offloads off)") + (
        "" if busy_poll is None else f" (busyPoll {busy_poll})")
    log(f"  {datapath}{variant}: up in {c.up_seconds:.1f}s; measuring IPv{family}")
    # The rr client opens ~10k connections a run and closes first: without reuse of
    # TIME_WAIT ports (RFC 6191 timestamps) the faster side runs out of ephemeral ports
    # and slows to a crawl in later runs (seen: the kernel's 4.5k/s fell to 0.4k/s).
    c.run_in(c.netns(NS, "client"), "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1",
             "net.ipv4.ip_local_port_range=1024 65535")
    rows: dict[str, list[float]] = {"tcp_cross_gbps": [], "tcp_same_gbps": [],
                                    "ping_p50_ms": [], "ping_p99_ms": [], "rr_per_s": []}
    ping(c, remote_ip, 20)  # warm up ARP/neighbour and conntrack paths
    for _ in range(repeat):
        rows["tcp_cross_gbps"].append(iperf(c, cips["iperf-remote"], seconds))
        rows["tcp_same_gbps"].append(iperf(c, cips["iperf-local"], seconds))
        rtts = ping(c, remote_ip, 200)
        rows["ping_p50_ms"].append(percentile(rtts, 50))
        rows["ping_p99_ms"].append(percentile(rtts, 99))
        rows["rr_per_s"].append(rr(c, cips["echo"], seconds))
    return rows


def measure_pair(repeat: int, seconds: float, log) -> dict:
    """The independent Flannel pair (bench.common_flannel): the same clients as `measure`."""
    import subprocess
    import time

    rows: dict[str, list[float]] = {"tcp_cross_gbps": [], "ping_p50_ms": [], "ping_p99_ms": [],
                                    "rr_per_s": []}
    with FlannelPair(f"ebf{os.getpid() % 10000}") as fp:
        log("  flannel pair (built by hand): measuring")
        srv = fp.ns("server")
        procs = [subprocess.Popen(["ip", "netns", "exec", srv, *cmd], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
                 for cmd in (["iperf3", "-s", "-p", str(IPERF_PORT)],
                             ["/usr/bin/python3", "-c", ECHO_SERVER])]
        try:
            client = fp.ns("client")
            fp.run_in(client, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1",
                      "net.ipv4.ip_local_port_range=1024 65535")
            time.sleep(0.5)  # the servers listen
            ping_in(fp, client, fp.server_ip, 20)
            for _ in range(repeat):
                rows["tcp_cross_gbps"].append(iperf_in(fp, client, VIP, seconds))
                rtts = ping_in(fp, client, fp.server_ip, 200)
                rows["ping_p50_ms"].append(percentile(rtts, 50))
                rows["ping_p99_ms"].append(percentile(rtts, 99))
                rows["rr_per_s"].append(float(fp.run_in(
                    client, sys.executable, "-c", RR_CLIENT, VIP, str(ECHO_PORT),
                    str(seconds), timeout=seconds + 30).stdout))
        finally:
            for p in procs:
                p.kill()
                p.wait()
    return {k: {"median": median(v), "runs": v} for k, v in rows.items()}


def measure_floor(c: BenchCluster, echo_ip: str, repeat: int, seconds: float) -> dict:
    """Ping and rr to the echo pod's IP through the Python floor (bench.common_floor)."""
    rows: dict[str, list[float]] = {"ping_p50_ms": [], "ping_p99_ms": [], "rr_per_s": []}
    with PythonFloor(c, ["node-1", "node-2"], ["client", "echo"], NS):
        ping(c, echo_ip, 20)
        for _ in range(repeat):
            rtts = ping(c, echo_ip, 200)
            rows["ping_p50_ms"].append(percentile(rtts, 50))
            rows["ping_p99_ms"].append(percentile(rtts, 99))
            rows["rr_per_s"].append(rr(c, echo_ip, seconds))
    return {k: {"median": median(v), "runs": v} for k, v in rows.items()}


ROWS = [("tcp_cross_gbps", "TCP cross-node via ClusterIP + policy, Gbit/s", True),
        ("tcp_same_gbps", "TCP same-node via ClusterIP, Gbit/s", True),
        ("ping_p50_ms", "ping cross-node p50, ms", False),
        ("ping_p99_ms", "ping cross-node p99, ms", False),
        ("rr_per_s", "TCP connect/request/response/close via ClusterIP, /s", True)]


EXTRA = {"emunet_offloads_off": "offl.off", "emunet_busy_poll_off": "bp.off"}


def report(res: dict) -> str:
    """emunet | kernel | ratio, then each extra emunet column and the Python floor with their
    ratios to the kernel (the floor has ping and rr only: it carries no NAT and no policy)."""
    cols = [(name, res[key]) for key, name in EXTRA.items() if key in res]
    if "pair" in res:
        cols.append(("fl.pair", res["pair"]))
    floor = res["emunet"].get("floor")
    if floor:
        cols.append(("py floor", floor))
    fam6 = res.get("family") == 6
    rows = [(key + sfx, f"{fam} {label}", hb) for sfx, fam in (("", "IPv6"), ("_v4", "IPv4"))
            for key, label, hb in ROWS] if fam6 else ROWS
    w = max(56, *(len(label) for _, label, _ in rows))
    lines = [f"{'':{w}} {'emunet':>9} {'kernel':>9} {'ratio':>7}"
             + "".join(f" {name:>9} {'ratio':>7}" for name, _ in cols)]
    for key, label, higher_better in rows:
        e, k = res["emunet"][key]["median"], res["kernel"][key]["median"]
        extra = ""
        for _, col in cols:
            o = col.get(key, {}).get("median")
            extra += f" {o:9.3f} {ratio(o, k):6.2f}x" if o is not None else f" {'-':>9} {'':7}"
        lines.append(f"{label:{w}} {e:9.3f} {k:9.3f} {res['ratios'][key]:6.2f}x{extra}"
                     + ("" if higher_better else " (lower is better)"))
    for key in ("up_s", "down_s"):
        e, k = res["emunet"][key], res["kernel"][key]
        lines.append(f"{'emunet ' + key.replace('_s', '') + ', 2 nodes / 5 pods, s':{w}} "
                     f"{e:9.2f} {k:9.2f} {ratio(e, k):6.2f}x (lower is better)")
    lines += [f"medians of {res['repeat']} runs of {res['seconds']}s; policy: enforced on "
              "emunet nodes only (a kernel node runs Flannel + kube-proxy, no NetworkPolicy)"]
    if fam6:
        lines += ["dual-stack clusters (--family 6): IPv6 rows to the IPv6 ClusterIPs and pod "
                  "address, IPv4 rows to the IPv4 ones, same clusters, same run"]
    if "pair" in res:
        lines += ["fl.pair: a Flannel + DNAT pair built by hand (bench.common_flannel), the "
                  "kernel nodes' check; its ratio is to the kernel nodes"]
    if floor:
        lines += ["py floor: the agents replaced by a no-logic Python forwarder (recv, MAC "
                  "rewrite or VXLAN header, send), to the echo pod's IP: the least any Python "
                  "datapath costs here"]
    return "\n".join(lines)


def run(repeat: int, seconds: float, log=lambda s: print(s, file=sys.stderr),
        offloads_off: bool = False, busy_poll_off: bool = False, floor: bool = True,
        pair: bool = True, family: int = 4) -> dict:
    res: dict = {"repeat": repeat, "seconds": seconds, "family": family}
    if family == 6:  # the hand-built pair and the floor forward IPv4 only
        pair = floor = False
    if pair:
        res["pair"] = measure_pair(repeat, seconds, log)
    res["emunet"] = measure("emunet", repeat, seconds, log, floor=floor, family=family)
    res["kernel"] = measure("kernel", repeat, seconds, log, family=family)
    if offloads_off:  # the same emunet cluster without TSO in pod veths, same run
        res["emunet_offloads_off"] = measure("emunet", repeat, seconds, log, offloads=False,
                                             family=family)
    if busy_poll_off:  # the same emunet cluster with spec.busyPoll: 0
        res["emunet_busy_poll_off"] = measure("emunet", repeat, seconds, log, busy_poll=0,
                                              family=family)
    res["ratios"] = {key: ratio(res["emunet"][key]["median"], res["kernel"][key]["median"])
                     for key in res["emunet"] if isinstance(res["emunet"][key], dict)
                     and "median" in res["emunet"][key] and key in res["kernel"]}
    if pair:  # emunet against the independent baseline too (issue 16: >= 0.4x on TCP)
        res["ratios_to_pair"] = {
            key: ratio(res["emunet"][key]["median"], res["pair"][key]["median"])
            for key, _, _ in ROWS if key in res["pair"]}
    return res


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench.datapath", description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each timed run")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--offloads-off", action="store_true",
                    help="also measure the emunet cluster with spec.offloads: false")
    ap.add_argument("--busy-poll-off", action="store_true",
                    help="also measure the emunet cluster with spec.busyPoll: 0")
    ap.add_argument("--no-pair", action="store_true",
                    help="skip the hand-built Flannel pair (the second baseline)")
    ap.add_argument("--no-floor", action="store_true",
                    help="skip the Python floor (the agents replaced by a no-logic forwarder)")
    ap.add_argument("--family", type=int, choices=(4, 6), default=4,
                    help="6: dual-stack clusters, the rows over IPv6 and over IPv4 side by side")
    args = ap.parse_args()
    res = run(max(1, args.repeat), args.seconds, offloads_off=args.offloads_off,
              busy_poll_off=args.busy_poll_off, floor=not args.no_floor,
              pair=not args.no_pair, family=args.family)
    print(report(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
