"""The node agent: the I/O shell around one node's pure datapath.

Run by the supervisor inside the node namespace:
    ip netns exec <node netns> python -m emunet.agent --state /run/emunet/state.json --node n1

It opens one AF_PACKET socket per local pod veth (with a receive ring) and one UDP socket on
the VXLAN port, feeds every frame/datagram to `Datapath` (the readers: emunet.agent.rx), and
carries out the returned actions (emunet.agent.tx). A raw epoll loop (fd -> bound reader;
`selectors` costs ~1 µs more per wake-up, asyncio a callback hop), busy-polling for
spec.busyPoll µs after traffic; flow records are written in its idle time
(emunet.agent.flows). SIGHUP reloads
the state file and reports its generation in `loaded-agent-<node>` (emunet.state.loaded),
SIGTERM exits 0. Counters go to `<run_dir>/agent-<node>.json` every second, conntrack snapshots
to `conntrack-<node>.json` (emunet/agent/ctstore.py) so a restarted agent keeps established
connections.
"""

from __future__ import annotations

import json
import logging
import os
import random
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from emunet import native, nodeproc
from emunet.agent.ctstore import SAVE_INTERVAL, CtStore
from emunet.agent.flows import IDLE_CHUNK, INF, Records
from emunet.agent.rx import Receive
from emunet.agent.rxring import RxRing
from emunet.agent.tx import SO_NO_CHECK, SOL_UDP, UDP_GRO, Transmit
from emunet.datapath import NodeTables
from emunet.datapath.ctscrub import pod_owners
from emunet.datapath.netem import UnderlayShaper
from emunet.host.underlay import underlay_socket
from emunet.observe.flowlog import FlowLog
from emunet.observe.hook import ObservedDatapath
from emunet.policy.scope import node_unaffected
from emunet.state import loaded
from emunet.state.follow import Follower

log = logging.getLogger("emunet.agent")

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15  # frames carry a struct virtio_net_hdr: GSO super-frames kept whole
PACKET_IGNORE_OUTGOING = 23  # do not see our own transmissions (Linux >= 4.20)
# s: an unchanged counters file is rewritten this often (its "time"; `emunet status` calls
# counters older than 5 s an agent that may not be running)
COUNTERS_MAX_AGE = 4.0
# pod frames through PACKET_MMAP rings (emunet.agent.rxring); EMUNET_RX_RING=0: recv(), to
# measure one against the other (scripts/bench rxring, bench.datapath)
RX_RING = os.environ.get("EMUNET_RX_RING", "1") != "0"


class Agent(Receive, Transmit):
    """One node's agent: sockets, the receive loop, reloads, counters (sends: agenttx)."""

    def __init__(self, state_path: Path, node: str, run_dir: Path) -> None:
        self.state_path, self.node, self.run_dir = state_path, node, run_dir
        # Signals before the first read of the state: the supervisor starts us with SIGHUP
        # ignored, so a state published from here on is queued for a reload (in run) and one
        # published before is in the read below; none is missed.
        self.wake_r, self.wake_w = socket.socketpair()
        for s in (self.wake_r, self.wake_w):
            s.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno())
        self.pending: list[int] = []
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda n, _f: self.pending.append(n))
        # raw epoll, fd -> bound reader: selectors' key objects cost ~1 us per wakeup
        self.ep = select.epoll()
        self.handlers: dict[int, Callable[[float], None]] = {}
        self._watch(self.wake_r, self._drain_wakeups)
        self.ports: dict[str, socket.socket] = {}
        self.rings: dict[str, RxRing] = {}
        self.ring_dropped = 0  # frames a full ring lost (emunet.agent.rxring), closed rings
        self.missing: set[str] = set()
        self.peer_socks: dict[tuple[str, int], socket.socket] = {}
        self.tx_errors = 0
        self.csum_filled = 0
        # offloads (emunet.datapath.gso): the GSO segment size of the frame in hand (0: none)
        self.gso_size = 0
        self.gso_stats = {"gso_rx": 0, "gso_segments": 0, "gro_merged": 0, "gso_dropped": 0,
                          "eth0_gro_rx": 0}
        self.follow = Follower(state_path)
        self.follow.load()
        tables = self._load()
        # EMUNET_FASTPATH=0: every packet through the full pipeline (emunet.datapath.fastpath)
        self.dp = ObservedDatapath(tables, random.Random(),
                                   fastpath=os.environ.get("EMUNET_FASTPATH", "1") != "0")
        self.shaper = UnderlayShaper(random.Random())  # `emunet link set` (emunet.datapath.netem)
        self._shape()
        # conntrack (and so NAT) outlives this process: load the last agent's snapshot first
        self.ct_store = CtStore.attach(self.dp.ct, run_dir, node,
                                       self._state.cluster.conntrack_max, time.monotonic(),
                                       pod_owners(self._state))
        me = self._state.node(node)
        # flow events (emunet.observe): records appended to a capped file `observe` reads,
        # described in idle time (emunet.agent.flows)
        self.records = Records(FlowLog(run_dir / f"flows-{node}.jsonl"), node,
                               time.time() - time.monotonic())
        self._records_context()
        self.started = time.time()
        self._written: tuple[dict, float] | None = None  # counters file body, when written
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
        self._bufs(self.udp)
        self.udp.bind((me.underlay_ip, tables.vxlan_port))
        # UDP GRO: one recv returns a train of same-sized datagrams of one sender (the
        # underlay's GRO coalesced them; each is still a standard VXLAN datagram on the wire)
        self.udp.setsockopt(SOL_UDP, UDP_GRO, 1)
        self.big = self._state.cluster.mtu + 14  # a longer frame can only be a super-frame
        self.udp.setblocking(False)
        self._watch(self.udp, self._read_udp)
        # dual-stack: flannel-v6's tunnel, VXLAN over IPv6 between the nodes' underlay_ip6
        # (same VNI and port, emunet.datapath.ipv6); with UDP checksums, as Linux's vxlan
        # driver sends over IPv6 by default (udp6zerocsumtx off; RFC 6935 zero checksums are
        # opt-in)
        self.udp6: socket.socket | None = None
        if me.underlay_ip6 and tables.remotes_by_underlay6:
            self.udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            self.udp6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            self._bufs(self.udp6)
            self.udp6.bind((me.underlay_ip6, tables.vxlan_port))
            self.udp6.setsockopt(SOL_UDP, UDP_GRO, 1)
            self.udp6.setblocking(False)
            self._watch(self.udp6, lambda now, s=self.udp6: self._read_udp(now, s))
        # NodePort: TCP/UDP for this node's address in 30000-32767 (emunet/host/underlay.py)
        self.eth0: socket.socket | None = None
        try:
            self.eth0 = underlay_socket(me.underlay_ip, node_ip6=me.underlay_ip6)
            # eth0's GRO (on for the VXLAN socket's UDP_GRO) also merges an outside client's
            # TCP segments: the vnet header says so, and such a frame goes to its pod whole
            self.eth0.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            self._watch(self.eth0, self._read_eth0)
        except OSError as e:  # no underlay eth0 (a lone node built without one)
            log.info("no NodePort socket on eth0: %s", e)
        self._sync_ports()
        self._report_loaded()
        log.info("emunet agent %s: datapath %s", node, native.running())
        log.info("emunet agent %s: %d pods, underlay %s:%d, VNI %d", node,
                 len(tables.pods_by_port), me.underlay_ip, tables.vxlan_port, tables.vni)

    def _watch(self, s: socket.socket, reader: Callable[[float], None]) -> None:
        self.ep.register(s.fileno(), select.EPOLLIN)
        self.handlers[s.fileno()] = reader

    def _unwatch(self, s: socket.socket) -> None:
        self.ep.unregister(s.fileno())
        del self.handlers[s.fileno()]

    def _drain_wakeups(self, _now: float) -> None:
        while True:
            try:
                self.wake_r.recv(64)
            except BlockingIOError:
                return

    def _load(self) -> NodeTables:
        self._state = self.follow.state  # as loaded by the caller (emunet.state.follow)
        self.spin = self._state.cluster.busy_poll_us * 1e-6
        return NodeTables.from_state(self._state, self.node)

    def _sync_ports(self) -> None:
        """Open AF_PACKET sockets for new local pods (and the node's host port), close those
        of removed ones."""
        want = set(self.dp.tables.pods_by_port) | {self.dp.tables.host_port} - {""}
        for name in list(self.ports):
            if name not in want:
                self._close_port(name)
        self.missing = set()
        for name in want - set(self.ports):
            # protocol 0 first: the socket receives nothing until bound to its interface
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            ring = None
            try:
                s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
                self._bufs(s)
                # the ring before the bind: no frame may wait on the queue ahead of it, where
                # only the ring's TP_STATUS_COPY frames belong (emunet.agent.rxring)
                ring = RxRing(s) if RX_RING else None
                s.bind((name, ETH_P_ALL))
            except OSError as e:  # the veth may not exist yet: retried every second
                if ring is not None:
                    ring.close()
                s.close()
                if name not in self.missing:
                    log.debug("veth %s not ready: %s", name, e)
                self.missing.add(name)
                continue
            s.setblocking(False)
            self.ports[name] = s
            if ring is not None:
                self.rings[name] = ring
                self._watch(s, lambda now, r=ring, name=name: self._read_ring(r, name, now))
            else:
                self._watch(s, lambda now, s=s, name=name: self._read_port(s, name, now))

    def _close_port(self, name: str) -> None:
        s = self.ports.pop(name, None)
        if s is not None:
            self._unwatch(s)
            s.close()
        ring = self.rings.pop(name, None)
        if ring is not None:
            self.ring_dropped += ring.dropped() + ring.truncated
            ring.close()

    def _lose_port(self, name: str, err: OSError) -> None:
        """A veth vanished (pod deleted before our reload): close it, retry if still wanted."""
        self._close_port(name)
        if name in self.dp.tables.pods_by_port:
            self.missing.add(name)
        log.info("veth %s gone (%s)", name, err.strerror)

    def reload(self) -> None:
        old = self._state
        changes = self.follow.load()  # the delta when it follows what we hold
        if node_unaffected(changes, old, self.follow.state, self.node):
            # nothing this node's tables are built from (a policy for other nodes' pods)
            self._state = self.follow.state
            self._report_loaded()
            return
        self.dp.update(self._load(), time.monotonic())  # a new policy cuts what it denies
        self._records_context()
        self._shape()
        self.ct_store.configure(self._state.cluster.conntrack_max)
        self.ct_store.rescrub(pod_owners(self._state))  # IPs whose pod went or changed
        self._sync_ports()
        self._report_loaded()
        log.info("emunet agent %s: reloaded, %d pods (%d veths not ready)", self.node,
                 len(self.dp.tables.pods_by_port), len(self.missing))

    def _catch_up(self) -> None:
        """Reload when the published state file is not the one loaded and no SIGHUP is queued
        for it: a signal can be lost (one sent while we still ignored SIGHUP, as the supervisor
        starts us; two publishes merge into one pending signal, which is harmless), and a
        missed publish must not leave the datapath on an old state until the next one. Checked
        every second (a stat, off the packet path), so no publish goes unnoticed longer."""
        now = self.follow.current()
        if now is not None and now != self.follow.seen:
            self.follow.seen = now  # tried once per file, even if this file fails to load
            if signal.SIGHUP not in self.pending:
                log.info("emunet agent %s: state file changed without a SIGHUP; reloading",
                         self.node)
                self.pending.append(signal.SIGHUP)

    def _report_loaded(self) -> None:
        """Tell the supervisor which state the datapath now forwards by (emunet.state.loaded):
        `apply` and friends answer once every agent has it. Off the packet path."""
        try:
            loaded.report(self.run_dir, f"agent-{self.node}", self._state.generation)
        except OSError as e:
            log.warning("cannot report the loaded state: %s", e)

    def write_counters(self, force: bool = False) -> None:
        """The counters file `emunet status` reads, rewritten each second when something in
        it changed, else every COUNTERS_MAX_AGE s (issue 17's idle budget: 20 idle agents
        wrote 20 files a second). A change is on disk within a second, so a reader that
        wants the counters as of a moment waits a second past it at most (labs' baseline)."""
        c = {**self.dp.counters, **self.ct_store.counters(), "tx_errors": self.tx_errors,
             "csum_filled": self.csum_filled, **self.gso_stats, **self.shaper.counters()}
        c["flow_events_lost"] = self.dp.lost_events
        for ring in self.rings.values():  # PACKET_STATISTICS reads and resets
            self.ring_dropped += ring.dropped() + ring.truncated
            ring.truncated = 0
        c["ring_dropped"] = self.ring_dropped
        body = {"counters": c, "ports": sorted(self.ports), "missing_ports": sorted(self.missing)}
        now = time.monotonic()
        if not force and self._written is not None and self._written[0] == body \
                and now - self._written[1] < COUNTERS_MAX_AGE:
            return
        self._written = (body, now)
        doc = {"node": self.node, "pid": os.getpid(), "time": time.time(),
               "started": self.started, "datapath": native.running(), **body}
        path = self.run_dir / f"agent-{self.node}.json"
        tmp = path.with_suffix(".json.tmp")
        try:
            tmp.write_text(json.dumps(doc, sort_keys=True))
            os.replace(tmp, path)  # atomic: `emunet status` never reads half a file
        except OSError as e:
            log.warning("cannot write %s: %s", path, e)

    def _records_context(self) -> None:
        me = self._state.node(self.node)
        self.records.context(me.underlay_ip,
                             {p.port: p.name for p in self.dp.tables.pods_by_port.values()},
                             self.dp.tables.vxlan_port, me.underlay_ip6 or "")

    def run(self) -> int:
        next_tick = busy = time.monotonic()
        poll, handlers, yield_cpu = self.ep.poll, self.handlers, os.sched_yield
        records, ct_store = self.records, self.ct_store
        while True:
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + 1.0
                self.dp.expire(now)
                if self.missing:
                    self._sync_ports()
                self._catch_up()
                self.write_counters()
            events = poll(0)
            if not events:
                if now - busy < self.spin:
                    # busy-poll (spec.busyPoll, Linux's net.core.busy_poll): a reply usually
                    # follows within a few hundred µs; sleeping in epoll would add a wake-up
                    # and cold caches to its path. The wait describes a few kept events, or
                    # sched_yield lets pods run on this CPU.
                    if records.pending:
                        records.work(now, IDLE_CHUNK)
                    else:
                        yield_cpu()
                else:
                    if records.due != INF:  # idle: every record on disk before we sleep
                        records.work(now)
                    wake = min(next_tick, self.ct_store.due, self.shaper.due, records.due)
                    events = poll(max(0.0, wake - now))
            if events:
                now = busy = time.monotonic()
                for fd, _ in events:
                    handlers[fd](now)
            if self.shaper.due <= time.monotonic():  # delayed underlay sends now due
                Agent._act(self, self.shaper.release(time.monotonic()))
            dp = self.dp
            if dp.events:  # pinned now, described when idle (emunet.agent.flows)
                records.keep(dp.drain(), dp.ct.table, dp.traced)
                if now >= records.due:  # a load that never leaves us idle
                    records.work(now)
            if now >= ct_store.saved_at + SAVE_INTERVAL:  # the attribute test first: a turn
                ct_store.maybe_save(now)  # of the loop must stay cheap (its `due` is not)
            while self.pending:
                sig = self.pending.pop(0)
                if sig == signal.SIGHUP:
                    try:
                        self.reload()
                    except Exception as e:  # a bad state file must not kill the datapath
                        log.error("reload failed, keeping the old tables: %s", e)
                else:
                    log.info("emunet agent %s: exiting on signal %d", self.node, sig)
                    records.work(time.monotonic())
                    self.ct_store.save(time.monotonic())
                    self.write_counters(force=True)
                    return 0


def main(argv: list[str] | None = None) -> int:
    args = nodeproc.parse_args("emunet.agent", __doc__, argv)
    try:
        agent = Agent(args.state, args.node, args.run_dir)
    except Exception as e:
        if args.debug:
            raise
        log.error("emunet agent %s: cannot start: %s", args.node, e)
        return 1
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
