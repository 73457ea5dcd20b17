"""Lab 3 checks: resolver options read from the live pod, names resolved through CoreDNS.

The query count is computed the way glibc's resolver walks the search list (resolv.conf(5):
a name with fewer dots than ndots is tried with each search domain first, then as is).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

NS, CLIENT = "blog-website", "frontend-client"


def _resolv(ctx) -> dict[str, list[str]]:
    ps = ctx.pod(NS, CLIENT)
    if ps is None:
        return {}
    out: dict[str, list[str]] = {}
    for line in (Path("/etc/netns") / ps.netns / "resolv.conf").read_text().splitlines():
        words = line.split()
        if words:
            out.setdefault(words[0], []).extend(words[1:])
    return out


def client_ndots(ctx) -> str | None:
    for opt in _resolv(ctx).get("options", []):
        if opt.startswith("ndots:"):
            return opt.split(":", 1)[1]
    return None


def cross_namespace_name(ctx) -> str | None:
    name = ctx.answer() or ""
    svc = ctx.state().services.get(("shop", "catalog"))
    if svc is None:
        return "Service shop/catalog is gone: `sudo emunet lab reset 3`"
    try:
        ipaddress.ip_address(name)
        return "that is an address; the task asks for a name"
    except ValueError:
        pass
    # getent uses the pod's resolv.conf (search list, ndots) exactly as an application does.
    p = ctx.exec(NS, CLIENT, "getent", "hosts", name)
    got = p.stdout.split()[0] if p.returncode == 0 and p.stdout.split() else None
    if got != svc.cluster_ip:
        return f"{name!r} does not resolve to catalog's ClusterIP from {CLIENT} (got {got})"
    return None


def query_count(ctx) -> str | None:
    conf = _resolv(ctx)
    name = "monospaced.blog-website"
    ndots = int(client_ndots(ctx) or 1)
    tries = [f"{name}.{d}" for d in conf.get("search", [])] if name.count(".") < ndots else []
    tries.append(name)
    for n, candidate in enumerate(tries, 1):
        if ctx.resolve(NS, CLIENT, candidate) is not None:
            return str(n)
    return None


def catalog_fqdn(ctx) -> set[str]:
    domain = ctx.state().cluster.cluster_domain
    fqdn = f"catalog.shop.svc.{domain}"
    return {fqdn, fqdn + "."}
