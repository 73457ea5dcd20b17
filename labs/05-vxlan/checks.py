"""Lab 5 checks: the outer destination, the VXLAN overhead, the largest DF ping, all live.

The MTUs are read from the interfaces themselves; the largest payload is proved by pinging with
Don't Fragment: SIZE must get a reply and SIZE + 1 must not (RFC 7348 section 4.3: VTEPs must
not fragment, so the pod MTU leaves room for the 50-byte encapsulation).
"""

from __future__ import annotations

import re

NS = "blog-website"
IPV4_ICMP = 20 + 8


def _mtu(ctx, netns: str) -> int | None:
    m = re.search(r"mtu (\d+)", ctx.run(netns, "ip", "-o", "link", "show", "eth0").stdout)
    return int(m.group(1)) if m else None


def server_node_ip(ctx) -> str | None:
    ps = ctx.pod(NS, "monospaced-test")
    return ctx.node(ps.node).underlay_ip if ps else None


def encap_overhead(ctx) -> str | None:
    ps = ctx.pod(NS, "frontend-client")
    if ps is None:
        return None
    pod, underlay = _mtu(ctx, ps.netns), _mtu(ctx, ctx.node(ps.node).netns)
    return str(underlay - pod) if pod and underlay else None


def largest_payload(ctx) -> str | None:
    ps = ctx.pod(NS, "frontend-client")
    mtu = _mtu(ctx, ps.netns) if ps else None
    return str(mtu - IPV4_ICMP) if mtu else None


def _ping(ctx, size: int) -> bool:
    server = ctx.pod(NS, "monospaced-test")
    p = ctx.exec(NS, "frontend-client", "ping", "-c1", "-W1", "-M", "do", "-s", str(size),
                 server.ip)
    return p.returncode == 0


def largest_payload_is_the_limit(ctx) -> str | None:
    size = int(largest_payload(ctx) or 0)
    if not _ping(ctx, size):
        return f"a {size}-byte DF ping from frontend-client to monospaced-test gets no reply"
    if _ping(ctx, size + 1):
        return f"a {size + 1}-byte DF ping also gets through: {size} is not the limit"
    return None
