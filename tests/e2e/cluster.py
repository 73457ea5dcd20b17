"""Run the real emunet CLI against a throwaway prefix and run dir, and clean up after it:
`Cluster` (one cluster and what a test asks of it) and `ClusterFactory` (the clusters of a
test or a module, behind the fixtures of tests/e2e/conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


class Cluster:
    """A cluster run by the real CLI for a test: its own prefix, run dir and scratch dir.

    `tmp` is the test's scratch dir (manifests it applies, files its probes look at) and holds
    the run dir `tmp/run`. Both live outside pytest's numbered temp dirs, which a concurrent
    pytest run may prune while this cluster still needs its manifest for `down`.
    """

    def __init__(self, config: str, prefix: str) -> None:
        self.config = config
        self.prefix = prefix
        # not under /tmp: a pod sees the host's /tmp through an overlay, where files the host
        # changes while the pod runs are undefined (overlayfs), and probes read files here
        self.tmp = Path(tempfile.mkdtemp(prefix=f"emunet-{prefix}-", dir="/var/tmp"))
        self.tmp.chmod(0o755)
        self.run_dir = self.tmp / "run"
        # EMUNET_API_PORT=0: each test cluster's API server on a free port, so clusters (and
        # a real one on 6443) can run side by side
        self.env = {"EMUNET_API_PORT": "0", **os.environ, "EMUNET_PREFIX": prefix,
                    "EMUNET_RUN_DIR": str(self.run_dir), "PYTHONPATH": str(ROOT)}
        self.up_output = ""
        self.is_down = False

    def emunet(self, *args: str, check: bool = True, timeout: float = 120,
               input: str | None = None) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-m", "emunet", *args], env=self.env, cwd=ROOT,
                           capture_output=True, text=True, timeout=timeout, input=input)
        if check and p.returncode != 0:
            raise AssertionError(f"emunet {' '.join(args)} failed ({p.returncode}):\n"
                                 f"{p.stdout}\n{p.stderr}")
        return p

    def up(self, timeout: float = 120) -> subprocess.CompletedProcess:
        """`emunet up CONFIG`: returns once every pod is Ready and DNS answers."""
        p = self.emunet("up", self.config, timeout=timeout)
        self.up_output = p.stdout + p.stderr
        return p

    def exec(self, ns: str, pod: str, *cmd: str, check: bool = True,
             timeout: float = 30) -> subprocess.CompletedProcess:
        return self.emunet("exec", "-n", ns, pod, "--", *cmd, check=check, timeout=timeout)

    def get(self, kind: str) -> list[dict]:
        return json.loads(self.emunet("get", kind, "-A", "-o", "json").stdout)["items"]

    def down_clean(self) -> None:
        """`emunet down`, then nothing of this cluster left: no namespace, no /etc/netns
        entry, no run dir (the fixtures' teardown)."""
        down = self.emunet("down", check=False)
        left = self.netns()
        assert down.returncode == 0, down.stderr
        assert not left, f"namespaces left after down: {left}"
        assert not any(Path("/etc/netns").glob(self.prefix + "-*")), "/etc/netns entries left"
        assert not self.run_dir.exists(), "run dir left after down"
        self.is_down = True

    def netns(self) -> list[str]:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [line.split()[0] for line in out.splitlines()
                if line.split() and line.split()[0].startswith(self.prefix + "-")]

    def pod(self, ns: str, name: str) -> dict:
        for item in self.get("pods"):
            if (item["metadata"]["namespace"], item["metadata"]["name"]) == (ns, name):
                return item
        raise KeyError((ns, name))

    def status(self) -> dict:
        code = ("import json; from emunet import control; "
                "print(json.dumps(control.request('status')))")
        p = subprocess.run([sys.executable, "-c", code], env=self.env, cwd=ROOT,
                           capture_output=True, text=True, check=True)
        return json.loads(p.stdout)

    def wait_ready(self, timeout: float = 30) -> None:
        """Until the supervisor counts every pod Ready (after an `apply` of new pods)."""
        def ready() -> bool:
            st = self.status()
            return st["pods_ready"] == st["pods"]
        wait_for(ready, timeout, f"every pod of {self.prefix} Ready")

    def counters(self, node: str) -> dict:
        """The agent's counters file of `node` (rewritten within a second of a change, an
        unchanged one every few seconds: emunet.agent.loop.COUNTERS_MAX_AGE)."""
        return json.loads((self.run_dir / f"agent-{node}.json").read_text())

    def counters_after(self, since: float, *nodes: str, timeout: float = 5) -> dict[str, dict]:
        """{node: counters} counting every packet each node's agent handled before the
        wall-clock time `since`: its file rewritten after `since`, or read a second after it
        (a change is on disk within a second; an unchanged file is not rewritten each tick)."""
        def fresh() -> dict[str, dict] | None:
            settled = time.time() > since + 1.1
            docs = {n: self.counters(n) for n in nodes}
            if all(settled or d["time"] > since for d in docs.values()):
                return {n: d["counters"] for n, d in docs.items()}
            return None
        return wait_for(fresh, timeout, f"the counters of {', '.join(nodes)} after {since:.3f}")


class ClusterFactory:
    """Makes clusters for a test (fixture `clusters`) or a test module (`module_clusters`) and
    tears every one down with `Cluster.down_clean()`: down, then nothing of it left."""

    def __init__(self, unique_prefix: Callable[[str], str]) -> None:
        self.unique_prefix = unique_prefix
        self.made: list[Cluster] = []

    def __call__(self, config: str | Path | None, tag: str, *, text: str | None = None,
                 up: bool = True, timeout: float = 120) -> Cluster:
        """A cluster of `config` (or of `text`, written to its scratch dir) with the prefix
        unique_prefix(tag), brought up unless up=False (the test then runs `up` or
        `lab start` itself, maybe after writing files into `tmp`)."""
        c = Cluster(str(config) if config is not None else "", self.unique_prefix(tag))
        self.made.append(c)  # before `up`: a cluster whose setup failed is torn down too
        if text is not None:
            path = c.tmp / f"{tag}.yaml"
            path.write_text(text)
            c.config = str(path)
        if up:
            c.up(timeout)
        return c

    def teardown(self) -> None:
        """down_clean() every cluster not already down (newest first, all of them even when
        one fails); the scratch dir goes only with a clean down, as the run dir in it holds
        the manifest a later `emunet down` needs. A second call has nothing left to do."""
        failures = []
        while self.made:
            c = self.made.pop()
            try:
                if not c.is_down:
                    c.down_clean()
            except AssertionError as e:
                failures.append(f"{c.prefix}: {e}")
                continue
            shutil.rmtree(c.tmp, ignore_errors=True)
        assert not failures, "\n".join(failures)
