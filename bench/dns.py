"""DNS throughput: emunet's responder vs dnsmasq on the same names, and qps through kube-dns.

    sudo scripts/bench dns            (or: sudo .venv/bin/python -m bench.dns --seconds 10)

1. Side by side, one run: a synthetic cluster state (namespaces x Services, a few headless) is
   served by `python -m emunet.dns.server` and by dnsmasq (an --addn-hosts file of the same names,
   `--local=/<domain>/` so unknown names are NXDOMAIN), both on loopback of one network namespace
   this benchmark creates and removes. dnsperf sends the same query mix (A for Services, ~20 %
   NXDOMAIN, as a pod's search-list walk produces) for a fixed time to each; a short verbose run
   per server gives latency percentiles. Prints qps, latency avg/p99 and the ratio.
2. End to end: a real emunet cluster (tests' two-node story config) with dnsperf inside a pod's
   network namespace asking the kube-dns ClusterIP, so every query crosses the node agents'
   userspace datapath (DNAT, and VXLAN from a node-2 pod).

dnsperf and dnsmasq come from Debian (`apt-get install dnsperf dnsmasq-base`); they are installed
on first use when missing. Only namespaces created here (prefix `ebd<pid>`) are touched.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emunet.config import load_config_text
from emunet.state import codec
from emunet.state.cluster import ClusterState
from emunet.state.plan import plan

ROOT = Path(__file__).resolve().parents[1]
EMU_PORT, MASQ_PORT = 5301, 5302
NAMESPACES, SERVICES = 20, 25  # 500 Services


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in (("dnsperf", "dnsperf"), ("dnsmasq", "dnsmasq-base"))
               if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        print(f"bench dns: installing {' '.join(missing)} from Debian (apt-get) ...",
              file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                       stdout=subprocess.DEVNULL)


def synthetic_state() -> ClusterState:
    docs = ["apiVersion: emunet/v1alpha1\nkind: Cluster\nmetadata: {name: bench}\n"
            "spec:\n  nodes: [{name: n1}]\n"]
    for n in range(NAMESPACES):
        docs.append(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: team-{n}}}\n")
        for s in range(SERVICES):
            docs.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, "
                        f"namespace: team-{n}}}\nspec:\n  ports: [{{name: http, port: 80}}]\n")
    return plan(load_config_text("---\n".join(docs), "bench.yaml"))


def names_and_queries(st: ClusterState) -> tuple[list[tuple[str, str]], list[str]]:
    """(ip, fqdn) for every ClusterIP Service, and a query list: 4 hits, then 1 miss."""
    d = st.cluster.cluster_domain
    hosts = sorted((ss.cluster_ip, f"{k[1]}.{k[0]}.svc.{d}") for k, ss in st.services.items()
                   if ss.cluster_ip)
    queries = []
    for i, (_, name) in enumerate(hosts):
        queries.append(f"{name} A")
        if i % 4 == 3:  # what `getent hosts svc-3` sends first under ndots:5 from another ns
            queries.append(f"{name.split('.')[0]}.team-x.svc.{d} A")
    return hosts, queries


def run_dnsperf(netns: str, server: str, port: int, datafile: Path, seconds: float,
                verbose: bool = False) -> dict:
    cmd = ["ip", "netns", "exec", netns, "dnsperf", "-s", server, "-p", str(port), "-d",
           str(datafile), "-l", str(seconds), "-q", "100", "-t", "2"]
    out = subprocess.run([*cmd, *(["-v"] if verbose else [])], capture_output=True,
                         text=True, check=True).stdout
    res: dict = {}
    for key, pat in (("sent", r"Queries sent:\s+(\d+)"),
                     ("completed", r"Queries completed:\s+(\d+)"),
                     ("lost", r"Queries lost:\s+(\d+)"),
                     ("qps", r"Queries per second:\s+([\d.]+)"),
                     ("latency_avg_ms", r"Average Latency \(s\):\s+([\d.]+)")):
        m = re.search(pat, out)
        res[key] = float(m.group(1)) if m else None
    if res["latency_avg_ms"] is not None:
        res["latency_avg_ms"] *= 1000
    m = re.search(r"NXDOMAIN (\d+)", out)
    res["nxdomain"] = int(m.group(1)) if m else 0
    if verbose:  # "> NOERROR name A 0.000123" per response
        lat = sorted(float(x) for x in re.findall(r"^> \w+ \S+ \S+ ([\d.]+)$", out, re.M))
        res = {"latency_p50_ms": lat[len(lat) // 2] * 1000 if lat else None,
               "latency_p99_ms": lat[int(len(lat) * 0.99)] * 1000 if lat else None,
               "latency_samples": len(lat)}
    return res


def measure(netns: str, server: str, port: int, datafile: Path, seconds: float) -> dict:
    res = run_dnsperf(netns, server, port, datafile, seconds)
    res.update(run_dnsperf(netns, server, port, datafile, min(3.0, seconds), verbose=True))
    return res


def side_by_side(seconds: float, work: Path) -> dict:
    st = synthetic_state()
    state = work / "state.json"
    state.write_text(codec.to_json(st))
    hosts, queries = names_and_queries(st)
    (work / "hosts").write_text("".join(f"{ip} {name}\n" for ip, name in hosts))
    datafile = work / "queries.txt"
    datafile.write_text("\n".join(queries) + "\n")
    os.chmod(work, 0o755)
    for f in ("hosts", "queries.txt", "state.json"):
        os.chmod(work / f, 0o644)
    netns = f"ebd{os.getpid()}-dns"
    procs: list[subprocess.Popen] = []
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "emunet.dns.server",
             "--state", str(state), "--listen", "127.0.0.1", "--port", str(EMU_PORT),
             "--stats", str(work / "dns.json")], cwd=ROOT, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", netns, "dnsmasq", "--keep-in-foreground", "--no-resolv",
             "--no-hosts", f"--addn-hosts={work / 'hosts'}", "--listen-address=127.0.0.1",
             "--bind-interfaces", f"--port={MASQ_PORT}", f"--local=/{st.cluster.cluster_domain}/",
             "--cache-size=10000", "--pid-file=", f"--log-facility={work / 'dnsmasq.log'}",
             "--user=root"], stderr=subprocess.DEVNULL))
        _wait_answers(netns, EMU_PORT, hosts[0][1])
        _wait_answers(netns, MASQ_PORT, hosts[0][1])
        emu = measure(netns, "127.0.0.1", EMU_PORT, datafile, seconds)
        masq = measure(netns, "127.0.0.1", MASQ_PORT, datafile, seconds)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["ip", "netns", "del", netns], check=False)
    ratio = emu["qps"] / masq["qps"] if emu.get("qps") and masq.get("qps") else None
    return {"names": len(hosts), "queries_in_mix": len(queries), "seconds": seconds,
            "emunet": emu, "dnsmasq": masq, "ratio_qps": ratio}


def _wait_answers(netns: str, port: int, name: str) -> None:
    for _ in range(100):
        r = subprocess.run(["ip", "netns", "exec", netns, "dig", "@127.0.0.1", "-p", str(port),
                            "+tries=1", "+time=1", "+short", name],
                           capture_output=True, text=True)
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", r.stdout.strip()):  # not ";; error ..."
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers on 127.0.0.1:{port} in {netns}")


def end_to_end(seconds: float, work: Path) -> dict:
    """dnsperf in a pod of a real cluster, against the kube-dns ClusterIP."""
    env = {**os.environ, "EMUNET_PREFIX": f"ebd{os.getpid() % 100000}",
           "EMUNET_RUN_DIR": str(work / "emunet"), "PYTHONPATH": str(ROOT)}

    def emunet(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "emunet", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=180)

    up = emunet("up", str(ROOT / "configs" / "two-node.yaml"))
    try:
        if up.returncode != 0:
            raise RuntimeError(f"emunet up failed:\n{up.stdout}\n{up.stderr}")
        d = "cluster.local"
        data = work / "e2e-queries.txt"
        data.write_text(f"monospaced.blog-website.svc.{d} A\n"
                        f"kube-dns.kube-system.svc.{d} A\n"
                        f"monospaced.blog-website.svc.{d} A\n"
                        f"monospaced.svc.{d} A\n")
        os.chmod(data, 0o644)
        out = {}
        for pod, where in (("frontend-client", "same_node"), ("monospaced-test", "via_vxlan")):
            netns = f"{env['EMUNET_PREFIX']}-blog-website-{pod}"
            out[where] = run_dnsperf(netns, "10.43.0.10", 53, data, seconds)
        return out
    finally:
        emunet("down")


def report(res: dict) -> None:
    s = res["side_by_side"]
    print(f"{s['names']} Service names, {s['queries_in_mix']} queries in the mix "
          f"(~20 % NXDOMAIN), {s['seconds']:g} s per server, dnsperf -q 100, loopback")
    print(f"{'server':<10} {'qps':>10} {'avg ms':>8} {'p50 ms':>8} {'p99 ms':>8} {'lost':>6}")
    for name in ("emunet", "dnsmasq"):
        r = s[name]
        print(f"{name:<10} {r['qps']:>10.0f} {r['latency_avg_ms']:>8.3f} "
              f"{r['latency_p50_ms']:>8.3f} {r['latency_p99_ms']:>8.3f} {r['lost']:>6.0f}")
    print(f"ratio emunet/dnsmasq: {s['ratio_qps']:.2f}x  (target >= 0.5x, goal >= 1.0x)")
    for where, r in res.get("end_to_end", {}).items():
        print(f"end to end via kube-dns 10.43.0.10 ({where}): {r['qps']:.0f} qps, avg "
              f"{r['latency_avg_ms']:.3f} ms, lost {r['lost']:.0f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--seconds", type=float, default=10.0, help="per dnsperf run")
    ap.add_argument("--no-e2e", action="store_true", help="skip the real-cluster run")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench dns: run as root (network namespaces)", file=sys.stderr)
        return 1
    ensure_tools()
    with tempfile.TemporaryDirectory(prefix="emunet-bench-dns-") as tmp:
        work = Path(tmp)
        res = {"side_by_side": side_by_side(a.seconds, work)}
        if not a.no_e2e:
            res["end_to_end"] = end_to_end(a.seconds, work)
    report(res)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
