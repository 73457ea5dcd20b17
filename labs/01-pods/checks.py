"""Lab 1 checks: answers about monospaced-test's IP, subnet and gateway; a changed IP."""

from __future__ import annotations

import ipaddress

NS, POD = "blog-website", "monospaced-test"


def monospaced_ips(ctx) -> set[str]:
    """The IP at lab start, or the current one: task 4 changes it on purpose."""
    ips = {ctx.baseline.get("pods", {}).get(f"{NS}/{POD}")}
    ps = ctx.pod(NS, POD)
    if ps is not None:
        ips.add(ps.ip)
    return {ip for ip in ips if ip}


def monospaced_subnet(ctx) -> str | None:
    ps = ctx.pod(NS, POD)
    return ctx.node(ps.node).pod_cidr if ps else None


def monospaced_gateway(ctx) -> str | None:
    """Read from the pod's own routing table, as the learner does."""
    p = ctx.exec(NS, POD, "ip", "-4", "route", "show", "default")
    words = p.stdout.split()
    return words[words.index("via") + 1] if "via" in words else None


def monospaced_recreated(ctx) -> str | None:
    before = ctx.baseline.get("pods", {}).get(f"{NS}/{POD}")
    ps = ctx.pod(NS, POD)
    if ps is None:
        return f"pod {NS}/{POD} does not exist: apply labs/01-pods/monospaced.yaml again"
    if ps.ip == before:
        return f"{POD} still has its first IP {before}: delete the pod and create it again"
    if not ps.ready:
        return f"the new {POD} ({ps.ip}) is not Ready yet"
    node = ctx.node(ps.node)
    if ipaddress.ip_address(ps.ip) not in ipaddress.ip_network(node.pod_cidr):
        return f"{ps.ip} is outside {node.name}'s subnet {node.pod_cidr}"
    return None
