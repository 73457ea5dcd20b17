"""Dual-stack in the CLI's and observe's pure parts: `observe --protocol icmpv6` selects ICMPv6
flows, `trace` takes IPv6 destinations ([ADDR]:PORT), and the hook sees the trace mark in an
IPv6 header's traffic class."""

from __future__ import annotations

import pytest

from emunet.cluster import tracer
from emunet.errors import InputError
from emunet.observe import filters
from tests.unit.test_observe_flows import _args


def _flow(l4: str) -> dict:
    return {"time": "2026-01-01T00:00:00Z", "verdict": "FORWARDED", "l4": {l4: {"type": 128}},
            "source": {}, "destination": {}}


@pytest.mark.parametrize(("protocol", "l4", "hit"), [
    ("icmpv6", "ICMPv6", True), ("ICMPv6", "ICMPv6", True), ("icmp", "ICMPv6", False),
    ("icmpv6", "ICMPv4", False), ("icmp", "ICMPv4", True), ("icmpv4", "ICMPv4", True)])
def test_protocol_filter_knows_icmpv6(protocol, l4, hit):
    flt = filters.FlowFilter.from_args(_args(protocol=[protocol]))
    assert flt.match(_flow(l4)) is hit


@pytest.mark.parametrize(("dest", "split"), [
    ("2001:cafe:43::b", ("2001:cafe:43::b", None)),
    ("[2001:cafe:43::b]", ("2001:cafe:43::b", None)),
    ("[fd00::1]:80", ("fd00::1", 80))])
def test_trace_takes_ipv6_destinations(dest, split):
    assert tracer.split_dest(dest) == split


@pytest.mark.parametrize("dest", ["[fd00::1]x", "[nope]:80", "fd00::1:http:x", "[fd00::1]:http"])
def test_bad_ipv6_destinations_are_input_errors(dest):
    with pytest.raises(InputError):
        tracer.split_dest(dest)


def test_the_trace_mark_in_an_ipv6_traffic_class():
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    from emunet.observe import hook
    from emunet.observe.record import headers

    six = bytes(Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2", tc=hook.TRACE_TOS,
                               fl=0xABCDE) / TCP())
    plain = bytes(Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2", tc=0xB0) / TCP())
    assert hook.marked(six) and not hook.marked(plain)
    assert hook.marked(b"\0" * 8 + six, 8)  # behind a VXLAN header
    assert headers(six)["tos"] == hook.TRACE_TOS
    from scapy.layers.inet import IP
    v4 = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2", tos=hook.TRACE_TOS) / TCP())
    assert hook.marked(v4) and not hook.marked(v4[:15]) and not hook.marked(b"")


def test_trace_still_splits_ipv4_and_names():
    assert tracer.split_dest("10.43.0.11:80") == ("10.43.0.11", 80)
    assert tracer.split_dest("monospaced") == ("monospaced", None)


def test_probe_family_6_refuses_an_ipv4_only_cluster():
    from emunet.cluster import reachability
    from emunet.config import load_config
    from emunet.state.plan import plan
    from tests.e2e.cluster import ROOT

    st = plan(load_config(ROOT / "tests" / "e2e" / "configs" / "netpol-xyz.yaml"))
    with pytest.raises(InputError, match="not dual-stack"):
        reachability.probe(st, family=6)
