"""Node port traffic from outside the cluster in flows (emunet.observe): the event hook keeps a
node port's new connections and drops from eth0 as it keeps a pod's, the record says it came
from the network, and Hubble's rendering names the observation point FROM_NETWORK (Cilium's
TraceFromNetwork, 10), its DNAT, and TO_NETWORK for the reply out of eth0."""

from __future__ import annotations

import random

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from emunet.datapath import NodeTables
from emunet.observe import hubble
from emunet.observe.hook import FROM_ENDPOINT, ObservedDatapath
from emunet.observe.record import describe
from tests.unit.test_datapath_nodeport import NODE1, OUT_IP, _state, _syn


def _records(dp, st):
    return [describe(ev, "node-1", st.node("node-1").underlay_ip, dp.ct.table, dp.traced, 0.0,
                     {p.port: p.name for p in dp.tables.pods_by_port.values()})
            for ev in dp.drain()]


def test_a_node_port_connection_from_outside_is_a_flow_from_the_network():
    st = _state()
    dp = ObservedDatapath(NodeTables.from_state(st, "node-1"), random.Random(1))
    dp.process_nodeport(bytes(_syn()), 10.0)
    dp.process_nodeport(bytes(_syn(flags="A", seq=1001, ack=1)), 10.1)  # established: not kept
    [rec] = _records(dp, st)
    assert rec["from"] == "network" and rec["in_port"] == "eth0" and rec["ct"] == "new"
    assert rec["pkt"]["src"] == OUT_IP and rec["pkt"]["dst"] == NODE1
    assert rec["service"] == "blog/web:80/TCP (nodePort 30080)" and rec["to"] == "endpoint"
    web = st.pods[("blog", "web-0")]
    assert rec["backend"] == f"{web.ip}:8080" and rec["out_pod"] == "blog/web-0"
    [f] = hubble.flows(rec, hubble.Directory(st))
    assert f["traffic_direction"] == "INGRESS" and f["trace_observation_point"] == "TO_ENDPOINT"
    assert f["dnat"]["original_destination"] == f"{NODE1}:30080"
    # as seen leaving for the pod: masqueraded to the node (kube-proxy's SNAT), the host
    assert f["IP"]["source"] == st.node("node-1").gateway_ip
    assert "reserved:host" in f["source"]["labels"]

    # the backend's reply goes out of eth0 to the client; not kept (neither new nor dropped),
    # so describe it as the agent would a traced one
    reply = bytes(Ether(src=web.mac, dst=st.node("node-1").gateway_mac)
                  / IP(src=web.ip, dst=st.node("node-1").gateway_ip)
                  / TCP(sport=8080, dport=rec["pkt_out"]["sport"], flags="SA", ack=1001))
    out = dp.process(reply, web.host_ifname, 10.2)
    assert out and out[-1].port == "eth0" and not dp.drain()
    back = describe((10.2, FROM_ENDPOINT, web.host_ifname, reply, out, False), "node-1",
                    st.node("node-1").underlay_ip, dp.ct.table, dp.traced, 0.0)
    [fb] = hubble.flows(back, hubble.Directory(st))
    assert fb["trace_observation_point"] == "TO_NETWORK" and fb["IP"]["destination"] == OUT_IP
    assert fb["is_reply"] and fb["reverse_nat"]["from"] == f"{web.ip}:8080"


def test_a_refused_node_port_is_a_drop_from_the_network():
    st = _state()
    dp = ObservedDatapath(NodeTables.from_state(st, "node-1"), random.Random(1))
    dp.process_nodeport(bytes(_syn(dport=30090)), 1.0)  # a Service without endpoints
    [rec] = _records(dp, st)
    assert rec["from"] == "network" and rec["verdict"] == "DROPPED"
    assert rec["drop"]["reason"] == "NO_ENDPOINTS"
    [f] = hubble.flows(rec, hubble.Directory(st))
    assert f["trace_observation_point"] == "FROM_NETWORK" and f["verdict"] == "DROPPED"
