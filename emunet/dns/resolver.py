"""The answer logic: one question in, one `Answer` out, record for record like CoreDNS.

Mirrors CoreDNS's kubernetes plugin (handler.go ServeDNS, kubernetes.go Services/Records,
parse.go parseRequest, plugin/backend_lookup.go A/SRV/PTR) over the Kubernetes DNS-Based
Service Discovery spec (github.com/kubernetes/dns docs/specification.md, schema 1.1.0), with
the Corefile's settings (Zone.settings: k3s's by default, `pods insecure`, reverse zones with
fallthrough). Pure: no sockets, clocks or randomness; the SOA serial comes from the Zone.
Per family (spec 2.3.1, 2.4.1: A for IPv4, AAAA for IPv6 addresses): a name that exists with
addresses of the other family only answers NODATA, never NXDOMAIN; PTRs for both in-addr.arpa
and the 32-nibble ip6.arpa form (RFC 3596 2.5).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from emunet.dns import wire
from emunet.dns.wire import RR
from emunet.dns.zone import CLUSTER_IP, EXTERNAL, HEADLESS, NO_PORT, ServiceRec, Zone
from emunet.errors import EmunetError

DNS_SCHEMA_VERSION = "1.1.0"  # spec section 2.1: dns-version.<zone> TXT
DNS_VERSION_TTL = 28800  # CoreDNS hard-codes this TTL for the dns-version TXT record
REVERSE_ZONE = "in-addr.arpa"
REVERSE_ZONE6 = "ip6.arpa"
MAX_CNAME_CHAIN = 8  # CoreDNS stops following CNAMEs after 8 hops


@dataclass
class Answer:
    rcode: int
    aa: bool = True
    answer: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    forward: bool = False  # not ours: send to cluster.dns_upstreams
    # the answer ends in a CNAME to a name outside the cluster domain and upstreams exist:
    # the server asks them for it and appends their records (CoreDNS's upstream lookup)
    chase: str | None = None


@dataclass(frozen=True)
class Item:
    """CoreDNS's msg.Service: a target (IP or name), a port and the record's own name."""

    host: str
    port: int
    key: str


class _NameError(EmunetError):
    """NXDOMAIN (CoreDNS: errNoItems, errNsNotExposed, errInvalidRequest)."""


def resolve(zone: Zone, qname: str, qtype: int) -> Answer:
    """Answer a question; qname lowercased without the trailing dot.

    The Corefile's kubernetes plugin answers its zones (the cluster domain and, in k3s's
    Corefile, in-addr.arpa and ip6.arpa); an NXDOMAIN in a zone its `fallthrough` names goes
    on to `forward` instead (handler.go: k.Fall.Through), as does every name outside them."""
    cfg = zone.settings
    d = zone.domain
    ans = None
    if cfg.kubernetes and (qname == d or qname.endswith("." + d)):
        ans, origin = _cluster(zone, qname, qtype), d
    elif cfg.kubernetes and (origin := _reverse_zone(zone, qname)):
        ip = _reverse_ip(qname)
        ans = _reverse(zone, ip, qtype) if ip is not None else _nxdomain(zone, origin)
    if ans is not None and not (ans.rcode == wire.NXDOMAIN and cfg.falls_through(origin)):
        return ans
    if zone.upstreams:  # not ours (or fallen through): on to `forward`
        return Answer(wire.NOERROR, aa=False, forward=True)
    return Answer(wire.REFUSED, aa=False)


def _reverse_zone(zone: Zone, qname: str) -> str:
    """The plugin's reverse zone holding qname ("" if none)."""
    for z in zone.settings.zones:
        if z.endswith(".arpa") and (qname == z or qname.endswith("." + z)):
            return z
    return ""


def soa(zone: Zone, origin: str) -> RR:
    """CoreDNS plugin.SOA: TTL min(ttl, 300), minimum = the zone TTL."""
    return (origin, wire.SOA, min(zone.ttl, 300),
            (f"ns.dns.{origin}", f"hostmaster.{origin}", zone.serial, 7200, 1800, 86400,
             zone.ttl))


def _nodata(zone: Zone, origin: str) -> Answer:
    return Answer(wire.NOERROR, authority=[soa(zone, origin)])


def _nxdomain(zone: Zone, origin: str) -> Answer:
    return Answer(wire.NXDOMAIN, authority=[soa(zone, origin)])


def _cluster(zone: Zone, qname: str, qtype: int) -> Answer:
    d = zone.domain
    base = qname[:-len(d) - 1] if qname != d else ""
    if qtype in (wire.AXFR, wire.IXFR):
        return Answer(wire.REFUSED)  # CoreDNS: no zone transfers without the transfer plugin
    if qtype == wire.SOA:
        # Any name in the zone gets NODATA for SOA, existing or not (CoreDNS handler.go).
        return Answer(wire.NOERROR, answer=[soa(zone, d)]) if not base else _nodata(zone, d)
    if qtype == wire.NS and not base:
        # CoreDNS plugin.NS over nsAddrs (ns.go): the Service the responder is an endpoint
        # of (kube-dns), its ClusterIP as glue; ns.dns.<zone> only without one
        names = list(dict.fromkeys(name for name, _ in zone.nameservers))
        return Answer(wire.NOERROR, answer=[(qname, wire.NS, zone.ttl, n) for n in names],
                      additional=[(n, _host_type(ip), zone.ttl, ip)
                                  for n, ip in zone.nameservers])
    if qtype == wire.TXT:
        if base == "dns-version":
            return Answer(wire.NOERROR, answer=[
                (qname, wire.TXT, DNS_VERSION_TTL, (DNS_SCHEMA_VERSION,))])
        # CoreDNS 1.11: NXDOMAIN for a name that does not exist, else NODATA. (CoreDNS also
        # says NXDOMAIN for the apex and <ns>.svc; we keep NODATA there, as RFC 8020 needs.)
        try:
            _records(zone, base)
        except _NameError:
            return _nxdomain(zone, d)
        return _nodata(zone, d)
    if base == "ns.dns":  # CoreDNS isDefaultNS: nsAddrs' addresses under the asked name
        ips = dict.fromkeys(ip for _, ip in zone.nameservers if _host_type(ip) == qtype)
        if qtype in (wire.A, wire.AAAA) and ips:
            return Answer(wire.NOERROR, answer=[(qname, qtype, zone.ttl, ip) for ip in ips])
        return _nodata(zone, d)
    try:
        items = _records(zone, base)
    except _NameError:
        return _nxdomain(zone, d)
    ans = Answer(wire.NOERROR)
    if qtype in (wire.A, wire.AAAA):
        ans.answer = _address(zone, qname, qtype, items, 0)
        last = ans.answer[-1] if ans.answer else None
        if zone.upstreams and last is not None and last[1] == wire.CNAME:
            target = str(last[3])
            if target != d and not target.endswith("." + d):
                ans.chase = target
    elif qtype == wire.CNAME:
        ans.answer = [(qname, wire.CNAME, zone.ttl, it.host) for it in items
                      if _host_type(it.host) == wire.CNAME]
    elif qtype == wire.SRV:
        ans.answer, ans.additional = _srv(zone, qname, items)
    if not ans.answer:
        return _nodata(zone, d)
    return ans


def _records(zone: Zone, base: str) -> list[Item]:
    """CoreDNS parseRequest + Records: the items for a name below the zone apex."""
    if base in ("", "svc", "pod"):
        return []  # apex, svc.<zone>, pod.<zone>: NODATA
    segs = base.split(".")
    kind = segs[-1]
    if kind not in ("svc", "pod"):
        raise _NameError  # errInvalidRequest
    namespace = segs[-2]
    if namespace not in zone.namespaces:
        raise _NameError  # errNsNotExposed
    if len(segs) == 2:
        if kind == "pod" and zone.settings.pods == "disabled":
            raise _NameError  # findPods: errNoItems before looking at the name
        return []  # <ns>.svc.<zone>: NODATA
    name = segs[-3]
    rest = segs[:-3]
    endpoint = port = proto = ""
    if len(rest) == 1:
        endpoint = rest[0]
    elif len(rest) == 2:  # _port._proto; CoreDNS strips one leading underscore from each
        port, proto = (s[1:] if s.startswith("_") else s for s in rest)
    elif rest:
        raise _NameError  # too long
    if kind == "pod":
        return _pod(zone, namespace, name)
    return _services(zone, zone.services.get((namespace, name)), endpoint, port, proto)


def _pod(zone: Zone, namespace: str, name: str) -> list[Item]:
    """The Corefile's `pods` (CoreDNS findPods; spec 2.5 note): `insecure` (k3s's) answers
    a-b-c-d.<ns>.pod with a.b.c.d, `verified` only when a pod of <ns> has that IP,
    `disabled` (CoreDNS's default) never."""
    mode = zone.settings.pods
    if mode == "disabled":
        raise _NameError
    if name.count("-") == 3 and "--" not in name:
        text = name.replace("-", ".")
    else:
        text = name.replace("-", ":")
    try:
        ip = str(ipaddress.ip_address(text))
    except ValueError:
        raise _NameError from None
    if mode == "verified" and (namespace, ip) not in zone.pod_ips:
        raise _NameError
    return [Item(ip, 0, f"{name}.{namespace}.pod.{zone.domain}")]


def _match(want_port: str, want_proto: str, p) -> bool:
    return (not want_port or want_port == p.name.lower()) and (
        not want_proto or want_proto == p.protocol)


def _services(zone: Zone, svc: ServiceRec | None, endpoint: str, port: str,
              proto: str) -> list[Item]:
    """CoreDNS findServices for one Service; raise _NameError when nothing matched."""
    if svc is None:
        raise _NameError
    if (zone.settings.ignore_empty_service and svc.kind == CLUSTER_IP
            and not svc.endpoints):
        raise _NameError  # `ignore empty_service`: NXDOMAIN for a ClusterIP with no endpoint
    svc_name = f"{svc.name}.{svc.namespace}.svc.{zone.domain}".lower()
    items: list[Item] = []
    if svc.kind == EXTERNAL:
        # An ExternalName Service has no endpoints (CoreDNS findServices); a port/protocol
        # name still answers the CNAME, and SRV leaves it out (Services, "not implemented").
        if endpoint or _host_type(svc.external_name or "") != wire.CNAME:
            raise _NameError
        return [Item(svc.external_name or "", 0, svc_name)]
    if svc.kind == HEADLESS or endpoint:
        for ep in svc.endpoints:
            if endpoint and endpoint != ep.hostname:
                continue
            for p in ep.ports:
                if _match(port, proto, p):
                    items.append(Item(ep.ip, p.port, f"{ep.hostname}.{svc_name}"))
    else:
        assert svc.kind == CLUSTER_IP and svc.cluster_ip
        for ip in svc.addresses():  # CoreDNS walks svc.ClusterIPs: both families
            if not svc.ports and not port and not proto:
                items.append(Item(ip, NO_PORT, svc_name))
            for p in svc.ports:
                if _match(port, proto, p):
                    items.append(Item(ip, p.port, svc_name))
    if not items:
        raise _NameError
    return items


def _host_type(host: str) -> int:
    try:
        return wire.A if ipaddress.ip_address(host).version == 4 else wire.AAAA
    except ValueError:
        return wire.CNAME if host else 0


def _address(zone: Zone, qname: str, qtype: int, items: list[Item], depth: int) -> list[RR]:
    """CoreDNS plugin.A/AAAA: one record per distinct address; ExternalName -> CNAME, chased
    inside the cluster zone (a target outside it: Answer.chase, looked up upstream)."""
    out: list[RR] = []
    seen: set[str] = set()
    for it in items:
        t = _host_type(it.host)
        if t == qtype and it.host not in seen:
            seen.add(it.host)
            out.append((qname, qtype, zone.ttl, it.host))
        elif t == wire.CNAME and it.host != qname and depth < MAX_CNAME_CHAIN:
            cname = (qname, wire.CNAME, zone.ttl, it.host)
            d = zone.domain
            if it.host == d or it.host.endswith("." + d):
                base = it.host[:-len(d) - 1] if it.host != d else ""
                try:
                    nxt = _address(zone, it.host, qtype, _records(zone, base), depth + 1)
                except _NameError:
                    nxt = []
                if nxt:  # CoreDNS adds the CNAME only when the chain completes
                    out += [cname, *nxt]
            else:
                out.append(cname)
    return out


def _srv(zone: Zone, qname: str, items: list[Item]) -> tuple[list[RR], list[RR]]:
    """CoreDNS plugin.SRV: priority 0, weight 100/n, target the record's own name, and the
    target's address in the additional section. ExternalName Services give no SRV."""
    items = [it for it in items if _host_type(it.host) != wire.CNAME]
    weight = max(1, 100 // len(items)) if items else 0
    records: list[RR] = []
    extra: list[RR] = []
    seen: set[tuple[str, str, int]] = set()
    for it in items:
        if it.port == NO_PORT:
            continue
        if (it.key, "", it.port) not in seen:
            seen.add((it.key, "", it.port))
            records.append((qname, wire.SRV, zone.ttl, (0, weight, it.port, it.key)))
        if (it.key, it.host, 0) not in seen:
            seen.add((it.key, it.host, 0))
            extra.append((it.key, _host_type(it.host), zone.ttl, it.host))
    return records, extra


def _reverse_ip(qname: str) -> str | None:
    """The address of d.c.b.a.in-addr.arpa (RFC 1035 3.5) or of the 32 nibbles of an
    ip6.arpa name (RFC 3596 2.5), as canonical text; None for anything else (shorter names
    are not addresses: NXDOMAIN)."""
    if qname.endswith("." + REVERSE_ZONE):
        parts = qname[:-len(REVERSE_ZONE) - 1].split(".")
        if len(parts) != 4:
            return None
        try:
            return str(ipaddress.IPv4Address(".".join(reversed(parts))))
        except ValueError:
            return None
    if qname.endswith("." + REVERSE_ZONE6):
        nibbles = qname[:-len(REVERSE_ZONE6) - 1].split(".")
        if len(nibbles) != 32 or any(len(n) != 1 or n not in "0123456789abcdef"
                                     for n in nibbles):
            return None
        return str(ipaddress.IPv6Address(int("".join(reversed(nibbles)), 16)))
    return None


def reverse_name(ip: str) -> str:
    """The PTR owner of an address: in-addr.arpa, or the full 32-nibble ip6.arpa name."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return ".".join(reversed(ip.split("."))) + "." + REVERSE_ZONE
    return ".".join(reversed(addr.exploded.replace(":", ""))) + "." + REVERSE_ZONE6


def _reverse(zone: Zone, ip: str, qtype: int) -> Answer:
    """PTR for ClusterIPs and endpoint IPs (spec 2.3.4, 2.4.3; CoreDNS serviceRecordForIP);
    any other address is NXDOMAIN (k3s's `fallthrough in-addr.arpa ip6.arpa` forwards it)."""
    names = zone.ptr.get(ip, ())
    qname = reverse_name(ip)
    origin = REVERSE_ZONE6 if ":" in ip else REVERSE_ZONE
    if not names:
        return _nxdomain(zone, origin)
    if qtype != wire.PTR:
        return _nodata(zone, origin)
    return Answer(wire.NOERROR, answer=[(qname, wire.PTR, zone.ttl, n) for n in names])
