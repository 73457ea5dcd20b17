"""The sysctls of node and pod namespaces (emunet.host.sysctls): IPv6 off in an IPv4-only
cluster; on, without forwarding, Router Advertisements or DAD, in a dual-stack one."""

from __future__ import annotations

from emunet.host import sysctls


def test_ipv4_only_turns_ipv6_off_and_never_forwards():
    v = sysctls.namespace_sysctls(ipv6=False)
    assert v["net/ipv4/ip_forward"] == "0"
    assert v["net/ipv6/conf/all/disable_ipv6"] == v["net/ipv6/conf/default/disable_ipv6"] == "1"
    assert not any(k.endswith("forwarding") for k in v)


def test_dual_stack_keeps_ipv6_on_as_a_host_not_a_router():
    v = sysctls.namespace_sysctls(ipv6=True)
    for dev in ("all", "default"):
        assert v[f"net/ipv6/conf/{dev}/disable_ipv6"] == "0"
        assert v[f"net/ipv6/conf/{dev}/forwarding"] == "0"  # the agent forwards (DESIGN.md)
        assert v[f"net/ipv6/conf/{dev}/accept_ra"] == "0"  # static routes, no RS sent
        assert v[f"net/ipv6/conf/{dev}/accept_dad"] == "0"
    keys = list(v)  # "default" before "all": devices made later copy "default"
    assert keys.index("net/ipv6/conf/default/disable_ipv6") < \
        keys.index("net/ipv6/conf/all/disable_ipv6")
    assert v["net/ipv4/ip_forward"] == "0"


def test_a_kernel_without_ipv6_gets_only_the_ipv4_settings():
    assert not any("ipv6" in k for k in sysctls.namespace_sysctls(False, have_ipv6=False))


def test_pod_veths_offload_tcp_over_ipv6_too():
    assert "tx-tcp6-segmentation" in sysctls.POD_OFFLOADS
    assert all(sysctls.offload_feature(f) for f in sysctls.POD_OFFLOADS)
    assert not any("udp" in f for f in sysctls.POD_OFFLOADS)  # no USO: the agent cuts TCP only
