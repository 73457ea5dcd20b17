"""Policy in the pipeline: silent drops, verdict events, conntrack replies, post-DNAT, overlay.

Uses the datapath test cluster (pipeline_pair): blog/client and blog/other on node-1, blog/web-0
(app=web, 8080 "http") on node-2 behind Service blog/web (80 -> "http").
"""

from __future__ import annotations

import dataclasses

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from emunet.config import load_config_text
from emunet.datapath import Drop, DropReason, Send
from emunet.policy.verdict import Verdict
from tests.unit.pipeline_pair import (
    BLOG_CLUSTER,
    GW_MAC,
    WEB_FROM_CLIENT,
    PipelinePair,
    datapath,
    make_state,
    pod,
)
from tests.unit.pipeline_pair import VIP as WEB_VIP

ONLY_CLIENT = BLOG_CLUSTER + WEB_FROM_CLIENT


def with_policy(text: str = ONLY_CLIENT):
    st = make_state()
    cfg = load_config_text(text, "t.yaml")
    st.policies = {p.key: p for p in cfg.network_policies}
    c = pod(st, "client")
    c.pod = dataclasses.replace(c.pod, labels={"role": "client"})
    return st


def syn(src, dst_ip, dport=8080, sport=40000):
    return bytes(Ether(src=src.mac, dst=GW_MAC) / IP(src=src.ip, dst=dst_ip)
                 / TCP(sport=sport, dport=dport, flags="S"))


def test_denied_connection_is_a_silent_drop_with_a_verdict_naming_the_policy():
    st = with_policy()
    pair = PipelinePair(st)
    other, web = pod(st, "other"), pod(st, "web-0")
    delivered = pair.send("node-1", syn(other, web.ip), other.host_ifname)
    assert delivered == []  # no RST, no ICMP back to the client: it times out
    verdict, drop = [a for a in pair.drops if isinstance(a, Verdict | Drop)][-2:]
    assert drop.reason is DropReason.POLICY_DENIED
    assert not verdict.allowed and verdict.direction == "ingress"
    assert verdict.pod == "blog/web-0" and verdict.policies == ("blog/web-from-client",)
    assert "web-from-client" in drop.detail


def test_allowed_via_service_is_judged_after_dnat_and_replies_bypass_policy():
    st = with_policy()
    pair = PipelinePair(st)
    client, web = pod(st, "client"), pod(st, "web-0")
    (s,) = pair.send("node-1", syn(client, WEB_VIP, dport=80), client.host_ifname)
    assert s.port == web.host_ifname and Ether(s.frame)[TCP].dport == 8080
    allow = [a for a in pair.drops if isinstance(a, Verdict)]
    assert len(allow) == 1 and allow[0].allowed and allow[0].dport == 8080
    assert allow[0].rule is not None and allow[0].rule.policy == "blog/web-from-client"
    # the reply leaves web-0 (whose egress is not isolated) and its ingress at the client
    # is not policed either; but even an isolated client would take it: conntrack says reply
    reply = bytes(Ether(src=web.mac, dst="0a:58:0a:2a:02:01") / IP(src=web.ip, dst=client.ip)
                  / TCP(sport=8080, dport=40000, flags="SA"))
    (back,) = pair.send("node-2", reply, web.host_ifname)
    assert back.port == client.host_ifname and Ether(back.frame)[IP].src == WEB_VIP


def test_egress_isolated_client_replies_still_arrive_udp():
    text = "---\n".join(ONLY_CLIENT.split("---\n")[:2]) + """---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-out, namespace: blog}
spec:
  podSelector: {matchLabels: {role: client}}
  policyTypes: [Egress, Ingress]
  egress: [{to: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: dns, protocol: UDP}]}]
"""
    st = with_policy(text)
    pair = PipelinePair(st)
    client, web, other = pod(st, "client"), pod(st, "web-0"), pod(st, "other")
    q = bytes(Ether(src=client.mac, dst=GW_MAC) / IP(src=client.ip, dst=web.ip)
              / UDP(sport=5000, dport=5353) / b"q")
    (s,) = pair.send("node-1", q, client.host_ifname)
    assert s.port == web.host_ifname
    # the client is ingress-isolated with no ingress rule: only the tracked reply gets in
    r = bytes(Ether(src=web.mac, dst="0a:58:0a:2a:02:01") / IP(src=web.ip, dst=client.ip)
              / UDP(sport=5353, dport=5000) / b"a")
    (back,) = pair.send("node-2", r, web.host_ifname)
    assert back.port == client.host_ifname
    unsolicited = bytes(Ether(src=web.mac, dst="0a:58:0a:2a:02:01") / IP(src=web.ip,
                        dst=client.ip) / UDP(sport=5353, dport=5001) / b"a")
    assert pair.send("node-2", unsolicited, web.host_ifname) == []
    # egress to port 8080/TCP, or anywhere else, is denied; so is ICMP (the rule has ports)
    assert pair.send("node-1", syn(client, web.ip), client.host_ifname) == []
    ping = bytes(Ether(src=client.mac, dst=GW_MAC) / IP(src=client.ip, dst=other.ip) / ICMP())
    dp = pair.dps["node-1"]
    out = dp.process(ping, client.host_ifname, 1.0)
    assert isinstance(out[-1], Drop) and out[-1].reason is DropReason.POLICY_DENIED
    assert out[0].direction == "egress"


def test_no_isolation_no_verdicts_and_same_node_ingress_is_enforced():
    st = make_state()
    dp = datapath(st, "node-1")
    client, other = pod(st, "client"), pod(st, "other")
    out = dp.process(syn(client, other.ip), client.host_ifname, 1.0)
    assert [type(a) for a in out] == [Send]
    text = ONLY_CLIENT.replace("app: web}}", "app: none}}") + """---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: blog}
spec: {podSelector: {}}
"""
    st = with_policy(text)
    dp = datapath(st, "node-1")
    out = dp.process(syn(client, other.ip, sport=40001), client.host_ifname, 1.0)
    assert isinstance(out[-1], Drop) and out[-1].reason is DropReason.POLICY_DENIED
    assert dp.counters["drop:POLICY_DENIED"] == 1


def test_label_change_takes_effect_for_new_connections_only():
    st = with_policy()
    dp = datapath(st, "node-2")
    client, web = pod(st, "client"), pod(st, "web-0")
    overlay = PipelinePair(st)
    (s,) = overlay.send("node-1", syn(client, web.ip), client.host_ifname)
    dp = overlay.dps["node-2"]
    client.pod = dataclasses.replace(client.pod, labels={})
    from emunet.datapath import NodeTables

    dp.update(NodeTables.from_state(st, "node-2"))
    ack = bytes(Ether(src=client.mac, dst=GW_MAC) / IP(src=client.ip, dst=web.ip)
                / TCP(sport=40000, dport=8080, flags="A"))
    assert overlay.send("node-1", ack, client.host_ifname)  # established: still flows
    overlay.dps["node-1"].update(NodeTables.from_state(st, "node-1"))
    assert overlay.send("node-1", syn(client, web.ip, sport=40002), client.host_ifname) == []
