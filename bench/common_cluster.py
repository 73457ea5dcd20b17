"""Helpers the datapath and lifecycle benchmarks share: a cluster brought up through the real CLI
under a private prefix and run directory (removed again, also on failure), commands in pod
namespaces, and the statistics every table uses. Not a section of its own (scripts/bench skips
`common*`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def run_in(netns: str, *cmd: str, timeout: float = 120,
           check: bool = True) -> subprocess.CompletedProcess:
    """`cmd` in network namespace `netns` (ip netns exec), its output captured."""
    return subprocess.run(["ip", "netns", "exec", netns, *cmd], capture_output=True,
                          text=True, timeout=timeout, check=check)


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def pod_doc(ns: str, name: str, node: str, app: str, command: list[str],
            port: int | None) -> str:
    """A one-container bench Pod pinned to `node`, labelled app=`app`."""
    ports = f"\n      ports: [{{containerPort: {port}}}]" if port else ""
    return (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, "
            f"labels: {{app: {app}}}}}\nspec:\n  nodeName: {node}\n  containers:\n"
            f"    - name: main\n      image: bench\n      command: {json.dumps(command)}"
            f"{ports}\n")


def service_doc(ns: str, name: str, app: str, port: int, target: int | None = None) -> str:
    """A ClusterIP Service selecting app=`app`, `port` -> `target` (default: the same)."""
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec:\n  selector: {{app: {app}}}\n  ports: [{{port: {port}, "
            f"targetPort: {port if target is None else target}}}]\n")


class BenchCluster:
    """`emunet up CONFIG_TEXT` with its own EMUNET_PREFIX/EMUNET_RUN_DIR; use as a context.
    `timeout` bounds `up` and each `down` (thousands of pods take minutes on a shared VM)."""

    def __init__(self, tag: str, config_text: str, timeout: float = 300) -> None:
        self.timeout = timeout
        self.tmp = Path(tempfile.mkdtemp(prefix=f"emunet-bench-{tag}-"))
        self.config = self.tmp / "cluster.yaml"
        self.config.write_text(config_text)
        self.prefix = f"{tag}{os.getpid() % 10000}"
        self.env = {**os.environ, "EMUNET_PREFIX": self.prefix,
                    "EMUNET_RUN_DIR": str(self.tmp / "run"), "PYTHONPATH": str(ROOT),
                    "EMUNET_API_PORT": "0"}  # any free port: clusters side by side
        self.up_seconds = self.down_seconds = float("nan")

    def emunet(self, *args: str, timeout: float = 300) -> str:
        p = subprocess.run([sys.executable, "-m", "emunet", *args], env=self.env, cwd=ROOT,
                           capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"emunet {' '.join(args)}: {p.stdout}{p.stderr}")
        return p.stdout

    def __enter__(self) -> BenchCluster:
        t0 = time.monotonic()
        try:
            self.emunet("up", str(self.config), timeout=self.timeout)
        except BaseException:
            self.emunet_down()
            raise
        self.up_seconds = time.monotonic() - t0
        return self

    def emunet_down(self) -> None:
        """`emunet down`, timed; retried once, and never silent: a cluster left behind would
        keep its namespaces and processes on a shared machine."""
        for _ in range(2):
            t0 = time.monotonic()
            p = subprocess.run([sys.executable, "-m", "emunet", "down"], env=self.env,
                               cwd=ROOT, capture_output=True, text=True,
                               timeout=max(120, self.timeout))
            self.down_seconds = time.monotonic() - t0
            if p.returncode == 0:
                return
        raise RuntimeError(f"emunet down failed; clean up with EMUNET_PREFIX={self.prefix} "
                           f"EMUNET_RUN_DIR={self.tmp / 'run'} emunet down\n{p.stderr}")

    def __exit__(self, *exc: object) -> None:
        self.emunet_down()  # raises (and keeps self.tmp, which holds the manifest) on failure
        shutil.rmtree(self.tmp, ignore_errors=True)

    def netns(self, ns: str, pod: str) -> str:
        return f"{self.prefix}-{ns}-{pod}"

    def node_netns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    def run_in(self, netns: str, *cmd: str, timeout: float = 120,
               check: bool = True) -> subprocess.CompletedProcess:
        return run_in(netns, *cmd, timeout=timeout, check=check)

    def pids(self) -> list[int]:
        """Every process of this cluster: the supervisor and all its descendants."""
        manifest = self.tmp / "run" / "manifest.json"
        roots = [e["pid"] for e in json.loads(manifest.read_text())["entries"]
                 if e.get("kind") == "process"]
        children: dict[int, list[int]] = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(d.name))
        seen: set[int] = set()
        todo = list(roots)
        while todo:
            pid = todo.pop()
            if pid not in seen and Path(f"/proc/{pid}").exists():
                seen.add(pid)
                todo += children.get(pid, [])
        return sorted(seen)

    def rss_bytes(self, module: bytes | None = None) -> int:
        """Resident memory of every process of the cluster (sum of VmRSS); with `module`,
        only of the processes whose command line names it (e.g. b"emunet.agent")."""
        total = 0
        for pid in self.pids():
            try:
                if module is not None and \
                        module not in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                    continue
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total
