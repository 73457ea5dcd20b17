"""The responder runs the Corefile's settings (kube-system/coredns, emunet.model.coredns): what
each honoured directive changes in an answer, as CoreDNS's kubernetes plugin does (kubernetes.go
findPods/findServices, endpointHostname; handler.go fallthrough) and forward's upstreams."""

from __future__ import annotations

import dataclasses

from scapy.layers.dns import DNS

from emunet.dns import wire
from emunet.dns.handler import FORWARD
from emunet.model.coredns import RESOLV_CONF, k3s_default
from tests.unit.dns_cluster import NS, ask, cluster, handler, query, rrs

SVC = f"monospaced.{NS}.svc.cluster.local"


def with_settings(upstreams=(), **kw):
    st = cluster(upstreams=upstreams)
    st.coredns = dataclasses.replace(k3s_default(st.cluster), **kw)
    return st


def pod_name(st, pod: str) -> str:
    return st.pods[(NS, pod)].ip.replace(".", "-") + f".{NS}.pod.cluster.local"


def test_ttl_from_the_corefile_over_the_cluster_spec():
    st = with_settings(ttl=7)
    r = ask(handler(st), SVC)
    assert rrs(r.an)[0].ttl == 7
    r = ask(handler(st), f"nope.{NS}.svc.cluster.local")
    assert rrs(r.ns)[0].minimum == 7  # the SOA's minimum is the zone TTL


def test_pods_insecure_verified_disabled():
    st = cluster()
    ip = st.pods[(NS, "monospaced-test")].ip
    name = pod_name(st, "monospaced-test")
    ghost = f"10-42-9-9.{NS}.pod.cluster.local"
    h = handler(st)  # k3s: pods insecure, any IP-shaped name
    assert [x.rdata for x in rrs(ask(h, name).an)] == [ip]
    assert [x.rdata for x in rrs(ask(h, ghost).an)] == ["10.42.9.9"]
    h = handler(with_settings(pods="verified"))  # only a pod of that namespace with that IP
    assert [x.rdata for x in rrs(ask(h, name).an)] == [ip]
    assert ask(h, ghost).rcode == wire.NXDOMAIN
    assert ask(h, name.replace(f".{NS}.", ".default.")).rcode == wire.NXDOMAIN
    h = handler(with_settings(pods="disabled"))  # CoreDNS's default: no pod records
    for n in (name, ghost, f"{NS}.pod.cluster.local"):
        r = ask(h, n)
        assert r.rcode == wire.NXDOMAIN and rrs(r.ns)[0].type == wire.SOA, n


def test_endpoint_pod_names():
    """db-1 has no spec.hostname: named by its dashed IP, or by its pod name with the option."""
    st = cluster()
    ip = st.pods[(NS, "db-1")].ip
    by_ip = f"{ip.replace('.', '-')}.db.{NS}.svc.cluster.local"
    by_name = f"db-1.db.{NS}.svc.cluster.local"
    h = handler(st)
    assert ask(h, by_ip).rcode == 0 and ask(h, by_name).rcode == wire.NXDOMAIN
    h = handler(with_settings(endpoint_pod_names=True))
    assert [x.rdata for x in rrs(ask(h, by_name).an)] == [ip]
    assert ask(h, by_ip).rcode == wire.NXDOMAIN
    rev = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
    assert [x.rdata for x in rrs(ask(h, rev, "PTR").an)] == [f"{by_name}.".encode()]
    # a pod with hostname+subdomain keeps its hostname (addr.Hostname comes first)
    assert ask(h, f"db-0.db.{NS}.svc.cluster.local").rcode == 0


def test_ignore_empty_service():
    st = cluster()
    st.pods[(NS, "monospaced-test")].ready = False  # its one backend
    assert ask(handler(st), SVC).rcode == 0  # the ClusterIP stands without endpoints
    st.coredns = dataclasses.replace(k3s_default(st.cluster), ignore_empty_service=True)
    r = ask(handler(st), SVC)
    assert r.rcode == wire.NXDOMAIN and rrs(r.ns)[0].type == wire.SOA
    # not for headless or ExternalName Services (CoreDNS covers those below)
    assert ask(handler(st), f"ext.{NS}.svc.cluster.local").rcode == 0


def test_fallthrough_of_the_cluster_domain_and_forward_from_the_corefile():
    nope = f"nope.{NS}.svc.cluster.local"
    h = handler(cluster(upstreams=("192.0.2.1",)))  # k3s: fallthrough in-addr.arpa only
    assert DNS(h.handle(query(nope))).rcode == wire.NXDOMAIN
    h = handler(with_settings(upstreams=("192.0.2.1",), fallthrough=()))
    assert h.handle(query(nope)) is FORWARD
    assert isinstance(h.handle(query(SVC)), bytes)  # what exists is still answered
    # forward names its own upstreams; /etc/resolv.conf is the Cluster's spec.dns.upstreams
    st = with_settings(forward=("198.51.100.1", RESOLV_CONF), upstreams=("192.0.2.1",))
    assert handler(st).zone.upstreams == ("198.51.100.1", "192.0.2.1")
    assert handler(with_settings(forward=())).handle(query("example.com")) is not FORWARD


def test_without_a_kubernetes_plugin_everything_is_forwarded():
    st = with_settings(upstreams=("192.0.2.1",), kubernetes=False)
    assert handler(st).handle(query(SVC)) is FORWARD

