"""DNS from real clients in pods, through the real datapath, against answers CoreDNS gives.

One cluster for the module (tests/e2e/configs/dns.yaml): a client pod on node-1 asks the kube-dns
ClusterIP, so every query is DNATed by the agent and, for pods on node-2, crosses the VXLAN
overlay. Expected shapes follow CoreDNS's kubernetes plugin tests (handler_test.go: A, SRV
weight 100/n, SOA fields 7200 1800 86400 <ttl>, NXDOMAIN vs NODATA with the SOA, dns-version TXT
TTL 28800, ExternalName CNAME chased inside the zone and, outside it, upstream) and the
Kubernetes DNS specification.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.cluster import ROOT, Cluster

NS = "dns-e2e"
D = "cluster.local"
API = f"api.{NS}.svc.{D}"
WEB = f"web.{NS}.svc.{D}"
SOA_TAIL = "7200 1800 86400 5"  # CoreDNS: refresh, retry, expire, minimum = zone TTL


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    text = ((ROOT / "tests/e2e/configs/dns.yaml").read_text()
            .replace("@PYTHON@", sys.executable)
            .replace("@UPSTREAM@", str(ROOT / "tests/e2e/dns_upstream.py")))
    c = module_clusters(None, "emd", text=text)
    c.ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in c.get("pods")}
    return c


@dataclass
class Dig:
    status: str
    flags: set[str]
    answer: list[str] = field(default_factory=list)
    authority: list[str] = field(default_factory=list)
    additional: list[str] = field(default_factory=list)
    server: str = ""
    text: str = ""


def dig(c: Cluster, *args: str, pod: str = "client") -> Dig:
    """Run dig in a pod and parse its default output (records normalised to single spaces)."""
    out = c.exec(NS, pod, "dig", *args, check=False).stdout
    head = re.search(r"status: (\w+),", out)
    flags = re.search(r";; flags: ([a-z ]*);", out)
    assert head and flags, out
    res = Dig(head.group(1), set(flags.group(1).split()), text=out)
    section = None
    for line in out.splitlines():
        m = re.match(r";; (ANSWER|AUTHORITY|ADDITIONAL) SECTION:", line)
        if m:
            section = getattr(res, m.group(1).lower())
        elif not line.strip() or line.startswith(";"):
            section = None if not line.strip() else section
            if line.startswith(";; SERVER:"):
                res.server = line
        elif section is not None:
            section.append(" ".join(line.split()))
    return res


def soa(serial_free: list[str]) -> list[str]:
    """The SOA records with the serial (a timestamp) blanked out."""
    return [re.sub(r" \d+ (7200 1800 86400)", r" S \1", r) for r in serial_free]


NXDOMAIN_SOA = [f"{D}. 5 IN SOA ns.dns.{D}. hostmaster.{D}. S {SOA_TAIL}"]


def test_a_record_for_a_cluster_ip_service_honours_spec_cluster_ip(cluster):
    r = dig(cluster, API)
    assert r.status == "NOERROR" and r.flags == {"qr", "aa", "rd", "ra"}
    assert r.answer == [f"{API}. 5 IN A 10.43.0.80"]
    assert "10.43.0.10#53" in r.server and "(UDP)" in r.server


def test_srv_for_a_named_port_of_a_cluster_ip_service(cluster):
    r = dig(cluster, "SRV", f"_http._tcp.{API}")
    assert r.answer == [f"_http._tcp.{API}. 5 IN SRV 0 100 80 {API}."]
    assert r.additional == [f"{API}. 5 IN A 10.43.0.80"]


def test_headless_service_answers_every_ready_pod(cluster):
    web = {f"web-{i}": cluster.ips[f"web-{i}"] for i in range(6)}
    r = dig(cluster, WEB)
    assert sorted(r.answer) == sorted(f"{WEB}. 5 IN A {ip}" for ip in web.values())
    # spec.hostname + spec.subdomain = the Service name: the pod's own A record
    r = dig(cluster, f"web-3.{WEB}")
    assert r.answer == [f"web-3.{WEB}. 5 IN A {web['web-3']}"]
    srv = dig(cluster, "SRV", f"_http._tcp.{WEB}")
    assert sorted(srv.answer) == sorted(
        f"_http._tcp.{WEB}. 5 IN SRV 0 16 80 {h}.{WEB}." for h in web)  # weight 100/6
    assert sorted(srv.additional) == sorted(f"{h}.{WEB}. 5 IN A {ip}" for h, ip in web.items())


def test_headless_without_endpoints_and_missing_names_are_nxdomain_with_soa(cluster):
    for name in (f"empty.{NS}.svc.{D}", f"nope.{NS}.svc.{D}", f"api.nowhere.svc.{D}",
                 f"bogus.{WEB}"):
        r = dig(cluster, name)
        assert r.status == "NXDOMAIN" and "aa" in r.flags, name
        assert r.answer == [] and soa(r.authority) == NXDOMAIN_SOA, name


def test_ptr_for_cluster_ip_endpoint_ip_and_a_pod_backing_nothing(cluster):
    assert dig(cluster, "-x", "10.43.0.80").answer == [
        f"80.0.43.10.in-addr.arpa. 5 IN PTR {API}."]
    ip = cluster.ips["web-2"]
    rev = ".".join(reversed(ip.split("."))) + ".in-addr.arpa."
    assert dig(cluster, "-x", ip).answer == [f"{rev} 5 IN PTR web-2.{WEB}."]
    # CoreDNS names only Service endpoints; k3s's `fallthrough in-addr.arpa` then passes the
    # question on to forward: the fake upstream's NODATA, not authoritative
    r = dig(cluster, "-x", cluster.ips["client"])
    assert r.status == "NOERROR" and r.answer == [] and "aa" not in r.flags


def test_aaaa_in_an_ipv4_cluster_is_nodata_with_soa(cluster):
    r = dig(cluster, "AAAA", API)
    assert r.status == "NOERROR" and r.answer == []
    assert soa(r.authority) == NXDOMAIN_SOA


def test_dns_version_txt_and_the_apex_soa_and_ns(cluster):
    assert dig(cluster, "TXT", f"dns-version.{D}").answer == [
        f'dns-version.{D}. 28800 IN TXT "1.1.0"']
    assert soa(dig(cluster, "SOA", D).answer) == NXDOMAIN_SOA
    ns = dig(cluster, "NS", D)
    # CoreDNS ns.go: the Service whose endpoint the responder is, its ClusterIP as glue
    assert ns.answer == [f"{D}. 5 IN NS kube-dns.kube-system.svc.{D}."]
    assert ns.additional == [f"kube-dns.kube-system.svc.{D}. 5 IN A 10.43.0.10"]


def test_tcp_and_norec(cluster):
    r = dig(cluster, "+tcp", API)
    assert "(TCP)" in r.server and r.answer == [f"{API}. 5 IN A 10.43.0.80"]
    r = dig(cluster, "+norec", API)
    assert r.flags == {"qr", "aa", "ra"} and r.answer  # RD is copied, so here it is clear


def test_case_is_echoed(cluster):
    r = dig(cluster, "Api.DNS-e2e.svc.Cluster.Local")
    assert r.answer == ["Api.DNS-e2e.svc.Cluster.Local. 5 IN A 10.43.0.80"]


def test_large_headless_answer_is_truncated_over_udp_and_complete_over_tcp(cluster):
    # 6 pods x 4 named ports: 24 SRV records (~1.3 kB) do not fit 512 bytes, nor 1232
    udp = dig(cluster, "+noedns", "+ignore", "SRV", WEB)
    assert "tc" in udp.flags and udp.answer == []
    tcp = dig(cluster, "+tcp", "SRV", WEB)
    assert "tc" not in tcp.flags and len(tcp.answer) == 24 and len(tcp.additional) == 6
    auto = dig(cluster, "SRV", WEB)  # dig retries over TCP on TC, as resolvers do
    assert sorted(auto.answer) == sorted(tcp.answer)
    assert ";; Truncated, retrying in TCP mode." in auto.text


def test_external_name_is_a_cname(cluster):
    r = dig(cluster, f"ext-in.{NS}.svc.{D}")  # target inside the zone: chased, as CoreDNS does
    assert r.answer == [f"ext-in.{NS}.svc.{D}. 5 IN CNAME {API}.", f"{API}. 5 IN A 10.43.0.80"]
    r = dig(cluster, "CNAME", f"ext-out.{NS}.svc.{D}")
    assert r.answer == [f"ext-out.{NS}.svc.{D}. 5 IN CNAME www.example.org."]
    # a target outside the cluster: CoreDNS looks it up upstream (its `upstream`, on by
    # default) and answers the CNAME and the upstream's record, over UDP and over TCP
    for how, ip in (("+notcp", "192.0.2.44"), ("+tcp", "192.0.2.45")):
        r = dig(cluster, how, f"ext-out.{NS}.svc.{D}")
        assert r.status == "NOERROR" and r.answer == [
            f"ext-out.{NS}.svc.{D}. 5 IN CNAME www.example.org.",
            f"www.example.org. 60 IN A {ip}"], r.text
    out = cluster.exec(NS, "client", "getent", "hosts", f"ext-out.{NS}.svc.{D}").stdout
    assert out.split()[0] == "192.0.2.44"


def test_nslookup_getent_getaddrinfo_and_curl_by_short_name(cluster):
    out = cluster.exec(NS, "client", "nslookup", "api").stdout
    assert f"Name:\t{API}" in out and "Address: 10.43.0.80" in out
    # glibc walks the search list (ndots:5): api -> api.dns-e2e.svc.cluster.local
    out = cluster.exec(NS, "client", "getent", "hosts", "api").stdout
    assert out.split() == ["10.43.0.80", API]
    out = cluster.exec(NS, "client", "getent", "hosts", "web-4.web").stdout
    assert out.split() == [cluster.ips["web-4"], f"web-4.{WEB}"]
    code = ("import socket; print(sorted({a[4][0] for a in socket.getaddrinfo("
            "'web', 80, socket.AF_INET, socket.SOCK_STREAM)}))")
    out = cluster.exec(NS, "client", sys.executable, "-c", code).stdout
    assert out.strip() == str(sorted(cluster.ips[f"web-{i}"] for i in range(6)))
    out = cluster.exec(NS, "client", "curl", "-s", "-m", "5", "http://api").stdout
    assert "Hello from api" in out


def test_forwarding_to_the_upstream_a_pod_runs(cluster):
    r = dig(cluster, "www.example.com")
    # the fake upstream's answer, relayed as is: not authoritative, its TTL
    assert r.status == "NOERROR" and "aa" not in r.flags
    assert r.answer == ["www.example.com. 60 IN A 192.0.2.44"]
    assert cluster.exec(NS, "client", "getent", "hosts", "www.example.com").stdout.split() == [
        "192.0.2.44", "www.example.com"]
    # over TCP the query goes upstream over TCP too (CoreDNS forward's default); the fake
    # upstream answers TCP queries with another address
    r = dig(cluster, "+tcp", "www.example.com")
    assert r.status == "NOERROR" and r.answer == ["www.example.com. 60 IN A 192.0.2.45"]


def test_names_outside_the_domain_are_refused_without_upstreams(cluster, tmp_path):
    """A second responder, on the same state minus the upstreams, in the client pod."""
    state = json.loads((cluster.run_dir / "state.json").read_text())
    state["cluster"]["dns_upstreams"] = []
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    netns = f"{cluster.prefix}-{NS}-client"
    srv = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m",
                            "emunet.dns.server", "--state", str(path), "--port", "5353",
                            "--stats", str(tmp_path / "dns.json")],
                           cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        ip = cluster.ips["client"]
        for _ in range(50):
            r = subprocess.run(["ip", "netns", "exec", netns, "dig", f"@{ip}", "-p", "5353",
                                "+tries=1", "+time=1", "www.example.com"],
                               capture_output=True, text=True)
            if "status:" in r.stdout:
                break
        assert "status: REFUSED" in r.stdout, r.stdout + r.stderr
        assert "flags: qr rd ra;" in r.stdout  # not authoritative for what is not ours
    finally:
        srv.terminate()
        srv.wait(timeout=5)


def test_clients_outside_the_cluster_are_not_answered(cluster):
    """A source address outside the cluster and service CIDRs gets no reply at all."""
    pod = next(n for n in cluster.ips if n.startswith("coredns-"))
    netns = f"{cluster.prefix}-kube-system-{pod}"
    subprocess.run(["ip", "-n", netns, "addr", "add", "192.0.2.7/32", "dev", "lo"], check=True)
    try:
        base = ["ip", "netns", "exec", netns, "dig", "+tries=1", "+time=1"]
        ok = subprocess.run([*base, "@127.0.0.1", API], capture_output=True, text=True)
        assert "10.43.0.80" in ok.stdout  # loopback is inside: the control
        r = subprocess.run([*base, "@192.0.2.7", "-b", "192.0.2.7", API], capture_output=True,
                           text=True)
        assert "status:" not in r.stdout and "timed out" in r.stdout, r.stdout
    finally:
        subprocess.run(["ip", "-n", netns, "addr", "del", "192.0.2.7/32", "dev", "lo"])


def test_changes_show_in_the_very_next_answer(cluster, tmp_path):
    svc = tmp_path / "late.yaml"
    svc.write_text(f"""\
apiVersion: v1
kind: Service
metadata: {{name: late, namespace: {NS}}}
spec:
  clusterIP: 10.43.0.99
  selector: {{app: api}}
  ports: [{{name: http, port: 81, targetPort: http}}]
""")
    late = f"late.{NS}.svc.{D}"
    assert dig(cluster, late).status == "NXDOMAIN"
    cluster.emunet("apply", "-f", str(svc))
    assert dig(cluster, late).answer == [f"{late}. 5 IN A 10.43.0.99"]
    assert dig(cluster, "-x", "10.43.0.99").answer[0].endswith(f"PTR {late}.")
    cluster.emunet("delete", "svc", "late", "-n", NS)
    assert dig(cluster, late).status == "NXDOMAIN"
    # pod churn: a deleted pod leaves the headless answer at once
    cluster.emunet("delete", "pod", "web-5", "-n", NS)
    r = dig(cluster, WEB)
    assert len(r.answer) == 5 and cluster.ips["web-5"] not in " ".join(r.answer)
    assert dig(cluster, f"web-5.{WEB}").status == "NXDOMAIN"


def test_the_coredns_configmap_sets_ttl_and_pod_records(cluster, tmp_path):
    """kube-system/coredns's Corefile is what the responder runs: `ttl 7` shows in the TTL a
    pod's dig sees, `pods verified` answers only a real pod's IP, `disabled` none (CoreDNS's
    kubernetes plugin); the responder picks it up on the publish, as `reload` would."""
    def corefile(pods: str, ttl: str) -> Path:
        f = tmp_path / f"cm-{pods}.yaml"
        f.write_text(f"""\
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    .:53 {{
        kubernetes {D} in-addr.arpa ip6.arpa {{
          pods {pods}
          fallthrough in-addr.arpa ip6.arpa
{ttl}        }}
        forward . /etc/resolv.conf
    }}
""")
        return f
    real = cluster.ips["api"].replace(".", "-") + f".{NS}.pod.{D}"
    ghost = f"10-42-200-200.{NS}.pod.{D}"
    assert dig(cluster, ghost).answer == [f"{ghost}. 5 IN A 10.42.200.200"]  # k3s: insecure
    try:
        cluster.emunet("apply", "-f", str(corefile("verified", "          ttl 7\n")))
        assert dig(cluster, API).answer == [f"{API}. 7 IN A 10.43.0.80"]
        assert dig(cluster, real).answer == [f"{real}. 7 IN A {cluster.ips['api']}"]
        assert dig(cluster, ghost).status == "NXDOMAIN"
        cluster.emunet("apply", "-f", str(corefile("disabled", "")))
        r = dig(cluster, real)
        assert r.status == "NXDOMAIN" and r.answer == []
        assert dig(cluster, API).answer == [f"{API}. 5 IN A 10.43.0.80"]  # CoreDNS's default
    finally:
        cluster.emunet("apply", "-f", str(corefile("insecure", "")))
    assert dig(cluster, ghost).answer == [f"{ghost}. 5 IN A 10.42.200.200"]
