"""The host layer against the real kernel: namespaces, veths, addresses, checked with ip/ethtool.

Needs root. Every object carries the prefix emt<pid> (EMUNET_PREFIX) and is removed by the
fixture, also when a test fails; the run dir is a temporary directory.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from emunet import model, naming
from emunet.host import netlink
from emunet.state.cluster import ClusterState
from emunet.state.plan import plan

PREFIX = f"emt{os.getpid()}"
REPO = Path(__file__).resolve().parents[2]


def _config(nodes: int) -> model.Config:
    return model.Config(
        cluster=model.ClusterSpec(nodes=tuple(model.NodeSpec(f"node-{i}")
                                              for i in range(1, nodes + 1))),
        namespaces=(model.Namespace("blog"),),
        pods=(model.Pod("blog", "frontend", node_name="node-1", hostname="web",
                        subdomain="site"),
              model.Pod("blog", "backend", node_name="node-1"),
              model.Pod("blog", "db", node_name=f"node-{nodes}")),
    )


def _leftovers() -> list[str]:
    etc = sorted(p.name for p in netlink.ETC_NETNS.glob(PREFIX + "-*"))
    return [n for n in netlink.list_netns() if n.startswith(PREFIX + "-")] + etc


def _build(state: ClusterState, m: netlink.Manifest) -> None:
    netlink.preflight(state)
    for node in state.nodes:
        netlink.build_node(state, node, m)
    netlink.build_underlay(state, m)
    for pod in state.pods.values():
        netlink.add_pod(state, pod, m)


@pytest.fixture
def env(monkeypatch, tmp_path):
    """Prefix and run dir set BEFORE any state is planned (names are derived from them)."""
    monkeypatch.setenv("EMUNET_PREFIX", PREFIX)
    monkeypatch.setenv("EMUNET_RUN_DIR", str(tmp_path))
    assert not _leftovers(), f"leftovers from an earlier run: {_leftovers()}"
    m = netlink.Manifest.open(tmp_path / "manifest.json")
    yield m
    try:
        netlink.teardown(m)
    finally:
        # Safety net for this test's own unique prefix only, so a failing test cannot leave
        # namespaces behind on a shared machine; the assertion still reports it.
        left = _leftovers()
        for name in left:
            if name in netlink.list_netns():
                subprocess.run(["ip", "netns", "delete", name], check=False)
            shutil.rmtree(netlink.ETC_NETNS / name, ignore_errors=True)
        assert not left, f"teardown left {left}"


@pytest.fixture
def two(env):
    state = plan(_config(2))
    _build(state, env)
    return state, env


@pytest.fixture
def three(env):
    state = plan(_config(3))
    _build(state, env)
    return state, env


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=20)


def ipj(netns: str, *args: str) -> list[dict]:
    return json.loads(sh("ip", "-j", "-n", netns, *args).stdout)


def in_ns(netns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", netns, *cmd, check=check)


def pings(netns: str, ip: str) -> bool:
    return in_ns(netns, "ping", "-c1", "-W0.5", ip, check=False).returncode == 0


def pod(state: ClusterState, name: str, ns: str = "blog"):
    return state.pods[(ns, name)]


# ---- two nodes ---------------------------------------------------------------------------------

def test_pod_interfaces_addresses_and_routes(two):
    state, _ = two
    for p in state.pods.values():
        node = state.node(p.node)
        (eth0,) = ipj(p.netns, "addr", "show", "dev", "eth0")
        assert eth0["mtu"] == 1450 and eth0["address"] == p.mac and eth0["operstate"] == "UP"
        assert [(a["family"], a["local"], a["prefixlen"]) for a in eth0["addr_info"]] == [
            ("inet", p.ip, 24)]
        (lo,) = ipj(p.netns, "link", "show", "dev", "lo")
        assert "UP" in lo["flags"]
        routes = ipj(p.netns, "route", "show", "default")
        assert [(r["dst"], r["gateway"], r["dev"]) for r in routes] == [
            ("default", node.gateway_ip, "eth0")]
        (end,) = ipj(node.netns, "addr", "show", "dev", p.host_ifname)
        assert end["mtu"] == 1450 and end["operstate"] == "UP" and end["addr_info"] == []


def test_nodes_underlay_sysctls_and_no_ipv6(two):
    state, _ = two
    for n in state.nodes:
        (eth0,) = ipj(n.netns, "addr", "show", "dev", "eth0")
        assert eth0["mtu"] == 1500 and eth0["operstate"] == "UP"
        assert [(a["local"], a["prefixlen"]) for a in eth0["addr_info"]] == [
            (n.underlay_ip, 24)]
    for ns in [n.netns for n in state.nodes] + [p.netns for p in state.pods.values()]:
        assert in_ns(ns, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"
        assert in_ns(ns, "sysctl", "-n", "net.ipv6.conf.all.disable_ipv6").stdout.strip() == "1"
        assert all(not link["addr_info"] for link in ipj(ns, "-6", "addr"))  # not even fe80::


def test_resolv_conf_and_hosts_inside_the_pod(two):
    state, _ = two
    fe = pod(state, "frontend")
    assert in_ns(fe.netns, "cat", "/etc/resolv.conf").stdout == (
        "search blog.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.43.0.10\noptions ndots:5\n")
    hosts = in_ns(fe.netns, "cat", "/etc/hosts").stdout
    assert "127.0.0.1\tlocalhost\n" in hosts
    assert f"{fe.ip}\tweb.site.blog.svc.cluster.local\tweb\n" in hosts
    dns = next(p for p in state.pods.values() if p.pod.namespace == "kube-system")
    assert "search kube-system.svc.cluster.local" in in_ns(dns.netns, "cat",
                                                           "/etc/resolv.conf").stdout


@pytest.mark.parametrize("offloads", [False, True])
def test_offloads_on_both_veth_ends(env, offloads):
    # spec.offloads: false -> every offload off; true (the default) -> TCP segmentation and
    # checksum offloads on (the agent takes super-frames with a vnet header), UDP
    # segmentation and GRO still off; the underlay eth0 sends MTU-sized, complete frames.
    cfg = _config(2)
    cfg = dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, offloads=offloads))
    state = plan(cfg)
    _build(state, env)
    on = "on" if offloads else "off"
    for p in state.pods.values():
        for ns, ifname in ((p.netns, "eth0"), (state.node(p.node).netns, p.host_ifname)):
            out = in_ns(ns, "ethtool", "-k", ifname).stdout
            for feature in ("tx-checksumming", "tcp-segmentation-offload"):
                assert f"{feature}: {on}" in out, (ns, ifname, feature)
            for feature in ("generic-receive-offload", "tx-udp-segmentation"):
                assert f"{feature}: off" in out, (ns, ifname, feature)
    for n in state.nodes:
        out = in_ns(n.netns, "ethtool", "-k", "eth0").stdout
        for feature in ("tx-checksumming", "tcp-segmentation-offload", "tx-udp-segmentation"):
            assert f"{feature}: off" in out or not offloads, (n.name, feature)
        assert f"generic-receive-offload: {on}" in out or not offloads, n.name


def test_underlay_pings_but_pods_cannot_reach_each_other(two):
    state, _ = two
    n1, n2 = state.nodes
    assert pings(n1.netns, n2.underlay_ip) and pings(n2.netns, n1.underlay_ip)
    fe, be, db = pod(state, "frontend"), pod(state, "backend"), pod(state, "db")
    # No agent runs: nothing answers ARP for the gateway and the kernel does not forward.
    assert not pings(fe.netns, be.ip)  # same node
    assert not pings(fe.netns, db.ip)  # across the underlay
    assert not pings(fe.netns, state.node(fe.node).gateway_ip)


def test_socket_in_netns_talks_over_the_underlay(two):
    state, _ = two
    n1, n2 = state.nodes
    before = os.stat("/proc/thread-self/ns/net").st_ino
    a = netlink.socket_in_netns(n1.netns, socket.AF_INET, socket.SOCK_DGRAM)
    b = netlink.socket_in_netns(n2.netns, socket.AF_INET, socket.SOCK_DGRAM)
    assert os.stat("/proc/thread-self/ns/net").st_ino == before  # this thread came back
    with a, b:
        a.bind((n1.underlay_ip, 0))  # the address only exists in node-1's namespace
        b.bind((n2.underlay_ip, 0))
        b.settimeout(2)
        a.sendto(b"hello", b.getsockname())
        data, src = b.recvfrom(100)
        assert (data, src) == (b"hello", a.getsockname())
    with pytest.raises(OSError):  # and not in ours
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            s.bind((n1.underlay_ip, 0))


def test_preflight_and_existing_objects_give_user_facing_errors(two):
    state, m = two
    with pytest.raises(netlink.HostError, match=r"network namespace emt\d+-node-1 already exists "
                                             r"\(left over from an earlier run\?\): run "
                                             r"`emunet down`"):
        netlink.preflight(state)
    with pytest.raises(netlink.HostError, match="already exists"):
        netlink.build_node(state, state.nodes[0], m)
    assert m.netns().count(state.nodes[0].netns) == 1
    with pytest.raises(netlink.HostError, match="already exists"):
        netlink.build_underlay(state, m)


def test_remove_pod_kills_its_processes_and_removes_everything(two):
    state, m = two
    be = pod(state, "backend")
    proc = subprocess.Popen(["ip", "netns", "exec", be.netns, "sleep", "60"])
    m.add_process(proc.pid, "container", netns=be.netns)
    netlink.remove_pod(be, m)
    assert proc.wait(timeout=5) != 0  # killed, not finished
    assert not netlink.netns_exists(be.netns)
    assert not (netlink.ETC_NETNS / be.netns).exists()
    assert ipj(state.node(be.node).netns, "link", "show") and not any(
        link["ifname"] == be.host_ifname for link in ipj(state.node(be.node).netns, "link"))
    assert be.netns not in m.netns() and not m.processes()
    assert netlink.netns_exists(pod(state, "frontend").netns)  # neighbours untouched


def test_teardown_removes_everything_and_is_idempotent(two, tmp_path):
    state, m = two
    sleeper = subprocess.Popen(["sleep", "60"])
    m.add_process(sleeper.pid, "agent")
    netlink.teardown(m)
    assert sleeper.wait(timeout=5) == -15  # SIGTERM was enough
    assert _leftovers() == [] and m.entries == []
    assert netlink.Manifest.open(m.path).entries == []
    netlink.teardown(m)  # nothing left to do, no error
    netlink.teardown(netlink.Manifest.open(tmp_path / "never-written.json"))


def test_teardown_never_kills_a_recycled_pid(env):
    other = subprocess.Popen(["sleep", "60"])
    try:
        start = netlink.process_start_time(other.pid)
        # The manifest says this pid was started at another time: it is someone else now.
        env.path.write_text(json.dumps({"version": 1, "entries": [
            {"kind": "process", "pid": other.pid, "start_time": start - 1, "role": "agent",
             "netns": None}]}))
        netlink.teardown(netlink.Manifest.open(env.path))
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_threads_build_pods_concurrently(env):
    cfg = _config(2)
    cfg = model.Config(cluster=cfg.cluster, namespaces=cfg.namespaces,
                       pods=tuple(model.Pod("blog", f"p{i}") for i in range(12)))
    state = plan(cfg)
    for node in state.nodes:
        netlink.build_node(state, node, env)
    netlink.build_underlay(state, env)
    before = os.stat("/proc/thread-self/ns/net").st_ino
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda p: netlink.add_pod(state, p, env), state.pods.values()))
    assert os.stat("/proc/thread-self/ns/net").st_ino == before
    for p in state.pods.values():
        (eth0,) = ipj(p.netns, "addr", "show", "dev", "eth0")
        assert eth0["addr_info"][0]["local"] == p.ip and eth0["address"] == p.mac
    assert len(env.netns()) == 2 + len(state.pods)


def test_up_of_two_nodes_and_six_pods_is_fast(env):
    cfg = _config(2)
    cfg = model.Config(cluster=cfg.cluster, namespaces=cfg.namespaces,
                       pods=tuple(model.Pod("blog", f"p{i}") for i in range(5)))  # + coredns
    state = plan(cfg)
    t = time.perf_counter()
    _build(state, env)
    assert time.perf_counter() - t < 3.0


# ---- three nodes: the bridge -------------------------------------------------------------------

def test_three_nodes_share_a_bridge(three):
    state, _ = three
    under = naming.underlay_netns()
    links = {link["ifname"]: link for link in ipj(under, "link", "show")}
    assert "UP" in links["br0"]["flags"] and links["br0"]["mtu"] == 1500
    for n in state.nodes:
        port = links[f"port{n.index}"]
        assert port["master"] == "br0" and "UP" in port["flags"] and port["mtu"] == 1500
        (eth0,) = ipj(n.netns, "addr", "show", "dev", "eth0")
        assert eth0["addr_info"][0]["local"] == n.underlay_ip
    n1, n2, n3 = state.nodes
    assert pings(n1.netns, n3.underlay_ip) and pings(n2.netns, n3.underlay_ip)
    assert pings(n3.netns, n1.underlay_ip)
    assert in_ns(under, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"


# ---- failures ----------------------------------------------------------------------------------

def test_failed_add_pod_cleans_up_after_itself(two, monkeypatch):
    state, m = two
    real = netlink._offloads_only

    def broken(ifname: str, netns: str, keep: tuple[str, ...]) -> None:
        if ifname == "eth0":
            raise netlink.HostError("injected failure")
        real(ifname, netns, keep)

    monkeypatch.setattr(netlink, "_offloads_only", broken)
    extra = state.add_pod(model.Pod("blog", "late", node_name="node-2"))
    with pytest.raises(netlink.HostError, match="injected"):
        netlink.add_pod(state, extra, m)
    assert not netlink.netns_exists(extra.netns) and extra.netns not in m.netns()
    assert not (netlink.ETC_NETNS / extra.netns).exists()
    assert not any(link["ifname"] == extra.host_ifname
                   for link in ipj(state.node("node-2").netns, "link"))


def test_a_build_that_crashes_halfway_is_cleaned_up_from_its_manifest(env, tmp_path):
    # A separate process builds and dies abruptly (os._exit: no finally, no rollback) while
    # adding the third pod; only the manifest it left on disk is used to clean up.
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from emunet import model
        from emunet.host import netlink
        from emunet.state.plan import plan
        from tests.integration.test_host import _config, _build
        calls = []
        real = netlink._offloads_only
        def dying(ifname, netns, keep):
            calls.append(ifname)
            if len(calls) == 7:  # the nodes' eth0 (2), two pods' veth ends (4), the third's
                os._exit(3)
            real(ifname, netns, keep)
        netlink._offloads_only = dying
        _build(plan(_config(2)), netlink.Manifest.open({str(env.path)!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=dict(os.environ),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    m = netlink.Manifest.open(env.path)
    assert len(m.netns()) >= 5 and all(netlink.netns_exists(n) for n in m.netns())
    assert _leftovers()
    netlink.teardown(m)
    assert _leftovers() == []


def test_one_node_has_no_underlay(env):
    state = plan(_config(1))
    _build(state, env)
    (node,) = state.nodes
    assert [link["ifname"] for link in ipj(node.netns, "link")
            if not link["ifname"].startswith("veth")] == ["lo"]
    assert not netlink.netns_exists(naming.underlay_netns())
