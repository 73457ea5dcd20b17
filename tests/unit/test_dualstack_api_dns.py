"""Dual-stack (issue 19), what clients see: the API server's Pods, Nodes, Services, Endpoints
and EndpointSlices (status.podIPs, spec.clusterIPs/ipFamilies/ipFamilyPolicy, one slice per
family), kubectl's columns, `emunet get`, and DNS answers per family (AAAA, dashed IPv6 names,
SRV targets, 32-nibble ip6.arpa PTRs, NODATA vs NXDOMAIN), read back with Scapy."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from emunet.api import tables, view
from emunet.cli import views
from emunet.config import load_config, load_config_text
from emunet.dns.handler import Handler
from emunet.dns.resolver import reverse_name
from emunet.dns.zone import Zone, dashed
from emunet.state.plan import plan
from tests.unit.dns_cluster import ask, ips, rrs

ROOT = Path(__file__).resolve().parents[2]
NS = "blog-website"
EXTRA = """
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: blog-website}
spec:
  clusterIP: None
  ipFamilyPolicy: PreferDualStack
  selector: {app: monospaced}
  ports: [{name: pg, port: 5432, targetPort: 3000}]
---
apiVersion: v1
kind: Service
metadata: {name: only4, namespace: blog-website}
spec:
  selector: {app: monospaced}
  ports: [{port: 80, targetPort: 3000}]
---
apiVersion: v1
kind: Service
metadata: {name: only6, namespace: blog-website}
spec:
  ipFamilies: [IPv6]
  selector: {app: monospaced}
  ports: [{port: 80, targetPort: 3000}]
"""


@pytest.fixture(scope="module")
def st():
    text = (ROOT / "configs" / "dual-stack.yaml").read_text() + EXTRA
    s = plan(load_config_text(text, "dual-stack.yaml"))
    for p in s.pods.values():
        p.ready = p.running = True
    return s


@pytest.fixture(scope="module")
def objs(st):
    return view.build(st, {})


@pytest.fixture(scope="module")
def h(st):
    return Handler(Zone.from_state(st, serial=7))


def pod(st, name):
    return st.pods[(NS, name)]


# ---- API objects ----------------------------------------------------------------------------

def test_pod_status_lists_both_families_primary_first(st, objs) -> None:
    p = pod(st, "monospaced-test")
    status = objs["pods"][p.key]["status"]
    assert status["podIP"] == p.ip
    assert status["podIPs"] == [{"ip": p.ip}, {"ip": p.ip6}]
    node = st.node(p.node)
    assert status["hostIPs"] == [{"ip": node.underlay_ip}, {"ip": node.underlay_ip6}]


def test_node_pod_cidrs_and_internal_ips(st, objs) -> None:
    n = objs["nodes"][("", "node-1")]
    assert n["spec"]["podCIDRs"] == ["10.42.1.0/24", "2001:cafe:42:1::/64"]
    assert n["spec"]["podCIDR"] == "10.42.1.0/24"
    internal = [a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP"]
    assert internal == ["192.168.1.11", "fd00:e3e7::b"]


@pytest.mark.parametrize("name, ips_, fams, policy", [
    ("monospaced", ["10.43.0.11", "2001:cafe:43::b"], ["IPv4", "IPv6"], "PreferDualStack"),
    ("only4", ["10.43.0.12"], ["IPv4"], "SingleStack"),
    ("only6", ["2001:cafe:43::c"], ["IPv6"], "SingleStack"),
    ("db", ["None"], ["IPv4", "IPv6"], "PreferDualStack"),
])
def test_service_spec_as_a_dual_stack_api_server_shows_it(objs, name, ips_, fams,
                                                          policy) -> None:
    spec = objs["services"][(NS, name)]["spec"]
    assert (spec["clusterIP"], spec["clusterIPs"]) == (ips_[0], ips_)
    assert (spec["ipFamilies"], spec["ipFamilyPolicy"]) == (fams, policy)


def test_kube_dns_is_require_dual_stack_as_k3s_deploys_it(objs) -> None:
    spec = objs["services"][("kube-system", "kube-dns")]["spec"]
    assert spec["clusterIPs"] == ["10.43.0.10", "2001:cafe:43::a"]
    assert spec["ipFamilyPolicy"] == "RequireDualStack"


def test_one_endpoint_slice_per_family_and_endpoints_of_the_primary(st, objs) -> None:
    p = pod(st, "monospaced-test")
    slices = [s for s in objs["endpointslices"].values()
              if s["metadata"]["labels"].get("kubernetes.io/service-name") == "monospaced"]
    by_type = {s["addressType"]: [e["addresses"] for e in s["endpoints"]] for s in slices}
    assert by_type == {"IPv4": [[p.ip]], "IPv6": [[p.ip6]]}
    assert len({s["metadata"]["name"] for s in slices}) == 2
    six = [s for s in objs["endpointslices"].values()
           if s["metadata"]["labels"].get("kubernetes.io/service-name") == "only6"]
    assert [s["addressType"] for s in six] == ["IPv6"]
    ep = objs["endpoints"][(NS, "monospaced")]
    assert [a["ip"] for s in ep["subsets"] for a in s["addresses"]] == [p.ip]
    ep6 = objs["endpoints"][(NS, "only6")]
    assert [a["ip"] for s in ep6["subsets"] for a in s["addresses"]] == [p.ip6]


def test_kubectl_columns_show_the_primary_address(st, objs) -> None:
    svc = tables.table("services", [objs["services"][(NS, "monospaced")]], "1")
    assert svc["rows"][0]["cells"][2] == "10.43.0.11"
    six = tables.table("services", [objs["services"][(NS, "only6")]], "1")
    assert six["rows"][0]["cells"][2] == "2001:cafe:43::c"
    p = pod(st, "monospaced-test")
    row = tables.table("pods", [objs["pods"][p.key]], "1")["rows"][0]["cells"]
    assert p.ip in row and p.ip6 not in row


def test_emunet_get_views(st) -> None:
    rows = views.services(st, NS, False)
    assert ["only6", "ClusterIP", "2001:cafe:43::c"] == rows[[r[0] for r in rows].index(
        "only6")][:3]
    eps = {r[0]: r[1] for r in views.endpoints(st, NS, False)[1:]}
    p = pod(st, "monospaced-test")
    assert eps["only6"] == f"[{p.ip6}]:3000" and eps["only4"] == f"{p.ip}:3000"
    items = views.as_list(st, "pods", NS, {})["items"]
    mono = next(i for i in items if i["metadata"]["name"] == "monospaced-test")
    assert mono["status"]["podIPs"] == [{"ip": p.ip}, {"ip": p.ip6}]
    svc = next(i for i in views.as_list(st, "services", NS, {})["items"]
               if i["metadata"]["name"] == "monospaced")
    assert svc["spec"]["clusterIPs"] == ["10.43.0.11", "2001:cafe:43::b"]


def test_ipv4_only_services_still_say_ipv4_single_stack() -> None:
    st4 = plan(load_config(str(ROOT / "configs" / "two-node.yaml")))
    spec = view.build(st4, {})["services"][(NS, "monospaced")]["spec"]
    assert (spec["ipFamilies"], spec["ipFamilyPolicy"]) == (["IPv4"], "SingleStack")
    assert spec["clusterIPs"] == [spec["clusterIP"]]


# ---- DNS ------------------------------------------------------------------------------------

def svc_name(name: str) -> str:
    return f"{name}.{NS}.svc.cluster.local"


def assert_nodata(r) -> None:
    assert r.rcode == 0 and not rrs(r.an) and rrs(r.ns)[0].type == 6  # SOA in authority


def test_a_and_aaaa_for_a_dual_stack_cluster_ip(h) -> None:
    assert ips(ask(h, svc_name("monospaced"), "A").an) == ["10.43.0.11"]
    assert ips(ask(h, svc_name("monospaced"), "AAAA").an) == ["2001:cafe:43::b"]


def test_a_name_with_addresses_of_one_family_answers_nodata_for_the_other(h) -> None:
    assert_nodata(ask(h, svc_name("only4"), "AAAA"))
    assert_nodata(ask(h, svc_name("only6"), "A"))
    assert ips(ask(h, svc_name("only6"), "AAAA").an) == ["2001:cafe:43::c"]
    assert ask(h, svc_name("nothere"), "AAAA").rcode == 3  # NXDOMAIN


def test_headless_endpoints_of_both_families(st, h) -> None:
    p = pod(st, "monospaced-test")
    assert ips(ask(h, svc_name("db"), "A").an) == [p.ip]
    assert ips(ask(h, svc_name("db"), "AAAA").an) == [p.ip6]
    name6 = f"{dashed(p.ip6)}.{svc_name('db')}"
    assert dashed(p.ip6) == "2001-cafe-42-2--2"
    assert ips(ask(h, name6, "AAAA").an) == [p.ip6]
    assert_nodata(ask(h, name6, "A"))


def test_srv_targets_ipv6_endpoints(st, h) -> None:
    p = pod(st, "monospaced-test")
    r = ask(h, f"_pg._tcp.{svc_name('db')}", "SRV")
    targets = sorted(rec.target.decode().rstrip(".") for rec in rrs(r.an))
    assert targets == sorted([f"10-42-2-2.{svc_name('db')}",
                              f"2001-cafe-42-2--2.{svc_name('db')}"])
    extra = {(rec.rrname.decode().rstrip("."), rec.type, rec.rdata) for rec in rrs(r.ar)
             if rec.type in (1, 28)}
    assert (f"2001-cafe-42-2--2.{svc_name('db')}", 28, p.ip6) in extra


def test_pod_records_in_the_dashed_ipv6_form(st, h) -> None:
    p = pod(st, "frontend-client")
    name = f"{dashed(p.ip6)}.{NS}.pod.cluster.local"
    assert name.startswith("2001-cafe-42-1--3.")
    assert ips(ask(h, name, "AAAA").an) == [p.ip6]
    assert_nodata(ask(h, name, "A"))  # `pods insecure`: the name is an IPv6 address
    full = "2001-cafe-0042-0001-0000-0000-0000-0003." + f"{NS}.pod.cluster.local"
    assert ips(ask(h, full, "AAAA").an) == [p.ip6]


def test_dashed_names_end_in_a_digit() -> None:
    assert dashed("2001:db8::") == "2001-db8--0"
    assert dashed("10.42.1.5") == "10-42-1-5"


def test_ip6_arpa_ptrs_for_services_and_endpoints(st, h) -> None:
    q = reverse_name("2001:cafe:43::b")
    assert q.count(".") == 33 and q.endswith(".ip6.arpa")
    assert q == ipaddress.IPv6Address("2001:cafe:43::b").reverse_pointer
    r = ask(h, q, "PTR")
    assert [rec.rdata.decode() for rec in rrs(r.an)] == [svc_name("monospaced") + "."]
    p = pod(st, "monospaced-test")
    names = {rec.rdata.decode() for rec in rrs(ask(h, reverse_name(p.ip6), "PTR").an)}
    assert f"2001-cafe-42-2--2.{svc_name('db')}." in names
    v4 = {rec.rdata.decode() for rec in rrs(ask(h, reverse_name(p.ip), "PTR").an)}
    assert f"10-42-2-2.{svc_name('db')}." in v4


def test_ptr_of_a_short_ip6_arpa_name_is_not_an_address(h) -> None:
    assert ask(h, "b.0.0.0.ip6.arpa", "PTR").rcode in (3, 5)  # NXDOMAIN (fallthrough: none)


def test_ipv4_only_cluster_still_answers_aaaa_with_nodata() -> None:
    st4 = plan(load_config(str(ROOT / "configs" / "two-node.yaml")))
    h4 = Handler(Zone.from_state(st4, serial=7))
    assert_nodata(ask(h4, svc_name("monospaced"), "AAAA"))
    assert ips(ask(h4, svc_name("monospaced"), "A").an) == [st4.services[
        (NS, "monospaced")].cluster_ip]


def test_ns_glue_has_both_families(h) -> None:
    r = ask(h, "cluster.local", "NS")
    glue = sorted((rec.type, rec.rdata) for rec in rrs(r.ar))
    assert glue == [(1, "10.43.0.10"), (28, "2001:cafe:43::a")]


def test_ipv6_pod_clients_may_ask(st) -> None:
    zone = Zone.from_state(st)
    assert zone.client_allowed(pod(st, "frontend-client").ip6)
    assert not zone.client_allowed("2001:db8::1")


# ---- the responder over IPv6 ----------------------------------------------------------------

async def test_the_responder_answers_over_ipv6_too(tmp_path, st) -> None:
    import asyncio
    import socket
    import struct

    from scapy.layers.dns import DNS

    from emunet.dns.server import DnsServer
    from emunet.state import codec
    from tests.unit.dns_cluster import query
    from tests.unit.dns_loopback import free_port

    state = tmp_path / "state.json"
    state.write_text(codec.to_json(st))
    srv = DnsServer(state, "127.0.0.1", free_port(), tmp_path / "dns.json")
    await srv.start()
    try:
        assert srv._udp6 is not None, "no [::1] socket"
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c:
            c.setblocking(False)
            await loop.sock_connect(c, ("::1", srv.port))
            await loop.sock_sendall(c, query(svc_name("monospaced"), "AAAA"))
            r = DNS(await asyncio.wait_for(loop.sock_recv(c, 4096), 2))
        assert ips(r.an) == ["2001:cafe:43::b"]
        reader, writer = await asyncio.open_connection("::1", srv.port)
        data = query(svc_name("monospaced"), "A")
        writer.write(struct.pack("!H", len(data)) + data)
        (n,) = struct.unpack("!H", await reader.readexactly(2))
        assert ips(DNS(await reader.readexactly(n)).an) == ["10.43.0.11"]
        writer.close()
    finally:
        await srv.stop()


def test_a_users_endpoints_of_both_families_are_mirrored_per_family() -> None:
    text = (ROOT / "configs" / "dual-stack.yaml").read_text() + """
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: blog-website}
spec:
  clusterIP: None
  ports: [{name: web, port: 80}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: ext, namespace: blog-website}
subsets:
  - addresses: [{ip: 192.168.1.50}, {ip: "fd00:e3e7::50"}]
    ports: [{name: web, port: 80}]
"""
    st = plan(load_config_text(text, "t.yaml"))
    ss = st.services[(NS, "ext")]
    assert ss.ip_families == ("IPv4", "IPv6") and ss.ip_family_policy == "RequireDualStack"
    objs = view.build(st, {})
    slices = [s for s in objs["endpointslices"].values()
              if s["metadata"]["labels"].get("kubernetes.io/service-name") == "ext"]
    assert sorted((s["addressType"], s["endpoints"][0]["addresses"][0]) for s in slices) == [
        ("IPv4", "192.168.1.50"), ("IPv6", "fd00:e3e7::50")]
    h = Handler(Zone.from_state(st, serial=7))
    assert ips(ask(h, svc_name("ext"), "AAAA").an) == ["fd00:e3e7::50"]
    assert ips(ask(h, svc_name("ext"), "A").an) == ["192.168.1.50"]


def test_every_served_object_reapplies_unchanged_from_its_body() -> None:
    import copy

    from emunet.api import stored
    from emunet.api.view import WRITTEN
    from emunet.cluster.apply import apply_objects
    text = (ROOT / "configs" / "dual-stack.yaml").read_text() + EXTRA
    st = plan(load_config_text(text, "dual-stack.yaml"))
    objs = view.build(st, {})
    seen = 0
    for plural in WRITTEN:
        for key, obj in objs.get(plural, {}).items():
            if key == ("default", "kubernetes") or "kube-system" in key or plural in (
                    "endpoints", "endpointslices"):
                continue
            changes = apply_objects(st, [copy.deepcopy(stored.body(st, obj))])
            assert all(c.message.endswith("unchanged") for c in changes), (key, changes)
            seen += plural == "services"
    assert seen == 4
    # a Service read back whole (kubectl get -o yaml | kubectl apply) keeps its addresses
    whole = copy.deepcopy(objs["services"][(NS, "monospaced")])
    apply_objects(st, [whole])
    ss = st.services[(NS, "monospaced")]
    assert (ss.cluster_ip, ss.cluster_ip6) == ("10.43.0.11", "2001:cafe:43::b")


def test_kubectl_endpoints_column_brackets_ipv6(st, objs) -> None:
    p = pod(st, "monospaced-test")
    row = tables.table("endpoints", [objs["endpoints"][(NS, "only6")]], "1")["rows"][0]
    assert row["cells"][1] == f"[{p.ip6}]:3000"
