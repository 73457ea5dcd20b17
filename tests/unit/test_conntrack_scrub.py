"""Conntrack forgets what it must (issue 15 §2): every entry naming an IP whose pod went or
changed, on reload and in the snapshot; and an established connection a new NetworkPolicy
denies is cut, as Cilium does."""

from __future__ import annotations

import dataclasses
import json
import socket

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from emunet.agent.ctstore import CtStore
from emunet.config import load_config_text
from emunet.datapath import Drop, DropReason, NodeTables, Send
from emunet.datapath.conntrack import Conntrack
from emunet.datapath.ctscrub import pod_owners, stale_ips
from emunet.model import Pod
from tests.unit.pipeline_pair import (
    BLOG_CLUSTER,
    GW2_MAC,
    GW_MAC,
    VIP,
    WEB_FROM_CLIENT,
    PipelinePair,
    make_state,
    pod,
)

DENY_OTHER = BLOG_CLUSTER + WEB_FROM_CLIENT


def seg(src, dst_ip: str, sport: int, dport: int, flags: str, gw: str = GW_MAC) -> bytes:
    return bytes(Ether(src=src.mac, dst=gw) / IP(src=src.ip, dst=dst_ip)
                 / TCP(sport=sport, dport=dport, flags=flags))


def _handshake(pair: PipelinePair, c, w, dst: str, dport: int, sport: int) -> None:
    [s] = pair.send("node-1", seg(c, dst, sport, dport, "S"), c.host_ifname)
    assert s.port == w.host_ifname
    [s] = pair.send("node-2", seg(w, c.ip, 8080, sport, "SA", GW2_MAC), w.host_ifname)
    assert s.port == c.host_ifname
    pair.send("node-1", seg(c, dst, sport, dport, "A"), c.host_ifname)


def _ip(s: str) -> bytes:
    return socket.inet_aton(s)


def test_flush_ips_forgets_every_entry_naming_the_ip_in_either_tuple():
    st = make_state()
    pair = PipelinePair(st)
    c, o, w = pod(st, "client"), pod(st, "other"), pod(st, "web-0")
    _handshake(pair, c, w, VIP, 80, 40000)  # web-0 only in the reply tuple on node-1
    _handshake(pair, c, w, w.ip, 8080, 40001)  # and in the original one
    pair.send("node-1", seg(c, o.ip, 40002, 7, "S"), c.host_ifname)  # unrelated
    dp1, dp2 = pair.dps["node-1"], pair.dps["node-2"]
    assert (len(dp1.ct), len(dp2.ct)) == (3, 2)
    assert dp1.ct.flush_ips(frozenset({_ip(w.ip)})) == 2
    assert dp2.ct.flush_ips({_ip(c.ip)}) == 2  # the client's IP: either direction
    (left,) = dp1.ct.conns()
    assert left.orig[1] == _ip(o.ip) and len(dp2.ct) == 0


def test_stale_ips_are_those_whose_pod_went_or_changed():
    st = make_state(web_nodes=("node-2", "node-2"))
    old = pod_owners(st)
    w0, w1, c = pod(st, "web-0"), pod(st, "web-1"), pod(st, "client")
    st.remove_pod(w0.key)  # removed
    # web-1's IP now held by a new pod of another name (same address, other labels)
    st.remove_pod(w1.key)
    st.pods[("blog", "intruder")] = dataclasses.replace(
        w1, pod=Pod(namespace="blog", name="intruder", node_name="node-2"))
    st.created["Pod/blog/client"] = 5.0  # stamped after: still the same pod
    new = pod_owners(st)
    assert stale_ips(old, new) == {_ip(w0.ip), _ip(w1.ip)}
    assert _ip(c.ip) not in stale_ips(old, new)
    # the same name re-created (another creation time, so another uid): another pod
    st.created["Pod/blog/client"] = 6.0
    assert stale_ips(new, pod_owners(st)) == {_ip(c.ip)}
    assert stale_ips(new, new) == frozenset()


def test_reload_and_snapshot_forget_a_removed_pods_connections(tmp_path):
    """The IP-reuse bypass: after web-0 goes, no entry of its address survives, neither in
    the running agent (rescrub on reload) nor in a snapshot a new agent loads."""
    st = make_state(web_nodes=("node-2", "node-2"))
    pair = PipelinePair(st)
    c, w0, w1 = pod(st, "client"), pod(st, "web-0"), pod(st, "web-1")
    _handshake(pair, c, w0, w0.ip, 8080, 40000)
    _handshake(pair, c, w1, w1.ip, 8080, 40001)
    ct = pair.dps["node-1"].ct
    store = CtStore.attach(ct, tmp_path, "node-1", None, pair.now, pod_owners(st))
    store.save(pair.now)
    old_snapshot = store.path.read_text()
    assert len(json.loads(old_snapshot)["conns"]) == 2
    st.remove_pod(w0.key)
    assert store.rescrub(pod_owners(st)) == 1  # what the agent's reload does
    assert [x.orig[1] for x in ct.conns()] == [_ip(w1.ip)]
    store.save(pair.now)
    assert w0.ip not in json.loads(store.path.read_text())["pods"]
    # an agent that died before the change: its snapshot still names web-0's connection
    store.path.write_text(old_snapshot)
    fresh = Conntrack()
    again = CtStore.attach(fresh, tmp_path, "node-1", None, pair.now, pod_owners(st))
    assert again.restored == 2 and again.flushed == 1
    assert [x.orig[1] for x in fresh.conns()] == [_ip(w1.ip)]


def test_a_new_policy_cuts_an_established_connection_it_denies():
    """Cilium looks policy up for every packet that is not a reply, so a policy applied
    later cuts a connection it denies (emunet chooses Cilium's behaviour, ctscrub.police)."""
    st = make_state()
    pair = PipelinePair(st)
    o, w = pod(st, "other"), pod(st, "web-0")
    _handshake(pair, o, w, VIP, 80, 40000)
    [s] = pair.send("node-1", seg(o, VIP, 40000, 80, "PA"), o.host_ifname)
    assert s.port == w.host_ifname
    # blog/web-from-client: web-0 takes ingress only from role=client; other is not
    st.policies = {p.key: p for p in load_config_text(DENY_OTHER, "t.yaml").network_policies}
    for node, dp in pair.dps.items():
        dp.update(NodeTables.from_state(st, node), pair.now)
    assert pair.dps["node-2"].counters["ct_policy_cut"] == 1
    assert pair.send("node-1", seg(o, VIP, 40000, 80, "PA"), o.host_ifname) == []
    assert pair.drops[-1].reason is DropReason.POLICY_DENIED
    # the server's next segment passes (replies are never policed) but does not reopen it
    [s] = pair.send("node-2", seg(w, o.ip, 8080, 40000, "PA", GW2_MAC), w.host_ifname)
    assert s.port == o.host_ifname
    assert pair.send("node-1", seg(o, VIP, 40000, 80, "PA"), o.host_ifname) == []
    assert isinstance(pair.drops[-1], Drop)
    assert pair.drops[-1].reason is DropReason.POLICY_DENIED
    # the policy goes: the tombstone goes, the flow is picked up again
    st.policies = {}
    for node, dp in pair.dps.items():
        dp.update(NodeTables.from_state(st, node), pair.now)
    sends = pair.send("node-1", seg(o, VIP, 40000, 80, "PA"), o.host_ifname)
    assert [x.port for x in sends if isinstance(x, Send)] == [w.host_ifname]
