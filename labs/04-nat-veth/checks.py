"""Lab 4 checks: the veth peer (from the live node namespace), the DNAT, ip_forward."""

from __future__ import annotations

NS = "blog-website"


def client_veth_peer(ctx) -> str | None:
    """The interface in the node namespace whose index the pod's eth0@ifN points at."""
    ps = ctx.pod(NS, "frontend-client")
    if ps is None:
        return None
    node = ctx.node(ps.node)
    p = ctx.run(ps.netns, "ip", "-o", "link", "show", "eth0")
    peer_index = p.stdout.split(":")[1].split("@if")[-1].strip() if "@if" in p.stdout else ""
    for line in ctx.run(node.netns, "ip", "-o", "link").stdout.splitlines():
        index, name = line.split(":")[0].strip(), line.split(":")[1].strip().split("@")[0]
        if index == peer_index:
            return name
    return None


def monospaced_endpoints(ctx) -> set[str]:
    st = ctx.state()
    key = (NS, "monospaced")
    if key not in st.services:
        return set()
    return {f"{e.ip}:{e.port}" for eps in st.endpoints(key).values() for e in eps}


def dnat_counter_rose(ctx) -> str | None:
    ps = ctx.pod(NS, "frontend-client")
    node = ps.node if ps else "node-1"
    before = ctx.baseline.get("counters", {}).get(node, {}).get("dnat", 0)
    now = ctx.counters(node).get("dnat", 0)
    if now <= before:
        return (f"{node}'s dnat counter has not moved since the lab started ({now}): send a "
                "request to the Service from frontend-client")
    return None


def node_ip_forward(ctx) -> str | None:
    p = ctx.run(ctx.node("node-1").netns, "sysctl", "-n", "net.ipv4.ip_forward")
    return p.stdout.strip() if p.returncode == 0 else None
