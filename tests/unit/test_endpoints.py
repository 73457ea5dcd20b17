"""Services without a selector: Endpoints and EndpointSlices parsed and validated (the API
server's wording, located errors), planned into the state, balanced to by the datapath,
answered by DNS; `default/kubernetes` and the node's host port."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from emunet import naming
from emunet.api import endpoints as api_eps
from emunet.cluster.apply import delete_object
from emunet.config import ConfigError, load_config_text
from emunet.datapath import Encap, Send
from emunet.model import Namespace, Service, ServicePort
from emunet.state.plan import kubernetes_ip
from tests.unit import dns_cluster as dc
from tests.unit.pipeline_pair import GW_MAC, PipelinePair, datapath, make_state, pod, tcp_syn

EP = """\
apiVersion: v1
kind: Endpoints
metadata: {{name: legacy, namespace: blog}}
subsets:
- addresses: [{{ip: {ip}, hostname: primary}}]
  notReadyAddresses: [{{ip: 10.42.2.99}}]
  ports: [{{name: http, port: {port}}}]
"""
SLICE = """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: legacy-extra
  namespace: blog
  labels: {kubernetes.io/service-name: legacy}
addressType: IPv4
endpoints:
- addresses: [10.42.1.4]
- addresses: [10.42.1.3]
  conditions: {ready: false}
ports: [{name: http, port: 9000}, {name: other, port: 1}]
"""


def state():
    st = make_state()
    st.add_namespace(Namespace("blog"))
    st.add_service(Service("blog", "legacy", (ServicePort(80, 80, "TCP", "http"),), None,
                           cluster_ip="10.43.0.99"))
    return st


def errors(text: str) -> list[tuple[int, str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "ep.yaml", base=state().cluster)
    return [(e.line, e.path, e.message) for e in info.value.errors]


def test_bad_endpoints_are_located_with_the_api_servers_words():
    assert errors(EP.format(ip="abc", port=80)) == [
        (5, "subsets[0].addresses[0].ip",
         '"abc": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)')]
    assert errors(EP.format(ip="10.42.2.2", port=70000)) == [
        (7, "subsets[0].ports[0].port", "70000: must be between 1 and 65535, inclusive")]
    assert errors(EP.format(ip="127.0.0.1", port=80))[0][2] == \
        '"127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)'
    two = EP.format(ip="10.42.2.2", port=80).replace("ports: [{name: http, port: 80}]",
                                                      "ports: [{port: 80}, {port: 81}]")
    assert [(p, m) for _, p, m in errors(two)] == [("subsets[0].ports[0].name",
                                                   "Required value"),
                                                  ("subsets[0].ports[1].name",
                                                   "Required value")]
    bad = SLICE.replace("addressType: IPv4", "addressType: IPv5").replace(
        "[10.42.1.4]", "[10.42.1.x]")
    got = errors(bad)
    assert (7, "addressType",
            'Unsupported value: "IPv5": supported values: "IPv4", "IPv6", "FQDN"') in got
    slice_ip = SLICE.replace("[10.42.1.4]", "[2001:db8::1]")
    assert errors(slice_ip) == [(9, "endpoints[0].addresses[0]",
                                 '"2001:db8::1": must be a valid IPv4 address')]
    assert errors(EP.format(ip="10.42.2.2", port=80).replace("legacy,", "kubernetes,")
                  .replace("blog}", "default}"))[0][1] == "metadata.name"


def test_the_api_answers_a_bad_endpoints_as_kubectl_expects():
    from emunet import control
    from emunet.api.writes import _causes
    try:
        load_config_text(EP.format(ip="abc", port=80), "<request>", base=state().cluster)
    except ConfigError as e:
        reply = control.input_error(e)
    [cause] = _causes(control.ControlError(reply["error"], "input", reply["errors"]))
    assert f"{cause['field']}: {cause['message']}" == (
        'subsets[0].addresses[0].ip: Invalid value: "abc": must be a valid IP address, '
        "(e.g. 10.9.8.7 or 2001:db8::ffff)")


def test_a_selectorless_service_takes_its_endpoints_and_slices_by_port_name():
    st = state()
    web = pod(st, "web-0")
    assert st.endpoints(("blog", "legacy")) == {0: []}
    cfg = EP.format(ip=web.ip, port=8080) + "---\n" + SLICE
    changes = [c.message for c in apply_objects_text(st, cfg)]
    assert changes == ["endpoints/legacy created",
                       "endpointslice.discovery.k8s.io/legacy-extra created"]
    eps = st.endpoints(("blog", "legacy"))[0]
    got = sorted((e.ip, e.port, e.ready, e.hostname, e.node) for e in eps)
    assert got == [("10.42.1.3", 9000, False, None, "node-1"),
                   ("10.42.1.4", 9000, True, None, "node-1"),
                   (web.ip, 8080, True, "primary", "node-2"),
                   ("10.42.2.99", 8080, False, None, "node-2")]
    assert [c.message for c in apply_objects_text(st, cfg)][0] == "endpoints/legacy unchanged"
    # with a selector, the controller's endpoints stand: the user's Endpoints is overwritten
    sel = Service("blog", "legacy", (ServicePort(80, 8080, "TCP", "http"),), {"app": "none"})
    st2 = state()
    apply_objects_text(st2, cfg)
    st2.add_service(sel)
    assert st2.endpoints(("blog", "legacy")) == {0: []}
    delete_object(st, "endpoints", "legacy", "blog")
    assert [e.ip for e in st.endpoints(("blog", "legacy"))[0]] == ["10.42.1.3", "10.42.1.4"]


def apply_objects_text(st, text):
    from emunet.cluster.apply import _apply
    return _apply(st, load_config_text(text, "ep.yaml", base=st.cluster))


def test_the_api_shows_the_users_endpoints_and_mirrors_them():
    st = state()
    apply_objects_text(st, EP.format(ip=pod(st, "web-0").ip, port=8080))
    es = st.endpoint_sets[("Endpoints", "blog", "legacy")]
    obj = api_eps.endpoints(st, es)
    assert obj["subsets"] == [{"addresses": [{"ip": pod(st, "web-0").ip,
                                              "hostname": "primary"}],
                               "notReadyAddresses": [{"ip": "10.42.2.99"}],
                               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]
    [mirror] = api_eps.mirrored_slices(st, es)
    assert mirror["metadata"]["labels"]["kubernetes.io/service-name"] == "legacy"
    assert [e["conditions"]["ready"] for e in mirror["endpoints"]] == [True, False]


def test_kubernetes_is_the_first_service_address_backed_by_the_first_node():
    st = state()
    ss = st.services[("default", "kubernetes")]
    assert ss.cluster_ip == kubernetes_ip(st.cluster) == "10.43.0.1"
    [ep] = st.endpoints(("default", "kubernetes"))[0]
    assert (ep.ip, ep.port, ep.node) == (st.node("node-1").underlay_ip, 6443, "node-1")
    with pytest.raises(Exception, match="API server's own"):
        delete_object(st, "service", "kubernetes", "default")


def test_dns_answers_user_endpoints_headless_and_by_hostname():
    st = dc.cluster()
    text = """\
apiVersion: v1
kind: Service
metadata: {name: ext-db, namespace: blog-website}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: ext-db, namespace: blog-website}
subsets:
- addresses: [{ip: 10.42.2.50, hostname: db-a}, {ip: 10.42.1.51}]
  notReadyAddresses: [{ip: 10.42.1.52}]
  ports: [{name: pg, port: 5432}]
"""
    apply_objects_text(st, text)
    h = dc.handler(st)
    zone = "ext-db.blog-website.svc.cluster.local"
    assert sorted(dc.ips(dc.ask(h, zone).an)) == ["10.42.1.51", "10.42.2.50"]
    assert dc.ips(dc.ask(h, f"db-a.{zone}").an) == ["10.42.2.50"]
    assert dc.ips(dc.ask(h, f"10-42-1-51.{zone}").an) == ["10.42.1.51"]
    srv = dc.rrs(dc.ask(h, f"_pg._tcp.{zone}", "SRV").an)
    assert sorted(r.target.decode() for r in srv) == [f"10-42-1-51.{zone}.", f"db-a.{zone}."]
    assert {r.port for r in srv} == {5432}
    k = dc.ask(h, "kubernetes.default.svc.cluster.local")
    assert dc.ips(k.an) == ["10.43.0.1"]


def test_datapath_dnats_to_a_user_endpoint_across_nodes():
    st = state()
    w = pod(st, "web-0")
    apply_objects_text(st, EP.format(ip=w.ip, port=8080))
    pair = PipelinePair(st)
    c = pod(st, "client")
    [s] = pair.send("node-1", tcp_syn(c, 41000, dst="10.43.0.99"), c.host_ifname)
    assert (IP(s.frame[14:]).dst, IP(s.frame[14:])[TCP].dport) == (w.ip, 8080)
    assert s.port == w.host_ifname


def test_pods_reach_the_api_server_on_the_first_nodes_stack():
    st = state()
    node1 = st.node("node-1").underlay_ip
    pair = PipelinePair(st)
    for client, node in (("client", "node-1"), ("web-0", "node-2")):
        c = pod(st, client)
        gw = GW_MAC if node == "node-1" else "0a:58:0a:2a:02:01"
        syn = bytes(Ether(src=c.mac, dst=gw) / IP(src=c.ip, dst="10.43.0.1") /
                    TCP(sport=42000, dport=443, flags="S", seq=1))
        [s] = pair.send(node, syn, c.host_ifname)
        assert s.port == naming.HOST_PEER  # node-1's kernel end, on either node's request
        assert s.frame[:6] == bytes.fromhex(naming.host_mac(node1).replace(":", ""))
        assert (IP(s.frame[14:]).dst, IP(s.frame[14:])[TCP].dport) == (node1, 6443)
        # the kernel's SYN-ACK leaves its host port and comes back from the ClusterIP
        reply = bytes(Ether(src=naming.host_mac(node1), dst=naming.host_mac(node1)) /
                      IP(src=node1, dst=c.ip) / TCP(sport=6443, dport=42000, flags="SA",
                                                     seq=9, ack=2))
        [back] = pair._run("node-1", pair.dps["node-1"].process(reply, naming.HOST_PEER,
                                                                pair.now))
        assert back.port == c.host_ifname
        assert (IP(back.frame[14:]).src, IP(back.frame[14:])[TCP].sport) == ("10.43.0.1", 443)
    # the host port speaks only for its node's address
    dp = datapath(st, "node-1")
    spoof = bytes(Ether() / IP(src="10.42.1.3", dst="10.42.2.2") / TCP())
    assert type(dp.process(spoof, naming.HOST_PEER, 1.0)[-1]).__name__ == "Drop"
    assert not any(isinstance(a, (Send, Encap)) for a in dp.process(spoof, naming.HOST_PEER,
                                                                       1.0))
