"""`emunet up` and `emunet down`: build a cluster all-or-nothing, and remove it completely.

`up` validates, plans, builds the host objects (recording each in the manifest as it goes),
starts the supervisor and waits until every pod is Ready and DNS answers through the datapath.
Any failure rolls back everything it made. `down` asks the supervisor to stop, then removes what
the manifest lists; it works after a crash too, because the manifest is written before each step.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from emunet import control, model, naming
from emunet.config import load_config
from emunet.errors import EmunetError
from emunet.host import adopted, kernelnode, netlink, tc
from emunet.host import underlay as nodeport
from emunet.l7 import listeners
from emunet.model import Config
from emunet.state import store
from emunet.state.cluster import KUBE_SYSTEM, ClusterState
from emunet.state.plan import plan

Progress = Callable[[str], None]
# `up` gives up on readiness only after this long with no pod becoming Ready (progress-based)
READY_TIMEOUT = 60.0
PROGRESS_EVERY = 5.0  # seconds between "pods ready: n/m" lines while `up` waits


FAIL_AT_ENV = "EMUNET_FAIL_AT"
# Overrides spec.apiServer.port (0: any free port): lets test clusters run side by side
API_PORT_ENV = "EMUNET_API_PORT"


class UserError(EmunetError):
    """A failure the user can act on; the message says what to do."""


def _fault(stage: str, n: int | None = None) -> None:
    """Test hook: EMUNET_FAIL_AT=<stage>[:<n>] makes `up` fail at that step, so tests can prove
    the rollback (tests/e2e/test_faults.py). Stages: node:<i>, underlay, pod:<i> (1-based, after
    the i-th is built), supervisor (after it started), ready (after every pod is Ready)."""
    want = os.environ.get(FAIL_AT_ENV)
    if want and want in (stage, f"{stage}:{n}"):
        raise UserError(f"failure injected at {want} ({FAIL_AT_ENV} is set: a test hook)")


manifest_path = naming.manifest_path


def is_up() -> bool:
    return manifest_path().exists()


def up(path: str, progress: Progress, cfg: Config | None = None) -> ClusterState:
    """Build and start the cluster of config file `path` (`cfg`: that file, already loaded)."""
    cfg = cfg or load_config(path)
    state = plan(cfg)
    for w in cfg.warnings:
        progress(f"warning: {w}")
    if is_up():
        raise UserError(f"a cluster is already up (state in {naming.run_dir()}): run "
                        "`emunet down` first, then `emunet up` again")
    netlink.preflight(state)
    state.cluster = dataclasses.replace(state.cluster, api_port=_api_port(state))
    rd = naming.run_dir()
    rd.mkdir(mode=0o700, parents=True, exist_ok=True)
    (rd / "logs").mkdir(exist_ok=True)
    m = netlink.Manifest.open(manifest_path())
    try:
        state.stamp(time.time())
        store.write(state)
        t0 = time.monotonic()
        for i, node in enumerate(state.nodes, 1):
            netlink.build_node(state, node, m)
            _fault("node", i)
        netlink.build_underlay(state, m, outside=True)
        for node in state.nodes:
            if kernelnode.is_kernel(state, node.name):
                kernelnode.build(state, node)  # Flannel + kube-proxy style; no agent
            else:  # node ports are the agent's, never the node kernel's (emunet/host/underlay.py)
                nodeport.install_ingress_drop(node.netns, node.underlay_ip, node.underlay_ip6)
                netlink.add_host_port(state, node)  # pods reach the node's own listeners
        tc.apply_declared(state)  # Cluster document: per-node impairment blocks
        _fault("underlay")
        c = state.cluster
        six = f" and {c.underlay_cidr6 or model.DEFAULT_UNDERLAY_CIDR6}" if c.dual_stack else ""
        progress(f"nodes: {', '.join(n.name for n in state.nodes)} (underlay "
                 f"{c.underlay_cidr}{six}, VXLAN VNI {c.vxlan_vni} UDP {c.vxlan_port})")
        netlink.record_pods_ahead(state, m)  # one manifest write, not three per pod
        with netlink.held_sockets():  # one netlink socket per node namespace, not per pod
            for i, ps in enumerate(state.pods.values(), 1):
                netlink.add_pod(state, ps, m)
                _fault("pod", i)
        progress(f"pods: {len(state.pods)} namespaces and veth pairs "
                 f"({time.monotonic() - t0:.2f}s)")
        _start_supervisor(m)
        progress("supervisor started: node agents, CoreDNS, workloads")
        _fault("supervisor")
        _wait_ready(state, progress)
        _wait_api(state.cluster.api_port, progress)
        write_kubeconfig(state.cluster.api_port)
        _fault("ready")
        return store.read()
    except BaseException:
        progress("rolling back")
        # The supervisor records its children in the manifest file itself: stop it first (so
        # it starts nothing more), then remove what the file, not our stale copy, lists.
        _stop_supervisor(progress)
        _remove_all(netlink.Manifest.open(manifest_path()))
        raise


def _api_port(state: ClusterState) -> int:
    """The API server's port: the config's (or $EMUNET_API_PORT), checked free on 127.0.0.1
    now, so a taken port is a clear error before anything is built; 0 picks a free one."""
    want = state.cluster.api_port
    env = os.environ.get(API_PORT_ENV)
    if env is not None:
        if not env.isdigit() or int(env) > 65535:
            raise UserError(f"${API_PORT_ENV}={env!r} is not a TCP port (0-65535)")
        want = int(env)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", want))
        return s.getsockname()[1]
    except OSError as e:
        where = (f"${API_PORT_ENV}" if env is not None else
                 f"{state.cluster.loc}: spec.apiServer.port" if state.cluster.loc else "port")
        raise UserError(f"{where}: 127.0.0.1:{want} is taken ({e.strerror}): the API server "
                        "cannot listen there; stop what uses it (`ss -ltnp sport = :"
                        f"{want}`) or set spec.apiServer.port (0: any free port)") from None
    finally:
        s.close()


def _wait_api(port: int, progress: Progress) -> None:
    """Until the API server answers /version (it binds after the supervisor starts it)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Connection: close\r\n\r\n")
                if s.recv(64).split(b"\r\n", 1)[0].endswith(b" 200 OK"):
                    progress(f"Kubernetes API at http://127.0.0.1:{port}")
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise UserError(f"the API server does not answer on 127.0.0.1:{port}; see "
                    f"{naming.run_dir()}/logs/apiserver.log")


kubeconfig_path = naming.kubeconfig_path


def kubeconfig_text(port: int) -> str:
    """A kubeconfig for kubectl and client libraries: plain HTTP on loopback, no credentials
    (the API binds 127.0.0.1 only; the file is root-only like the rest of the run dir)."""
    return (f"apiVersion: v1\nkind: Config\nclusters:\n- name: emunet\n  cluster:\n"
            f"    server: http://127.0.0.1:{port}\nusers:\n- name: emunet-admin\n  user: {{}}\n"
            "contexts:\n- name: emunet\n  context:\n    cluster: emunet\n"
            "    user: emunet-admin\n    namespace: default\ncurrent-context: emunet\n")


def write_kubeconfig(port: int) -> None:
    p = kubeconfig_path()
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(kubeconfig_text(port))


def _start_supervisor(m: netlink.Manifest, resumed: int = 0) -> None:
    """Start the watchdog, which starts the supervisor (and restarts it after a crash:
    emunet.cluster.watchdog); it writes the manifest only after we say go. `resumed`: the
    supervisors that ran before (`up --resume`: the first one adopts the cluster)."""
    logf = open(naming.run_dir() / "logs" / "watchdog.log", "ab")  # noqa: SIM115
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    argv = [sys.executable, "-m", "emunet.cluster.watchdog"]
    argv += ["--resume", str(resumed)] if resumed else []
    p = subprocess.Popen(argv, stdin=subprocess.PIPE,
                         stdout=logf, stderr=subprocess.STDOUT, env=env,
                         start_new_session=True)
    logf.close()
    m.add_process(p.pid, "watchdog")
    assert p.stdin is not None
    p.stdin.write(b"go\n")
    p.stdin.close()


def _wait_ready(state: ClusterState, progress: Progress) -> None:
    """Until every pod is Ready and every reader forwards by that state, then DNS and the L7
    listeners. Progress-based: it gives up only when READY_TIMEOUT passes with no pod becoming
    Ready and no reader catching up (a 2,000-pod cluster takes longer than any fixed bound a
    4-pod one should wait), and says how far it is every PROGRESS_EVERY seconds."""
    now = time.monotonic()
    stall_until, say_at = now + READY_TIMEOUT, now + PROGRESS_EVERY
    st: dict = {}
    best: tuple[int, int] = (-1, 0)
    while time.monotonic() < stall_until:
        try:
            st = control.request("status", timeout=5)
        except (control.ControlError, OSError):  # busy (TimeoutError) or not yet listening
            st = {}
        if st:
            mark = (st["pods_ready"], -len(st.get("behind") or ()))
            if mark > best:  # a pod became Ready or a reader caught up: not stuck
                best, stall_until = mark, time.monotonic() + READY_TIMEOUT
        # A pod whose readiness probe has failed is running as declared: `up` says so and
        # does not wait for it (kubectl apply does not wait for readiness either).
        # ... and every agent, proxy and the DNS responder forwards by the state that says
        # so (emunet.state.loaded): else the first request after `up` may meet an agent that
        # still has the pod unready (a readiness publish lands while the agents start)
        if st and st["pods_ready"] + st.get("pods_held", 0) == st["pods"] and all(
                c["alive"] for c in st["children"].values()) and not st.get("behind"):
            break
        if st and time.monotonic() >= say_at:
            say_at = time.monotonic() + PROGRESS_EVERY
            progress(f"pods ready: {st['pods_ready']}/{st['pods']} ...")
        time.sleep(0.1)  # the supervisor answers from memory; its tick is 0.25 s
    else:
        if st.get("behind") and st["pods_ready"] + st.get("pods_held", 0) == st["pods"]:
            raise UserError(f"{', '.join(st['behind'])} did not load the cluster state within "
                            f"{READY_TIMEOUT:.0f}s; see {naming.run_dir()}/logs/")
        raise UserError(f"pods not ready: none became Ready for {READY_TIMEOUT:.0f}s "
                        f"({st.get('pods_ready', best[0] if best[0] >= 0 else 0)}/"
                        f"{len(state.pods)}); see {naming.run_dir()}/logs/")
    progress(f"pods ready: {st['pods_ready']}/{st['pods']}" + (
        f" ({st['pods_held']} not Ready: a readiness or startup probe failing; see "
        "`emunet get events`)" if st.get("pods_held") else ""))
    deadline = time.monotonic() + READY_TIMEOUT
    probe = _probe_pod(state)
    name = f"kube-dns.{KUBE_SYSTEM}.svc.{state.cluster.cluster_domain}"
    while time.monotonic() < deadline:
        if dns_query(probe.netns, state.cluster.cluster_dns, name) == state.cluster.cluster_dns:
            progress(f"DNS answers at {state.cluster.cluster_dns} (asked from {probe.pod.name})")
            break
        time.sleep(0.1)
    else:
        raise UserError(f"DNS at {state.cluster.cluster_dns} does not answer; see "
                        f"{naming.run_dir()}/logs/dns.log and agent logs")
    _wait_l7(state, deadline, progress)


def _wait_l7(state: ClusterState, deadline: float, progress: Progress) -> None:
    """Until every L7 proxy listener the state needs is open (emunet.l7.listeners): before
    that, a connection its policy redirects would be refused."""
    want = listeners.expected(state)
    if not want:
        return
    run = naming.run_dir()
    while time.monotonic() < deadline:
        late = sorted(n for n, ls in want.items() if not ls <= listeners.open_on(run, n))
        if not late:
            progress(f"L7 proxies listening: {sum(map(len, want.values()))} redirected "
                     f"port(s) on {len(want)} node(s)")
            return
        time.sleep(0.05)
    raise UserError(f"the L7 proxy of {', '.join(late)} is not listening on every redirected "
                    f"port; see {run}/logs/l7proxy-{late[0]}.log")


def _probe_pod(state: ClusterState):
    pods = sorted(state.pods.values(), key=lambda p: (p.pod.namespace == KUBE_SYSTEM, p.key))
    return pods[0]


def dns_query(netns: str, server: str, name: str, timeout: float = 0.5) -> str | None:
    """Ask `server` for the A record of `name` from inside `netns`; the first address or None.

    A minimal RFC 1035 query (header, one question), enough for a readiness probe that takes
    the same path as a pod's own lookups (DNAT to the coredns pod, overlay if remote).
    """
    qid = random.randrange(65536)
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    q += struct.pack("!HH", 1, 1)
    s = netlink.socket_in_netns(netns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(q, (server, 53))
        data = s.recv(4096)
    except OSError:
        return None
    finally:
        s.close()
    rid, flags, _qd, an = struct.unpack_from("!HHHH", data)
    if rid != qid or flags & 0xF or an == 0:
        return None
    return ".".join(str(b) for b in data[-4:])  # the last answer's RDATA (an A record)


def down(progress: Progress) -> bool:
    """Stop and remove everything; False if there was nothing to remove."""
    if not is_up():
        if naming.run_dir().exists():
            shutil.rmtree(naming.run_dir(), ignore_errors=True)
        return False
    if not _stop_supervisor(progress):
        progress("supervisor not running; cleaning up from the manifest")
    _remove_all(netlink.Manifest.open(manifest_path()))
    return True


def _stop_supervisor(progress: Progress) -> bool:
    """Ask a running supervisor to stop its children and exit; False if none answers."""
    try:
        pid = control.request("ping", timeout=2)["pid"]
        control.request("shutdown", timeout=5)
    except (control.ControlError, OSError):
        return False
    _wait_gone(pid, 5.0)
    progress("supervisor stopped")
    return True


def _wait_gone(pid: int, timeout: float) -> None:
    """Until `pid` has exited. A zombie has: the supervisor's parent is init (it outlives the
    `up` that started it), which may take a second to reap it, and a zombie holds nothing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rpartition(")")[2].split()[0] == "Z":
                    return
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return
        time.sleep(0.02)


def _remove_all(m: netlink.Manifest) -> None:
    netlink.teardown(m)
    shutil.rmtree(naming.run_dir(), ignore_errors=True)


def resume(progress: Progress) -> ClusterState:
    """`emunet up --resume`: a cluster whose supervisor is gone and whose watchdog is gone too
    (killed, or it gave up on a supervisor that kept dying) gets a new watchdog, whose first
    supervisor adopts what still runs (emunet.cluster.adopt) and restarts what does not."""
    if not is_up():
        raise UserError(f"no cluster to resume (no manifest in {naming.run_dir()}): run "
                        "`emunet up CONFIG`")
    try:
        pid = control.request("ping", timeout=2)["pid"]
    except (control.ControlError, OSError):
        pid = None
    if pid is not None:
        raise UserError(f"the cluster's supervisor is running (pid {pid}): nothing to resume")
    m = netlink.Manifest.open(manifest_path())
    procs = m.processes()
    if adopted.find(procs, "watchdog") is not None:
        raise UserError("the cluster's watchdog is running and restarts the supervisor: wait "
                        f"a few seconds, or see {naming.run_dir()}/logs/watchdog.log")
    state = store.read()
    _start_supervisor(m, resumed=max(1, sum(e.get("role") == "supervisor" for e in procs)))
    progress("watchdog started: the supervisor adopts the running cluster")
    _wait_ready(state, progress)
    return store.read()
