"""The Python floor: the least any Python forwarder costs on this machine, in emunet's topology.

The datapath bench measures emunet against the kernel; this module answers the next question,
how much of the gap is emunet's logic and how much is Python itself. For a moment the cluster's
own agents are stopped (the supervisor is SIGSTOPped first so it does not restart them) and a
forwarder with no logic at all takes their place in each node namespace: AF_PACKET per pod veth
and a UDP socket on the VXLAN port, epoll (busy-polling as the agents do, spec.busyPoll), recv,
a MAC rewrite or an 8-byte VXLAN header, send.
No conntrack, NAT, policy, TTL, checksums or observability; ARP for the gateway is answered so the
pods keep their neighbour entries. What it cannot carry (NAT: the ClusterIP) it does not try:
its figures are to pod IPs, and the pods' checksum offload is turned off so their TCP segments
are complete without help. The supervisor is resumed afterwards and restarts the agents; the
cluster is torn down by the caller as usual. Not a section of its own (scripts/bench skips
`common*`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from bench.common_cluster import BenchCluster

FORWARDER = r'''
import json, os, select, socket, sys, time
state, node = json.load(open(sys.argv[1])), sys.argv[2]
nodes = {n["name"]: n for n in state["nodes"]}
me = nodes[node]
gw_mac = bytes.fromhex(me["gateway_mac"].replace(":", ""))
gw_ip = socket.inet_aton(me["gateway_ip"])
vxlan = bytes((8, 0, 0, 0)) + state["cluster"]["vxlan_vni"].to_bytes(3, "big") + b"\0"
port = state["cluster"]["vxlan_port"]
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind((me["underlay_ip"], port))
local, remote, peers = {}, {}, {}
for p in state["pods"]:
    ip = socket.inet_aton(p["ip"])
    if p["node"] == node:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        s.setsockopt(263, 23, 1)  # PACKET_IGNORE_OUTGOING
        s.bind((p["host_ifname"], 3))
        local[ip] = (s, bytes.fromhex(p["mac"].replace(":", "")) + gw_mac)
    else:
        u = nodes[p["node"]]["underlay_ip"]
        if u not in peers:
            peers[u] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            peers[u].bind((me["underlay_ip"], 0))
            peers[u].connect((u, port))
        remote[ip] = peers[u]

def from_pod(s):
    while True:
        try:
            f = s.recv(65536)
        except BlockingIOError:
            return
        if f[12:14] == b"\x08\x06":  # ARP: answer who-has for the gateway only
            if f[20:22] == b"\0\1" and f[38:42] == gw_ip:
                s.send(f[6:12] + gw_mac + f[12:20] + b"\0\2" + gw_mac + gw_ip + f[22:32])
            continue
        t = local.get(f[30:34])
        if t is not None:
            t[0].send(t[1] + f[12:])
            continue
        r = remote.get(f[30:34])
        if r is not None:
            r.send(vxlan + f)

def from_udp(_s):
    while True:
        try:
            g = udp.recv(65536)
        except BlockingIOError:
            return
        t = local.get(g[38:42])
        if t is not None:
            t[0].send(t[1] + g[20:])

ep, handlers = select.epoll(), {}
for s in [udp] + [t[0] for t in local.values()]:
    s.setblocking(False)
    ep.register(s.fileno(), select.EPOLLIN)
    handlers[s.fileno()] = (from_udp if s is udp else from_pod, s)
spin = state["cluster"].get("busy_poll_us", 0) * 1e-6  # the agents' busy-poll, the same way
busy = time.monotonic()
print("ready", flush=True)
while True:
    events = ep.poll(0)
    if not events:
        if time.monotonic() - busy < spin:
            os.sched_yield()
            continue
        events = ep.poll()
    for fd, _ in events:
        fn, s = handlers[fd]
        fn(s)
    busy = time.monotonic()
'''


def _supervisor_pid(c: BenchCluster) -> int:
    entries = json.loads((c.tmp / "run" / "manifest.json").read_text())["entries"]
    return next(e["pid"] for e in entries if e.get("kind") == "process")


def _agent_pids(c: BenchCluster, nodes: list[str]) -> list[int]:
    return [json.loads((c.tmp / "run" / f"agent-{n}.json").read_text())["pid"] for n in nodes]


class PythonFloor:
    """Context: the cluster's agents replaced by the no-logic forwarder, pods' tx offload off."""

    def __init__(self, c: BenchCluster, nodes: list[str], pods: list[str], ns: str) -> None:
        self.c, self.nodes, self.pods, self.ns = c, nodes, pods, ns
        self.procs: list[subprocess.Popen] = []
        self.sup = 0

    def __enter__(self) -> PythonFloor:
        self.sup = _supervisor_pid(self.c)
        os.kill(self.sup, signal.SIGSTOP)  # our own child of `emunet up`, by pid
        try:
            for pid in _agent_pids(self.c, self.nodes):
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):  # the VXLAN port is free once the agent is gone
                    if not os.path.exists(f"/proc/{pid}") or \
                            open(f"/proc/{pid}/stat").read().split()[2] == "Z":
                        break
                    time.sleep(0.02)
            for pod in self.pods:
                self.c.run_in(self.c.netns(self.ns, pod), "ethtool", "-K", "eth0", "tx", "off")
            state = str(self.c.tmp / "run" / "state.json")
            for node in self.nodes:
                p = subprocess.Popen(["ip", "netns", "exec", self.c.node_netns(node),
                                      "/usr/bin/python3", "-c", FORWARDER, state, node],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                self.procs.append(p)
                if p.stdout is None or p.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"python floor forwarder on {node} did not start: "
                                       f"{p.stderr.read() if p.stderr else ''}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        self.procs = []
        if self.sup:
            os.kill(self.sup, signal.SIGCONT)  # it restarts the agents; `down` follows
