"""Run the real emunet CLI against a throwaway prefix and run dir, and clean up after it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Cluster:
    """A cluster brought up by `emunet up` for a test, with its own prefix and run dir."""

    def __init__(self, config: str, prefix: str, run_dir: Path | None = None) -> None:
        if run_dir is None:
            # Outside pytest's numbered temp dirs, which a concurrent pytest run may prune while
            # this cluster still needs its manifest for `down`. `down` removes it.
            run_dir = Path(tempfile.mkdtemp(prefix=f"emunet-{prefix}-"))
        self.config = config
        self.prefix = prefix
        self.run_dir = run_dir
        # EMUNET_API_PORT=0: each test cluster's API server on a free port, so clusters (and
        # a real one on 6443) can run side by side
        self.env = {"EMUNET_API_PORT": "0", **os.environ, "EMUNET_PREFIX": prefix,
                    "EMUNET_RUN_DIR": str(run_dir), "PYTHONPATH": str(ROOT)}

    def emunet(self, *args: str, check: bool = True, timeout: float = 120,
               input: str | None = None) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-m", "emunet", *args], env=self.env, cwd=ROOT,
                           capture_output=True, text=True, timeout=timeout, input=input)
        if check and p.returncode != 0:
            raise AssertionError(f"emunet {' '.join(args)} failed ({p.returncode}):\n"
                                 f"{p.stdout}\n{p.stderr}")
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
