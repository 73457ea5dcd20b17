"""`emunet doctor`: check that this machine can run a cluster, and find what a crash left.

Each check yields a `Finding` (ok / warn / problem) with the fix to apply; `doctor` never
changes anything itself (cleanup follows the manifest: `emunet down`, DESIGN.md section 5).
Checks: root, kernel features (network namespaces, veth, the vxlan module, AF_PACKET), the
tools emunet and its users run, leftovers of a crashed run (a manifest whose supervisor is dead,
namespaces and /etc/netns entries with our prefix that no manifest lists), and that the VXLAN
UDP port is free in existing node namespaces (or held by that node's own agent).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from emunet import control, naming, native
from emunet.host import adopted
from emunet.host.manifest import HostError, Manifest
from emunet.host.netns import netns_exists, socket_in_netns

REQUIRED_TOOLS = {"ip": "iproute2", "unshare": "util-linux", "nsenter": "util-linux",
                  "setpriv": "util-linux", "catatonit": "catatonit"}
USEFUL_TOOLS = {"curl": "curl", "nslookup": "bind9-dnsutils", "dig": "bind9-dnsutils",
                "ping": "iputils-ping", "traceroute": "traceroute", "tcpdump": "tcpdump",
                "ethtool": "ethtool", "iperf3": "iperf3", "ss": "iproute2"}
ETC_NETNS = Path("/etc/netns")
NETNS_DIR = Path("/run/netns")


@dataclass(frozen=True)
class Finding:
    level: str  # "ok", "warn" or "problem"
    what: str
    fix: str = ""


def _ok(what: str) -> Finding:
    return Finding("ok", what)


def check_root() -> Iterator[Finding]:
    if os.geteuid() == 0:
        yield _ok("running as root")
    else:
        yield Finding("problem", "not root: namespaces, veths and AF_PACKET need root",
                      "run `sudo emunet doctor` (and `sudo emunet up ...`)")


def _link_kind(kind: str, *args: str) -> str | None:
    """Create a `kind` link in a throwaway, unnamed network namespace (`unshare -n`): it and the
    namespace vanish with the process, so nothing is left anywhere. None if it works, else why.
    Works whether the driver is built in or a module (no modprobe or /lib/modules needed)."""
    try:
        p = subprocess.run(["unshare", "-n", "ip", "link", "add", "name", "emd0", "type", kind,
                            *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return None if p.returncode == 0 else (p.stderr.strip() or f"exit {p.returncode}")


def check_kernel() -> Iterator[Finding]:
    if Path("/proc/self/ns/net").exists():
        yield _ok("kernel: network namespaces")
    else:
        yield Finding("problem", "kernel: no network namespaces (CONFIG_NET_NS)",
                      "use a kernel built with CONFIG_NET_NS=y (any distribution kernel)")
    if os.geteuid() != 0:
        return  # the remaining probes need root; check_root already says so
    for kind, args, level, why in (
            ("veth", ("peer", "name", "emd1"), "problem", "pods and the underlay are veths"),
            ("vxlan", ("id", "1", "dstport", "4789"), "warn",
             "tests decode emunet's VXLAN with the kernel's own driver")):
        err = _link_kind(kind, *args)
        if err is None:
            yield _ok(f"kernel: {kind} links")
        else:
            yield Finding(level, f"kernel: cannot create a {kind} link ({err}); {why}",
                          f"load the driver (`sudo modprobe {kind}`); if it is missing, install "
                          "the kernel's modules package, e.g. linux-modules-extra-$(uname -r)")
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
        yield _ok("kernel: AF_PACKET sockets (the agents' datapath)")
    except OSError as e:
        yield Finding("problem", f"kernel: cannot open an AF_PACKET socket ({e.strerror})",
                      "load it: `sudo modprobe af_packet`; in a container, grant CAP_NET_RAW")


def check_tools() -> Iterator[Finding]:
    for tool, pkg in REQUIRED_TOOLS.items():
        if shutil.which(tool):
            yield _ok(f"tool: {tool}")
        else:
            yield Finding("problem", f"tool: {tool} is missing (emunet runs `ip netns exec`)",
                          f"sudo apt-get install {pkg}   (or run `sudo ./scripts/setup`)")
    missing = sorted({pkg for tool, pkg in USEFUL_TOOLS.items() if not shutil.which(tool)})
    if missing:
        yield Finding("warn", "tools for following packets are missing: "
                      + ", ".join(t for t, p in USEFUL_TOOLS.items() if p in missing),
                      f"sudo apt-get install {' '.join(missing)}")
    else:
        yield _ok("tools: " + ", ".join(USEFUL_TOOLS))


def _manifest_names() -> tuple[dict | None, set[str], set[str]]:
    """(manifest document or None, netns names it lists, /etc/netns dirs it lists)."""
    try:
        doc = json.loads((naming.run_dir() / "manifest.json").read_text())
        entries = doc["entries"]
    except FileNotFoundError:
        return None, set(), set()
    except (OSError, ValueError, KeyError):
        return {"damaged": True}, set(), set()
    return (doc, {e["name"] for e in entries if e.get("kind") == "netns"},
            {e["path"] for e in entries if e.get("kind") == "dir"})


def check_leftovers() -> Iterator[Finding]:
    rd = naming.run_dir()
    doc, netns, dirs = _manifest_names()
    supervisor_up = doc is not None and control.alive()
    if doc is None:
        yield _ok(f"no cluster state in {rd}")
    elif doc.get("damaged"):
        yield Finding("problem", f"the manifest {rd}/manifest.json is damaged",
                      "inspect it: it lists what emunet created; remove what it names by hand")
    elif supervisor_up:
        yield _ok(f"a cluster is up (state in {rd}, supervisor running)")
    elif _watchdog_alive():
        yield Finding("warn", f"a cluster is up (state in {rd}) but its supervisor does not "
                      "answer; its watchdog runs and restarts it after a crash",
                      f"wait a few seconds; if it persists see {rd}/logs/watchdog.log")
    else:
        left = [n for n in sorted(netns) if (NETNS_DIR / n).exists()]
        yield Finding("problem", f"a crashed cluster: {rd}/manifest.json lists {len(netns)} "
                      f"namespaces ({len(left)} still exist) but its supervisor is not running",
                      "sudo emunet down   (removes exactly what the manifest lists)")
    pre = naming.prefix() + "-"
    stray_ns = [n for n in _listdir(NETNS_DIR) if n.startswith(pre) and n not in netns]
    stray_etc = [n for n in _listdir(ETC_NETNS) if n.startswith(pre)
                 and str(ETC_NETNS / n) not in dirs]
    # Not in any manifest: maybe ours from a run whose state was deleted, maybe a user's.
    # doctor never removes by name; it prints the commands for a human to judge.
    for n in stray_ns:
        yield Finding("problem", f"network namespace {n} has the emunet prefix but no manifest "
                      "lists it", f"if it is a leftover: sudo ip netns delete {n}")
    for n in stray_etc:
        yield Finding("problem", f"{ETC_NETNS / n} has the emunet prefix but no manifest lists "
                      "it", f"if it is a leftover: sudo rm -r {ETC_NETNS / n}")
    if not stray_ns and not stray_etc:
        yield _ok(f"no stray namespaces or {ETC_NETNS} entries named {pre}*")


def _listdir(d: Path) -> list[str]:
    try:
        return sorted(os.listdir(d))
    except OSError:
        return []


def check_vxlan_port() -> Iterator[Finding]:
    """In each existing node namespace, the VXLAN port must be free or its agent's."""
    try:
        state = json.loads((naming.run_dir() / "state.json").read_text())
    except (OSError, ValueError):
        yield _ok("VXLAN port: no node namespaces to check (no cluster state)")
        return

    port = state["cluster"]["vxlan_port"]
    agents = _agent_pids()
    for node in state["nodes"]:
        ns = node["netns"]
        if not netns_exists(ns):
            continue
        s = socket_in_netns(ns, socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("0.0.0.0", port))
            yield _ok(f"VXLAN UDP {port} free in {ns}")
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            if agents.get(node["name"]):
                yield _ok(f"VXLAN UDP {port} in {ns} is held by its agent")
            else:
                yield Finding("problem", f"VXLAN UDP {port} in {ns} is held by a process "
                              "that is not this node's agent",
                              f"find it: sudo ip netns exec {ns} ss -lunp 'sport = :{port}'; "
                              "then `sudo emunet down` (or end that process)")
        finally:
            s.close()


def _watchdog_alive() -> bool:
    try:
        return adopted.find(Manifest.open(naming.manifest_path()).processes(),
                            "watchdog") is not None
    except HostError:
        return False


def _agent_pids() -> dict[str, bool]:
    """Node -> whether its agent runs, from the manifest (pid and start time), not from the
    supervisor: after a supervisor crash the agents keep running (and holding their port)
    while no supervisor answers, and that is no alarm."""
    try:
        procs = Manifest.open(naming.manifest_path()).processes()
    except HostError:
        return {}
    roles = {e["role"] for e in procs if str(e.get("role", "")).startswith("agent-")}
    return {r.removeprefix("agent-"): adopted.find(procs, r) is not None for r in roles}


def check_datapath_build() -> Iterator[Finding]:
    """Which build of the hot modules an agent started now runs (emunet.native)."""
    compiled, why = native.decision()
    if compiled or native.ENV_PURE in why:  # chosen, not broken
        yield _ok(f"datapath: {why}")
    else:
        yield Finding("warn", f"datapath: {why}",
                      "sudo ./scripts/setup (it compiles the datapath when gcc and the Python "
                      "headers are there), or scripts/build-native")


CHECKS = (check_root, check_kernel, check_tools, check_leftovers, check_vxlan_port,
          check_datapath_build)


def run() -> list[Finding]:
    out: list[Finding] = []
    for check in CHECKS:
        try:
            out.extend(check())
        except Exception as e:  # a check that breaks is itself a finding, never a traceback
            out.append(Finding("problem", f"{check.__name__} failed: {type(e).__name__}: {e}",
                               "run with --debug and report it"))
    return out


def report(findings: list[Finding]) -> str:
    tag = {"ok": "ok  ", "warn": "WARN", "problem": "FAIL"}
    lines = []
    for f in findings:
        lines.append(f"{tag[f.level]}  {f.what}")
        if f.fix:
            lines.append(f"      fix: {f.fix}")
    n = sum(f.level == "problem" for f in findings)
    lines.append(f"{n} problem(s)" if n else "no problems found")
    return "\n".join(lines)
