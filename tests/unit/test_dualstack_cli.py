"""Dual-stack in the CLI's pure parts: `observe --protocol icmpv6` selects ICMPv6 flows, and
`trace` refuses an IPv6 destination clearly (its probes are IPv4) before doing anything."""

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


@pytest.mark.parametrize("dest", ["2001:cafe:43::b", "[2001:cafe:43::b]", "fd00::1"])
def test_trace_refuses_ipv6_destinations(dest):
    with pytest.raises(InputError, match="IPv6: emunet trace sends IPv4 probes only"):
        tracer.split_dest(dest)


def test_trace_still_splits_ipv4_and_names():
    assert tracer.split_dest("10.43.0.11:80") == ("10.43.0.11", 80)
    assert tracer.split_dest("monospaced") == ("monospaced", None)
