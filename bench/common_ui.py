"""The UI benchmark's browser and server (bench/ui.py): a headless Chromium for the whole run,
`emunet ui` started and stopped per round, and what they cost: CPU seconds per process (the
server, and each of the browser's process types), the tab's memory, and Chromium's own
accounting of the page's main thread (the DevTools Performance domain). Not a section of its
own (scripts/bench skips `common*`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common_cluster import ROOT, BenchCluster

# Chromium as root without a sandbox, and nothing that reaches Google: what a user's headless
# Chromium on a server would need; nothing here makes the page itself cheaper to run
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--enable-precise-memory-info", "--window-size=1280,800"]
# Performance.getMetrics: seconds the page's main thread spent, by kind (deltas are reported)
PAGE_METRICS = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration",
                "LayoutCount", "RecalcStyleCount")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_delta(a: dict[tuple[str, str], float], b: dict[tuple[str, str], float]
              ) -> dict[str, float]:
    """CPU seconds by kind between two cpu_by_pid() readings: a process that started in
    between counts whole, one that ended counts nothing (its last seconds are not known)."""
    out: dict[str, float] = {}
    for key, secs in b.items():
        out[key[1]] = out.get(key[1], 0.0) + secs - a.get(key, 0.0)
    return out


def _cpu(pid: str) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


class UI:
    """A headless Chromium for the whole run, and `emunet ui` started (`open`) and stopped
    (`close`) per round: "closed" is no server and the tab on about:blank, so a round does not
    also pay for a browser starting up (seconds of CPU on this machine). `tree`: the source
    tree the server (and so the page it serves) runs from (default: this one), so two
    versions of the UI can be compared in one run on one cluster."""

    def __init__(self, c: BenchCluster) -> None:
        self.c, self.port = c, free_port()
        self.proc: subprocess.Popen | None = None
        self.driver: Any = None
        self.profile = tempfile.mkdtemp(prefix="emunet-bench-ui-")
        self.url = ""

    def __enter__(self) -> UI:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for f in [*FLAGS, f"--user-data-dir={self.profile}"]:
            opts.add_argument(f)
        self.driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"),
                                       options=opts)
        return self

    def open(self, tree: Path = ROOT) -> None:
        env = {**self.c.env, "PYTHONPATH": str(tree)}
        self.proc = subprocess.Popen([sys.executable, "-m", "emunet", "ui", "--port",
                                      str(self.port)], env=env, cwd=tree,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.url = next((w for w in line.split() if w.startswith("http://")), "")
        if not self.url:
            raise RuntimeError(f"emunet ui did not print its URL: {line!r}")

    def close(self) -> None:
        self.driver.get("about:blank")
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def load(self, pods: int) -> float:
        """Seconds from navigation until every pod is on the map and flows are listed."""
        d = self.driver
        d.get("about:blank")
        t0 = time.monotonic()
        d.get(self.url)
        deadline = t0 + 120
        while time.monotonic() < deadline:
            n, rows = d.execute_script(
                "return [document.querySelectorAll('#map g.pod').length,"
                " document.querySelectorAll('#flows tbody tr').length"
                " * (document.body.dataset.flowsLoaded === '1')];")
            if n >= pods and rows > 0:
                return time.monotonic() - t0
            time.sleep(0.02)
        raise RuntimeError(f"the page did not show {pods} pods within 120 s")

    def _ours(self) -> dict[str, str]:
        """Our processes by pid: "server", or the browser's process type ("browser" for the
        main one, found by its profile dir; "renderer", "gpu-process", "utility", "zygote",
        ... for its descendants, which do not all name the profile)."""
        out, parent, cmds = {}, {}, {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                # Chromium rewrites its title: the arguments joined by spaces, not NULs
                cmds[proc.name] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").split()
                parent[proc.name] = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
            except (OSError, IndexError):
                continue
        if self.proc is not None:
            out[str(self.proc.pid)] = "server"
        for pid, cmd in cmds.items():
            is_main = not any(a.startswith(b"--type=") for a in cmd) and \
                any(self.profile.encode() in a for a in cmd)
            if is_main:
                out[pid] = "browser"
        changed = True
        while changed:  # the main browser's descendants, by their --type
            changed = False
            for pid, ppid in parent.items():
                if pid not in out and out.get(ppid) not in (None, "server"):
                    out[pid] = next((a[7:].decode() for a in cmds[pid]
                                     if a.startswith(b"--type=")), "browser-child")
                    changed = True
        return out

    def memory(self) -> dict[str, float]:
        heap = self.driver.execute_script("return performance.memory.usedJSHeapSize;")
        rss = 0
        for pid, kind in self._ours().items():  # the tab's renderer
            if kind != "renderer":
                continue
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss = max(rss, int(line.split()[1]) * 1024)
            except OSError:
                continue
        return {"js_heap_mb": heap / 2**20, "renderer_rss_mb": rss / 2**20}

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds so far of the UI server and of each kind of browser process."""
        out: dict[str, float] = {}
        for (_, kind), secs in self.cpu_by_pid().items():
            out[kind] = out.get(kind, 0.0) + secs
        return out

    def cpu_by_pid(self) -> dict[tuple[str, str], float]:
        """CPU seconds so far of each of our processes, by (pid, kind)."""
        out = {}
        for pid, kind in self._ours().items():
            try:
                out[(pid, kind)] = _cpu(pid)
            except (OSError, ValueError, IndexError):
                continue
        return out

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time so far of the UI server and of all the browser's processes."""
        by = self.cpu_by_process()
        return {"server": by.get("server", 0.0),
                "browser": sum(v for k, v in by.items() if k != "server")}

    def page_metrics(self) -> dict[str, float]:
        """Chromium's counters of the page's main thread (seconds, counts) so far."""
        self.driver.execute_cdp_cmd("Performance.enable", {})
        got = self.driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
        return {m["name"]: m["value"] for m in got if m["name"] in PAGE_METRICS}

    def __exit__(self, *exc: object) -> None:
        try:
            self.close()
        finally:
            self.driver.quit()
            shutil.rmtree(self.profile, ignore_errors=True)
