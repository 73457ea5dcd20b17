"""Dual-stack (issue 19), control plane: the Cluster document's k3s-style CIDR lists and their
located errors, the Service IP-family rules with the API server's wording, IPv6 IPAM for nodes,
pods and Services, and the state codec (IPv4-only JSON has no new key; dual-stack round trips)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emunet.config import ConfigError, load_config, load_config_text
from emunet.model import ipfamily
from emunet.state import codec
from emunet.state.plan import plan

ROOT = Path(__file__).resolve().parents[2]
DUAL = ROOT / "configs" / "dual-stack.yaml"


def cluster_doc(cluster_cidr: str = "10.42.0.0/16,2001:cafe:42::/56",
                service_cidr: str = "10.43.0.0/16,2001:cafe:43::/112", nodes: str = "",
                extra: str = "") -> str:
    nodes = nodes or "    - name: n1\n    - name: n2\n"
    return (f"apiVersion: emunet/v1alpha1\nkind: Cluster\nmetadata: {{name: t}}\nspec:\n"
            f"  nodes:\n{nodes}"
            f"  clusterCIDR: {cluster_cidr}\n  serviceCIDR: {service_cidr}\n{extra}")


def service_doc(spec: str, name: str = "web", selector: str = "{app: web}") -> str:
    return (f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n"
            f"  selector: {selector}\n  ports: [{{port: 80}}]\n{spec}")


POD = ("---\napiVersion: v1\nkind: Pod\nmetadata: {name: web-0, labels: {app: web}}\n"
       "spec:\n  containers: [{name: c, image: nginx}]\n")


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "t.yaml")
    return info.value


# ---- the Cluster document ------------------------------------------------------------------

def test_dual_stack_cidrs_as_k3s_writes_them() -> None:
    spec = load_config_text(cluster_doc(), "t.yaml").cluster
    assert spec.families == ("IPv4", "IPv6") and spec.dual_stack
    assert (spec.cluster_cidr, spec.cluster_cidr6) == ("10.42.0.0/16", "2001:cafe:42::/56")
    assert (spec.service_cidr, spec.service_cidr6) == ("10.43.0.0/16", "2001:cafe:43::/112")
    assert spec.underlay_cidr6 == "fd00:e3e7::/64"  # the default ULA
    assert spec.cluster_dns6 == "2001:cafe:43::a"


def test_a_yaml_list_and_ipv6_first_are_accepted_too() -> None:
    spec = load_config_text(cluster_doc("[2001:cafe:42::/56, 10.42.0.0/16]",
                                        "2001:cafe:43::/112, 10.43.0.0/16"), "t.yaml").cluster
    assert spec.families == ("IPv6", "IPv4")
    assert spec.cluster_cidr == "10.42.0.0/16" and spec.service_cidr6 == "2001:cafe:43::/112"


def test_defaults_stay_ipv4_only() -> None:
    spec = load_config_text(cluster_doc("10.42.0.0/16", "10.43.0.0/16"), "t.yaml").cluster
    assert spec.families == ("IPv4",) and not spec.dual_stack
    assert spec.cluster_cidr6 is spec.service_cidr6 is spec.underlay_cidr6 is None


@pytest.mark.parametrize("cluster, service, path, needle", [
    ("10.42.0.0/16,10.44.0.0/16", "10.43.0.0/16", "spec.clusterCIDR",
     "--cluster-cidr[0] and --cluster-cidr[1] must be of different IP family"),
    ("10.42.0.0/16,2001:cafe:42::/56", "2001:cafe:43::/112,2001:cafe:44::/112",
     "spec.serviceCIDR", "--service-cluster-ip-range[0] and --service-cluster-ip-range[1] "
     "must be of different IP family"),
    ("10.42.0.0/16,2001:cafe:42::/56,10.50.0.0/16", "10.43.0.0/16", "spec.clusterCIDR",
     "must not contain more than two entries"),
    ("10.42.0.0/16,2001:cafe:42::/56", "10.43.0.0/16,2001:cafe:43::/64", "spec.serviceCIDR",
     "specified --service-cluster-ip-range[1] is too large; for 128-bit addresses, the mask "
     "must be >= 108"),
    ("10.42.0.0/16,2001:cafe:42::/56", "10.43.0.0/16", "spec.serviceCIDR",
     "clusterCIDR families ['IPv4', 'IPv6'] and serviceCIDR families ['IPv4'] differ"),
    ("10.42.0.0/16,2001:cafe:42::/56", "2001:cafe:43::/112,10.43.0.0/16", "spec.serviceCIDR",
     "differ"),
    ("2001:cafe:42::/56", "2001:cafe:43::/112", "spec.clusterCIDR", "needs an IPv4 range"),
    ("10.42.0.0/16,2001:cafe:42::1/56", "10.43.0.0/16", "spec.clusterCIDR",
     "has host bits set"),
    ("10.42.0.0/16,nonsense", "10.43.0.0/16", "spec.clusterCIDR", "is not an IP network"),
    ("10.42.0.0/16,,2001:cafe:42::/56", "10.43.0.0/16", "spec.clusterCIDR", "empty entry"),
    ("[]", "10.43.0.0/16", "spec.clusterCIDR", "is an empty list"),  # found by test_config_fuzz
])
def test_cidr_errors_are_located(cluster: str, service: str, path: str, needle: str) -> None:
    err = error(cluster_doc(cluster, service))
    line = 8 if path == "spec.clusterCIDR" else 9
    assert (err.file, err.line, err.path) == ("t.yaml", line, path), err.one_line()
    assert needle in err.message, err.one_line()


def test_ipv4_only_message_is_gone() -> None:
    err = error(cluster_doc("10.42.0.0/16,2001:cafe:42::/56", "10.43.0.0/16,banana"))
    assert "IPv4-only" not in str(err) and "is not an IP network" in err.message


def test_dual_stack_pod_mtu_is_at_least_ipv6s_minimum() -> None:
    err = error(cluster_doc(extra="  mtu: 1200\n"))
    assert (err.path, err.line) == ("spec.mtu", 10) and "minimum link MTU of 1280" in err.message
    load_config_text(cluster_doc(extra="  mtu: 1280\n"), "t.yaml")
    load_config_text(cluster_doc("10.42.0.0/16", "10.43.0.0/16", extra="  mtu: 1200\n"),
                     "t.yaml")  # IPv4-only: 576 and up, as before


def test_ipv4_service_range_limit_too() -> None:
    err = error(cluster_doc("10.42.0.0/16", "10.0.0.0/8"))
    assert "for 32-bit addresses, the mask must be >= 12" in err.message


def test_node_pod_cidrs_in_k3s_form_and_defaults() -> None:
    nodes = ("    - name: n1\n      podCIDR: 10.42.7.0/24,2001:cafe:42:7::/64\n"
             "    - name: n2\n      podCIDR: 10.42.8.0/24\n"
             "    - name: n3\n      underlayIP6: fd00:e3e7::99\n")
    st = plan(load_config_text(cluster_doc(nodes=nodes), "t.yaml"))
    n1, n2, n3 = st.nodes
    assert (n1.pod_cidr, n1.pod_cidr6) == ("10.42.7.0/24", "2001:cafe:42:7::/64")
    assert n2.pod_cidr6 == "2001:cafe:42:2::/64"  # the family left out: the node's default
    assert n3.pod_cidr6 == "2001:cafe:42:3::/64" and n3.underlay_ip6 == "fd00:e3e7::99"
    assert n1.underlay_ip6 == "fd00:e3e7::b" and n2.underlay_ip6 == "fd00:e3e7::c"
    # the bridge CNI's gateway (host-local's first address) and the flannel-v6.1 MAC
    assert n1.gateway_ip6 == "2001:cafe:42:7::1" and n1.vtep_mac6 == "0a:5b:00:42:00:07"
    assert n1.gateway_mac == "0a:58:0a:2a:07:01"  # one gateway MAC for ARP and NDP


@pytest.mark.parametrize("node, needle", [
    ("      podCIDR: 10.42.1.0/24,2001:cafe:99:1::/64\n", "is outside clusterCIDR"),
    ("      podCIDR: 10.42.1.0/24,2001:cafe:42:1::/127\n", "is too small"),
    ("      podCIDR: 10.42.1.0/24,10.42.2.0/24\n", "podCIDRs[0] and podCIDRs[1] must be of "
     "different IP family"),
    ("      underlayIP6: 2001:db8::1\n", "is not a host address of underlay.cidr6"),
])
def test_node_errors_are_located(node: str, needle: str) -> None:
    err = error(cluster_doc(nodes="    - name: n1\n" + node))
    assert err.line == 7 and err.path.startswith("spec.nodes[0]."), err.one_line()
    assert needle in err.message, err.one_line()


def test_ipv6_fields_refused_on_an_ipv4_cluster() -> None:
    err = error(cluster_doc("10.42.0.0/16", "10.43.0.0/16",
                            nodes="    - name: n1\n      podCIDR: 10.42.1.0/24,2001:db8::/64\n"))
    assert "the cluster is IPv4-only" in err.message and err.path == "spec.nodes[0].podCIDR"


def test_overlapping_ipv6_ranges_are_refused() -> None:
    err = error(cluster_doc("10.42.0.0/16,2001:cafe:42::/56",
                            "10.43.0.0/16,2001:cafe:42::/112"))
    assert "overlaps clusterCIDR 2001:cafe:42::/56" in err.message


def test_exit_2_with_file_line_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(cluster_doc("10.42.0.0/16,10.44.0.0/16"))
    out = subprocess.run([sys.executable, "-m", "emunet", "validate", str(bad)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2, out
    assert f"{bad}:8: spec.clusterCIDR:" in out.stderr and "different IP family" in out.stderr


def test_the_shipped_dual_stack_config_validates() -> None:
    st = plan(load_config(str(DUAL)))
    assert st.cluster.families == ("IPv4", "IPv6")
    svc = st.services[("blog-website", "monospaced")]
    assert (svc.cluster_ip, svc.cluster_ip6) == ("10.43.0.11", "2001:cafe:43::b")
    assert svc.ip_family_policy == "PreferDualStack"


# ---- Services: ipFamilyPolicy, ipFamilies, clusterIPs ---------------------------------------

def _svc(spec: str, cluster: str = "", **kw):
    text = (cluster or cluster_doc()) + POD + service_doc(spec, **kw)
    st = plan(load_config_text(text, "t.yaml"))
    return st, st.services[("default", kw.get("name", "web"))]


@pytest.mark.parametrize("spec, fams, policy, v4, v6", [
    ("", ("IPv4",), "SingleStack", "10.43.0.11", None),
    ("  ipFamilyPolicy: PreferDualStack\n", ("IPv4", "IPv6"), "PreferDualStack",
     "10.43.0.11", "2001:cafe:43::b"),
    ("  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv6]\n", ("IPv6", "IPv4"),
     "RequireDualStack", "10.43.0.11", "2001:cafe:43::b"),
    ("  ipFamilies: [IPv6]\n", ("IPv6",), "SingleStack", None, "2001:cafe:43::b"),
    ("  clusterIP: 2001:cafe:43::50\n", ("IPv6",), "SingleStack", None, "2001:cafe:43::50"),
    ("  clusterIPs: [10.43.0.50, '2001:cafe:43::50']\n  ipFamilyPolicy: PreferDualStack\n",
     ("IPv4", "IPv6"), "PreferDualStack", "10.43.0.50", "2001:cafe:43::50"),
])
def test_families_and_addresses_per_policy(spec, fams, policy, v4, v6) -> None:
    st, ss = _svc(spec)
    assert (ss.ip_families, ss.ip_family_policy) == (fams, policy)
    assert (ss.cluster_ip, ss.cluster_ip6) == (v4, v6)
    eps = st.endpoints(ss.key)[0]
    pod = st.pods[("default", "web-0")]
    assert [e.ip for e in eps] == [pod.ip if f == "IPv4" else pod.ip6 for f in fams]


def test_prefer_dual_stack_on_an_ipv4_cluster_is_single() -> None:
    st, ss = _svc("  ipFamilyPolicy: PreferDualStack\n",
                  cluster_doc("10.42.0.0/16", "10.43.0.0/16"))
    assert (ss.cluster_ip, ss.cluster_ip6, ss.ip_families) == ("10.43.0.11", None, ())


def test_headless_without_selector_defaults_to_require_dual_stack() -> None:
    st, ss = _svc("  clusterIP: None\n", selector="null")
    assert (ss.ip_families, ss.ip_family_policy) == (("IPv4", "IPv6"), "RequireDualStack")
    assert ss.cluster_ip is None and ss.cluster_ip6 is None


@pytest.mark.parametrize("spec, cluster, path, needle", [
    ("  ipFamilyPolicy: RequireDualStack\n", "v4", "spec.ipFamilyPolicy",
     'Invalid value: "RequireDualStack": this cluster is not configured for dual-stack '
     "services"),
    ("  ipFamilies: [IPv6]\n", "v4", "spec.ipFamilies[0]",
     'Invalid value: "IPv6": not configured on this cluster'),
    ("  clusterIP: 2001:cafe:43::50\n", "v4", "spec.clusterIPs[0]",
     'Invalid value: ["2001:cafe:43::50"]: IPv6 is not configured on this cluster'),
    ("  ipFamilies: [IPv4, IPv4]\n  ipFamilyPolicy: PreferDualStack\n", "ds",
     "spec.ipFamilies[1]", 'Duplicate value: "IPv4"'),
    ("  ipFamilies: [IPv5]\n", "ds", "spec.ipFamilies[0]",
     'Unsupported value: "IPv5": supported values: "IPv4", "IPv6"'),
    ("  ipFamilyPolicy: DualStack\n", "ds", "spec.ipFamilyPolicy",
     'Unsupported value: "DualStack": supported values: "PreferDualStack", '
     '"RequireDualStack", "SingleStack"'),
    ("  ipFamilies: [IPv4, IPv6]\n", "ds", "spec.ipFamilyPolicy",
     "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are "
     "specified"),
    ("  clusterIPs: [10.43.0.50, '2001:cafe:43::50']\n", "ds", "spec.ipFamilyPolicy",
     "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs"),
    ("  clusterIPs: [10.43.0.50, 10.43.0.51]\n  ipFamilyPolicy: PreferDualStack\n", "ds",
     "spec.clusterIPs", "may specify no more than one IP for each IP family"),
    ("  clusterIPs: ['2001:cafe:43::50']\n  ipFamilies: [IPv4]\n", "ds",
     "spec.clusterIPs[0]", "expected an IPv4 value as indicated by `ipFamilies[0]`"),
    ("  clusterIP: 10.43.0.50\n  clusterIPs: [10.43.0.51]\n", "ds", "spec.clusterIPs",
     "first value must match `clusterIP`"),
    ("  clusterIPs: [None, 10.43.0.50]\n", "ds", "spec.clusterIPs",
     "'None' must be the first and only value"),
    ("  clusterIPs: [10.43.0.50, '2001:cafe:43::50', 10.43.0.52]\n", "ds",
     "spec.clusterIPs", "may only hold up to 2 values"),
    ("  clusterIPs: [10.43.0.50, '2001:cafe:44::50']\n  ipFamilyPolicy: RequireDualStack\n",
     "ds", "spec.clusterIPs", "is not a host address of serviceCIDR 2001:cafe:43::/112"),
    ("  clusterIP: '2001:cafe:43::a'\n", "ds", "spec.clusterIP", "is clusterDNS"),
])
def test_impossible_combinations_are_located(spec, cluster, path, needle) -> None:
    c = cluster_doc("10.42.0.0/16", "10.43.0.0/16") if cluster == "v4" else cluster_doc()
    text = c + POD + service_doc(spec)
    err = error(text)
    start = text.count("\n", 0, text.index("kind: Service")) + 1
    assert start < err.line <= text.count("\n") and err.path == path, err.one_line()
    assert needle in err.message, err.one_line()


def test_two_services_cannot_share_an_ipv6_cluster_ip() -> None:
    text = (cluster_doc() + POD + service_doc("  clusterIP: '2001:cafe:43::50'\n")
            + service_doc("  clusterIP: '2001:cafe:43::50'\n", name="web2"))
    assert "is already Service default/web's" in error(text).message


def test_external_name_refuses_family_fields() -> None:
    text = cluster_doc() + ("---\napiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n"
                            "  type: ExternalName\n  externalName: a.example.com\n"
                            "  ipFamilyPolicy: SingleStack\n")
    err = error(text)
    assert "may not be set for ExternalName services" in err.message
    assert err.path == "spec.ipFamilyPolicy"


def test_settle_matches_the_api_server_defaults() -> None:
    from emunet.model import Service
    ds, v4 = ("IPv4", "IPv6"), ("IPv4",)
    assert ipfamily.settle(Service("d", "s"), v4).families == ("IPv4",)
    assert ipfamily.settle(Service("d", "s", cluster_ip="None"), v4).families == (
        "IPv4", "IPv6")  # headless + selectorless: both even on a single-stack cluster
    got = ipfamily.settle(Service("d", "s", ip_family_policy="PreferDualStack",
                                  selector={"a": "b"}), ("IPv6", "IPv4"))
    assert got.families == ("IPv6", "IPv4") and not got.errors
    assert ipfamily.settle(Service("d", "s", type="ExternalName"), ds).families == ()


# ---- pods: IPv6 IPAM, podIPs ---------------------------------------------------------------

def test_pods_get_one_address_per_family_from_their_node() -> None:
    st = plan(load_config(str(DUAL)))
    for p in st.pods.values():
        node = st.node(p.node)
        assert p.ip6 is not None and p.ip6.startswith(node.pod_cidr6.split("::")[0] + "::")
        assert p.ip6 != node.gateway_ip6
        assert p.ips(st.cluster.families) == [p.ip, p.ip6]
    assert len({p.ip6 for p in st.pods.values()}) == len(st.pods)


def test_host_local_ipv6_does_not_reuse_a_released_address_at_once() -> None:
    st = plan(load_config(str(DUAL)))
    client = st.pods[("blog-website", "frontend-client")]
    st.remove_pod(client.key)
    again = st.add_pod(client.pod)
    assert again.ip6 != client.ip6 and again.node == client.node


def test_ipv6_primary_lists_ipv6_first() -> None:
    text = cluster_doc("2001:cafe:42::/56,10.42.0.0/16", "2001:cafe:43::/112,10.43.0.0/16")
    st = plan(load_config_text(text + POD, "t.yaml"))
    pod = st.pods[("default", "web-0")]
    assert pod.ips(st.cluster.families) == [pod.ip6, pod.ip]
    dns = st.services[("kube-system", "kube-dns")]
    assert dns.cluster_ips() == ["2001:cafe:43::a", "10.43.0.10"]
    assert dns.ip_family_policy == "RequireDualStack"


# ---- the state codec ------------------------------------------------------------------------

def test_ipv4_state_json_has_no_dual_stack_key() -> None:
    st = plan(load_config(str(ROOT / "configs" / "two-node.yaml")))
    text = codec.to_json(st)
    for key in ("cluster_cidr6", "service_cidr6", "families", "underlay_cidr6", "pod_cidr6",
                "gateway_ip6", "underlay_ip6", "vtep_mac6", '"ip6"', "cluster_ip6",
                "ip_families", "ip_family_policy", "cluster_ips", "last_ip6"):
        assert key not in text, key


def test_dual_stack_state_round_trips() -> None:
    st = plan(load_config(str(DUAL)))
    text = codec.to_json(st)
    back = codec.from_json(text)
    assert codec.to_json(back) == text
    assert back.cluster.families == ("IPv4", "IPv6")
    assert back.nodes[0].vtep_mac6 == st.nodes[0].vtep_mac6
    svc = back.services[("blog-website", "monospaced")]
    assert svc.ip_families == ("IPv4", "IPv6") and svc.cluster_ip6 == "2001:cafe:43::b"
    assert back.services[("kube-system", "kube-dns")].service.cluster_ips == (
        "10.43.0.10", "2001:cafe:43::a")
    assert json.loads(text)["last_ip6"]
    # allocation goes on where it stopped (the cursor is in the state)
    new = back.add_pod(st.pods[("blog-website", "intruder")].pod.__class__(
        "blog-website", "late", node_name="node-1"))
    assert new.ip6 == "2001:cafe:42:1::5"


def test_an_update_keeps_the_families_and_addresses_it_had() -> None:
    import dataclasses
    st, ss = _svc("  ipFamilyPolicy: PreferDualStack\n")
    bare = dataclasses.replace(ss.service, ip_family_policy=None)
    again = st.add_service(bare)  # the body says nothing: the old policy and both IPs stay
    assert (again.cluster_ip, again.cluster_ip6) == (ss.cluster_ip, ss.cluster_ip6)
    assert again.ip_family_policy == "PreferDualStack"
    single = st.add_service(dataclasses.replace(bare, ip_family_policy="SingleStack"))
    assert (single.cluster_ip, single.cluster_ip6, single.ip_families) == (
        ss.cluster_ip, None, ("IPv4",))  # SingleStack releases the secondary
    assert st.service_by_ip(ss.cluster_ip6) is None


@pytest.mark.parametrize("dns, dns6, policy", [
    (None, "2001:cafe:43::a", "RequireDualStack"),  # unset: one per service range (k3s)
    ("10.43.0.10,2001:cafe:43::35", "2001:cafe:43::35", "RequireDualStack"),
    ("10.43.0.10", None, "SingleStack"),  # one address given: SingleStack, as k3s renders it
])
def test_cluster_dns_in_k3s_form(dns, dns6, policy) -> None:
    extra = f"  clusterDNS: {dns}\n" if dns else ""
    st = plan(load_config_text(cluster_doc(extra=extra), "t.yaml"))
    assert st.cluster.cluster_dns6 == dns6
    kube_dns = st.services[("kube-system", "kube-dns")]
    assert kube_dns.ip_family_policy == policy and kube_dns.cluster_ip6 == dns6


@pytest.mark.parametrize("dns, needle", [
    ("10.43.0.10,10.43.0.11", "at most one address per IP family"),
    ("'2001:cafe:43::a'", "needs an IPv4 clusterDNS address"),
    ("10.43.0.10,2001:cafe:44::a", "is not a host address of serviceCIDR"),
])
def test_cluster_dns_errors(dns, needle) -> None:
    err = error(cluster_doc(extra=f"  clusterDNS: {dns}\n"))
    assert err.path == "spec.clusterDNS" and err.line == 10 and needle in err.message
