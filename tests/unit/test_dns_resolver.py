"""The DNS answers, record for record, as CoreDNS's kubernetes plugin gives them."""

from __future__ import annotations

import dataclasses

import pytest

from emunet.dns import wire
from emunet.dns.handler import FORWARD
from emunet.dns.zone import Zone
from emunet.model.coredns import k3s_default
from tests.unit.dns_cluster import NS, SERIAL, ask, cluster, handler, ips, rrs

SVC = f"monospaced.{NS}.svc.cluster.local"
DB = f"db.{NS}.svc.cluster.local"


@pytest.fixture(scope="module")
def st():
    return cluster()


@pytest.fixture
def h(st):
    return handler(st)


def ip_of(st, pod):
    return st.pods[(NS, pod)].ip


def assert_soa(r, rcode, origin=b"cluster.local."):
    assert r.rcode == rcode and r.aa == 1 and r.ancount == 0
    (soa,) = rrs(r.ns)
    assert soa.type == wire.SOA and soa.rrname == origin
    assert soa.mname == b"ns.dns." + origin and soa.rname == b"hostmaster." + origin
    assert (soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum) == (
        SERIAL, 7200, 1800, 86400, 5)


def test_clusterip_a_echoes_case_and_flags(h):
    r = ask(h, "MonoSpaced.Blog-Website.svc.Cluster.Local", ident=777)
    assert (r.id, r.qr, r.aa, r.rd, r.ra, r.rcode) == (777, 1, 1, 1, 1, 0)
    (a,) = rrs(r.an)
    assert a.rrname == b"MonoSpaced.Blog-Website.svc.Cluster.Local." and a.ttl == 5
    assert a.rdata == "10.43.0.11"


def test_ttl_from_cluster_spec():
    r = ask(handler(cluster(ttl=30)), SVC)
    assert rrs(r.an)[0].ttl == 30


def test_kube_dns_service(h):
    assert ips(ask(h, "kube-dns.kube-system.svc.cluster.local").an) == ["10.43.0.10"]


@pytest.mark.parametrize("name", [
    f"nope.{NS}.svc.cluster.local",  # no such Service
    "monospaced.nons.svc.cluster.local",  # no such namespace
    "foo.cluster.local",  # neither svc nor pod
    f"a.b.c.monospaced.{NS}.svc.cluster.local",  # too many labels
    f"x.empty.{NS}.svc.cluster.local",
    f"empty.{NS}.svc.cluster.local",  # headless without ready endpoints: CoreDNS NXDOMAIN
    f"_https._tcp.monospaced.{NS}.svc.cluster.local",  # no such port
    f"_http._udp.monospaced.{NS}.svc.cluster.local",  # wrong protocol
    f"999-1-1-1.{NS}.pod.cluster.local",  # not an IP
    "10-42-1-5.nons.pod.cluster.local",
])
def test_nxdomain_with_soa(h, name):
    assert_soa(ask(h, name), wire.NXDOMAIN)


@pytest.mark.parametrize("name,qtype", [
    (SVC, "AAAA"),  # IPv4-only cluster
    (SVC, "TXT"), (SVC, "MX"), (SVC, "CNAME"), (SVC, "PTR"), (SVC, "HINFO"),
    ("cluster.local", "A"), ("svc.cluster.local", "A"), (f"{NS}.svc.cluster.local", "A"),
    ("pod.cluster.local", "A"), (f"{NS}.pod.cluster.local", "A"),
    (SVC, "SOA"),  # CoreDNS answers SOA only at the apex
    ("ns.dns.cluster.local", "AAAA"),
])
def test_nodata_with_soa(h, name, qtype):
    assert_soa(ask(h, name, qtype), wire.NOERROR)


def test_txt_for_missing_name_is_nxdomain(h):
    assert_soa(ask(h, f"nope.{NS}.svc.cluster.local", "TXT"), wire.NXDOMAIN)


def test_dns_version(h):
    r = ask(h, "dns-version.cluster.local", "TXT")
    (t,) = rrs(r.an)
    assert t.rdata == [b"1.1.0"] and t.ttl == 28800 and r.aa


def test_apex_soa_and_ns(h):
    r = ask(h, "cluster.local", "SOA")
    (soa,) = rrs(r.an)
    assert soa.mname == b"ns.dns.cluster.local." and soa.minimum == 5 and soa.serial == SERIAL
    # CoreDNS ns.go nsAddrs: the NS is the Service the responder is an endpoint of, with its
    # ClusterIP as glue (ns.dns.<zone> is only the fallback)
    r = ask(h, "cluster.local", "NS")
    (ns,) = rrs(r.an)
    assert ns.rdata == b"kube-dns.kube-system.svc.cluster.local." and ns.ttl == 5
    (a,) = rrs(r.ar)
    assert a.rrname == b"kube-dns.kube-system.svc.cluster.local." and a.rdata == "10.43.0.10"
    assert ips(ask(h, "ns.dns.cluster.local").an) == ["10.43.0.10"]


def test_apex_ns_falls_back_to_ns_dns_with_the_pods_own_address():
    """Without a Service listing the responder as a ready endpoint (its pod not ready),
    CoreDNS names ns.dns.<zone> with its local address (ns.go: `svcNames = defaultNSName`)."""
    st = cluster()
    dns_pod = next(p for p in st.pods.values() if p.pod.name.startswith("coredns-"))
    dns_pod.ready = False
    h = handler(st)
    r = ask(h, "cluster.local", "NS")
    assert [x.rdata for x in rrs(r.an)] == [b"ns.dns.cluster.local."]
    assert [(x.rrname, x.rdata) for x in rrs(r.ar)] == [(b"ns.dns.cluster.local.", dns_pod.ip)]
    assert ips(ask(h, "ns.dns.cluster.local").an) == [dns_pod.ip]


def test_headless_one_a_per_ready_endpoint(h, st):
    got = sorted(ips(ask(h, DB).an))
    want = sorted(ip_of(st, p) for p in ("db-0", "db-1", "db-2"))  # db-3 is not ready
    assert got == want


def test_endpoint_names(h, st):
    # spec 2.4.1: <hostname>.<svc> only when spec.subdomain names the Service
    assert ips(ask(h, f"db-0.{DB}").an) == [ip_of(st, "db-0")]
    dashed = ip_of(st, "db-2").replace(".", "-")
    assert ips(ask(h, f"{dashed}.{DB}").an) == [ip_of(st, "db-2")]
    assert_soa(ask(h, f"db-2.{DB}"), wire.NXDOMAIN)
    # CoreDNS also answers endpoint names of a ClusterIP Service
    dashed = ip_of(st, "monospaced-test").replace(".", "-")
    assert ips(ask(h, f"{dashed}.{SVC}").an) == [ip_of(st, "monospaced-test")]


def test_srv_clusterip_named_port(h):
    r = ask(h, f"_http._tcp.{SVC}", "SRV")
    (srv,) = rrs(r.an)
    assert (srv.priority, srv.weight, srv.port, srv.target) == (0, 100, 80, (SVC + ".").encode())
    (a,) = rrs(r.ar)
    assert a.rrname == (SVC + ".").encode() and a.rdata == "10.43.0.11"
    (srv,) = rrs(ask(h, f"_METRICS._UDP.{SVC}", "SRV").an)
    assert srv.port == 9090


def test_srv_without_port_lists_every_port(h):
    r = ask(h, SVC, "SRV")
    assert sorted((s.port, s.weight) for s in rrs(r.an)) == [(80, 50), (9090, 50)]
    assert len(rrs(r.ar)) == 1  # one address per target


def test_srv_headless_targets_endpoints(h, st):
    r = ask(h, f"_http._tcp.{DB}", "SRV")
    targets = sorted(s.target.decode() for s in rrs(r.an))
    d2 = ip_of(st, "db-2").replace(".", "-")
    d1 = ip_of(st, "db-1").replace(".", "-")
    assert targets == sorted(f"{n}.{DB}." for n in ("db-0", d1, d2))
    assert {s.port for s in rrs(r.an)} == {3000} and {s.weight for s in rrs(r.an)} == {33}
    extra = {a.rrname.decode(): a.rdata for a in rrs(r.ar)}
    assert extra[f"db-0.{DB}."] == ip_of(st, "db-0")


def test_pod_a_records(h):
    r = ask(h, f"10-42-9-7.{NS}.pod.cluster.local")
    assert ips(r.an) == ["10.42.9.7"]  # pods insecure: any IP in an existing namespace
    assert_soa(ask(h, f"10-42-9-7.{NS}.pod.cluster.local", "AAAA"), wire.NOERROR)


def test_external_name_cname(h):
    r = ask(h, f"ext.{NS}.svc.cluster.local")
    (c,) = rrs(r.an)
    assert c.type == wire.CNAME and c.rdata == b"example.com."
    assert rrs(ask(h, f"ext.{NS}.svc.cluster.local", "CNAME").an)[0].rdata == b"example.com."
    assert_soa(ask(h, f"ext.{NS}.svc.cluster.local", "SRV"), wire.NOERROR)
    # a target inside the cluster zone is chased
    r = ask(h, f"alias.{NS}.svc.cluster.local")
    assert [x.type for x in rrs(r.an)] == [wire.CNAME, wire.A]
    assert ips(r.an) == ["10.43.0.11"]


def test_ptr_for_cluster_ip_and_endpoints(h, st):
    (p,) = rrs(ask(h, "11.0.43.10.in-addr.arpa", "PTR").an)
    assert p.rdata == (SVC + ".").encode()
    ip = ip_of(st, "db-0")
    r = ask(h, ".".join(reversed(ip.split("."))) + ".in-addr.arpa", "PTR")
    assert [x.rdata for x in rrs(r.an)] == [f"db-0.{DB}.".encode()]
    ip = ip_of(st, "frontend-client")  # backs no Service: CoreDNS has no name for it
    rev = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
    # k3s's Corefile: `fallthrough in-addr.arpa` passes the NXDOMAIN on to forward
    assert ask(h, rev, "PTR").rcode == wire.REFUSED  # no upstream to forward to
    from tests.unit.dns_cluster import query
    assert handler(cluster(upstreams=("192.0.2.1",))).handle(query(rev, "PTR")) is FORWARD
    # without fallthrough the plugin's NXDOMAIN is the answer
    st2 = cluster()
    st2.coredns = dataclasses.replace(k3s_default(st2.cluster), fallthrough=None)
    assert_soa(ask(handler(st2), rev, "PTR"), wire.NXDOMAIN, b"in-addr.arpa.")


def test_outside_names_refused_or_forwarded(st):
    r = ask(handler(st), "example.com")
    assert r.rcode == wire.REFUSED and r.aa == 0
    assert ask(handler(st), "1.1.168.192.in-addr.arpa", "PTR").rcode == wire.REFUSED
    hf = handler(cluster(upstreams=("127.0.0.1:5399",)))
    from tests.unit.dns_cluster import query
    assert hf.handle(query("example.com")) is FORWARD


def test_axfr_refused(h):
    assert ask(h, "cluster.local", "AXFR").rcode == wire.REFUSED


def test_reload_invalidates_cache(st):
    h = handler(st)
    assert ips(ask(h, SVC).an) == ["10.43.0.11"]
    st2 = cluster()
    st2.remove_service((NS, "monospaced"))
    h.load(Zone.from_state(st2, serial=SERIAL))
    assert_soa(ask(h, SVC), wire.NXDOMAIN)


def test_client_filter(st):
    z = Zone.from_state(st)
    assert z.client_allowed("10.42.1.3") and z.client_allowed("127.0.0.1")
    assert z.client_allowed("10.43.0.10") and z.client_allowed("::1")
    assert not z.client_allowed("192.168.1.11") and not z.client_allowed("8.8.8.8")


EXT = f"ext.{NS}.svc.cluster.local"


@pytest.mark.parametrize("qtype", ["A", "AAAA", "CNAME", "TXT", "SRV", "MX", "NS", "PTR"])
def test_names_below_an_externalname_service(h, qtype):
    """What CoreDNS's code answers under an ExternalName Service (plugin/kubernetes parse.go
    parseRequest, kubernetes.go findServices): one label below is an endpoint, and an
    ExternalName has none (NXDOMAIN; handler_test "subdomain of an external service");
    two labels below are _port._protocol, which findServices does not check for an
    ExternalName, so the CNAME stands (A/AAAA/CNAME) or NODATA; three or more are
    errInvalidRequest (NXDOMAIN). SOA is NODATA for any name below the apex."""
    for name in (f"x.{EXT}", f"a.b.c.{EXT}", f"_a._b._c.{EXT}"):
        r = ask(h, name, qtype)
        assert r.rcode == 3 and not rrs(r.an), name
        assert [x.type for x in rrs(r.ns)] == [wire.SOA]
    r = ask(h, f"a.b.{EXT}", qtype)
    assert r.rcode == 0
    if qtype in ("A", "AAAA", "CNAME"):
        assert [(x.type, x.rdata) for x in rrs(r.an)] == [(wire.CNAME, b"example.com.")]
    else:
        assert not rrs(r.an) and [x.type for x in rrs(r.ns)] == [wire.SOA]
    for name in (f"x.{EXT}", f"a.b.{EXT}", f"a.b.c.{EXT}"):
        r = ask(h, name, "SOA")
        assert r.rcode == 0 and not rrs(r.an) and [x.type for x in rrs(r.ns)] == [wire.SOA]
