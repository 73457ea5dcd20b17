"""Shared cluster and query helpers for the DNS tests (Scapy is the oracle); no tests here."""

from __future__ import annotations

from scapy.layers.dns import DNS, DNSQR

from emunet.dns.handler import Handler
from emunet.dns.zone import Zone
from emunet.model import (
    ClusterSpec,
    Config,
    Container,
    ContainerPort,
    Namespace,
    NodeSpec,
    Pod,
    Service,
    ServicePort,
)
from emunet.state.cluster import ClusterState
from emunet.state.plan import plan

NS = "blog-website"
SERIAL = 12345


def _pod(name, labels, hostname=None, subdomain=None, ports=((3000, "TCP", "http"),)):
    return Pod(NS, name, labels, (Container("c", ports=tuple(
        ContainerPort(p, proto, n) for p, proto, n in ports)),),
        hostname=hostname, subdomain=subdomain)


def cluster(ttl: int = 5, upstreams: tuple[str, ...] = ()) -> ClusterState:
    cfg = Config(
        cluster=ClusterSpec(nodes=(NodeSpec("node-1"), NodeSpec("node-2")), dns_ttl=ttl,
                            dns_upstreams=upstreams),
        namespaces=(Namespace(NS),),
        pods=(
            _pod("monospaced-test", {"app": "monospaced"}),
            _pod("frontend-client", {"app": "frontend-client"}, ports=()),
            _pod("db-0", {"app": "db"}, hostname="db-0", subdomain="db"),
            _pod("db-1", {"app": "db"}),
            _pod("db-2", {"app": "db"}, hostname="db-2", subdomain="other"),
            _pod("db-3", {"app": "db"}),  # left unready below
        ),
        services=(
            Service(NS, "monospaced", (ServicePort(80, 3000, "TCP", "http"),
                                       ServicePort(9090, 9090, "UDP", "metrics")),
                    {"app": "monospaced"}),
            Service(NS, "db", (ServicePort(5432, "http", "TCP", "http"),), {"app": "db"},
                    cluster_ip="None"),
            Service(NS, "empty", (ServicePort(80, 80, "TCP", "http"),), {"app": "nothing"},
                    cluster_ip="None"),
            Service(NS, "ext", (), None, type="ExternalName", external_name="example.com"),
            Service(NS, "alias", (), None, type="ExternalName",
                    external_name="monospaced.blog-website.svc.cluster.local"),
        ),
    )
    st = plan(cfg)
    for key, p in st.pods.items():
        p.ready = key != (NS, "db-3")
    return st


def handler(st: ClusterState | None = None) -> Handler:
    return Handler(Zone.from_state(st or cluster(), serial=SERIAL))


def query(name: str, qtype: str | int = "A", ident: int = 4242, **kw) -> bytes:
    return bytes(DNS(id=ident, rd=1, qd=DNSQR(qname=name, qtype=qtype), **kw))


def ask(h: Handler, name: str, qtype: str | int = "A", udp: bool = True, **kw) -> DNS:
    out = h.handle(query(name, qtype, **kw), udp=udp)
    assert isinstance(out, bytes), out
    return DNS(out)


def rrs(section) -> list:
    """A section as a plain list of Scapy records (the layout differs across Scapy versions)."""
    if section is None:
        return []
    if isinstance(section, list):
        return section
    out = []
    while section is not None and section.__class__.__name__ != "NoPayload":
        out.append(section)
        section = section.payload if hasattr(section, "payload") else None
    return out


def ips(section) -> list[str]:
    return [r.rdata for r in rrs(section) if r.type in (1, 28)]
