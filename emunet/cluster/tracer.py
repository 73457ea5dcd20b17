"""A real traced probe from a pod, and its journey read back from the agents' records.

The probe is an ordinary socket created inside the pod's network namespace, with IPv4 TOS
(or, over IPv6, traffic class) `TRACE_TOS` so that every node's datapath records each packet
of the flow, replies included (`observe.hook`). Dual-stack: an IPv6 destination, or a name with
`family` 6 (AAAA queries), is probed from the pod's IPv6 address (ICMPv6 echo, TCP, UDP); the
DNS questions still go to the pod's nameserver, the IPv4 kube-dns address of its resolv.conf.
A name is first resolved the way the pod's resolver would (resolv.conf search
list, ndots:5) by real queries to the cluster DNS, themselves marked, so the DNS hop shows the
server and the answer. Then the agents' records of the probe's flow are read back and turned
into hops (`observe.journey`). `emunet trace` prints the report; `emunet ui` draws it.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import time
from typing import Any

from emunet import naming
from emunet.errors import EmunetError, InputError
from emunet.host.netns import socket_in_netns
from emunet.observe import flowlog, journey
from emunet.observe.hook import TRACE_TOS
from emunet.observe.hubble import Directory
from emunet.packets import checksum
from emunet.state.cluster import ClusterState, PodState

SETTLE = 0.4  # seconds for the agents to write the last records after the probe ends
PROBE = b"emunet trace probe\n"


class TraceError(EmunetError):
    """The trace cannot start: an unknown pod (exit 1)."""


# ---- the probe (I/O) -----------------------------------------------------------------------

def _sock(netns: str, family: int, type_: int, proto: int = 0) -> socket.socket:
    s = socket_in_netns(netns, family, type_, proto)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, TRACE_TOS)
    else:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, TRACE_TOS)
    return s


def dns_lookup(netns: str, server: str, name: str, timeout: float,
               qtype: str = "A") -> dict[str, Any]:
    """One A (or AAAA) query from the pod, marked; the answer as its resolver would get it."""
    # Scapy takes about half a second to import: only the verbs that use it load it, so every
    # other `emunet` command starts without it.
    from scapy.layers.dns import DNS, DNSQR

    q = DNS(id=os.getpid() & 0xFFFF, rd=1, qd=DNSQR(qname=name, qtype=qtype))
    s = _sock(netns, socket.AF_INET, socket.SOCK_DGRAM)
    t0 = time.monotonic()
    sport = None
    try:
        s.settimeout(timeout)
        s.connect((server, 53))
        sport = s.getsockname()[1]
        s.send(bytes(q))
        data = s.recv(4096)
    except TimeoutError:
        return {"name": name, "server": server, "sport": sport, "rcode": "TIMEOUT", "ips": []}
    except OSError as e:
        return {"name": name, "server": server, "rcode": f"ERROR {e.strerror}", "ips": []}
    finally:
        s.close()
    r = DNS(data)
    want = 28 if qtype == "AAAA" else 1
    ips = [str(a.rdata) for a in (r.an or []) if a.type == want] if r.ancount else []
    rcode = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}.get(r.rcode, str(r.rcode))
    return {"name": name, "server": server, "sport": sport, "rcode": rcode, "ips": ips,
            "ms": round((time.monotonic() - t0) * 1000, 2)}


def resolve(state: ClusterState, pod: PodState, name: str, timeout: float,
            qtype: str = "A") -> list[dict]:
    """The queries a glibc resolver makes with the pod's resolv.conf (ndots:5: search first)."""
    domain = state.cluster.cluster_domain
    search = [f"{pod.pod.namespace}.svc.{domain}", f"svc.{domain}", domain]
    names = [name.rstrip(".")] if name.endswith(".") else \
        ([f"{name}.{s}" for s in search] + [name]) if name.count(".") < 5 else \
        [name] + [f"{name}.{s}" for s in search]
    tries = []
    for n in names:
        r = dns_lookup(pod.netns, state.cluster.cluster_dns, n + ".", timeout, qtype)
        tries.append(r)
        if r["ips"] or r["rcode"] not in ("NXDOMAIN", "NOERROR"):
            break
    return tries


def probe(pod: PodState, ip: str, port: int | None, proto: str,
          timeout: float) -> dict[str, Any]:
    """Send one real probe; what the pod's socket saw."""
    t0 = time.monotonic()
    res: dict[str, Any] = {"protocol": proto, "dst": ip, "port": port}
    v6 = ":" in ip
    family = socket.AF_INET6 if v6 else socket.AF_INET
    if proto == "icmp":
        # ICMPv6 (RFC 4443): echo 128/129, errors 1 (unreachable) and 3 (time exceeded); a raw
        # ICMPv6 socket gets no IPv6 header and the kernel fills the checksum (RFC 3542 §3.1)
        echo, reply, errors = (128, 129, (1, 3)) if v6 else (8, 0, (3, 11))
        s = _sock(pod.netns, family, socket.SOCK_RAW,
                  socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
        ident = os.getpid() & 0xFFFF
        res["id"] = ident
        body = struct.pack("!BBHHH", echo, 0, 0, ident, 1) + PROBE
        if not v6:
            body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
        try:
            s.settimeout(timeout)
            s.sendto(body, (ip, 0))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data, _ = s.recvfrom(2048)
                icmp = data if v6 else data[(data[0] & 0xF) * 4:]
                if icmp[0] == reply and struct.unpack("!H", icmp[4:6])[0] == ident:
                    res["result"] = "echo reply"
                    break
                if icmp[0] in errors:
                    res["result"] = f"ICMP{'v6' if v6 else ''} error type {icmp[0]} code " \
                        f"{icmp[1]}"
                    break
            else:
                res["result"] = "timeout"
        except TimeoutError:
            res["result"] = "timeout"
        finally:
            s.close()
    else:
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        s = _sock(pod.netns, family, kind)
        s.settimeout(timeout)
        try:
            s.bind(("::" if v6 else "0.0.0.0", 0))
            res["sport"] = s.getsockname()[1]
            s.connect((ip, port))
            if proto == "tcp":
                res["result"] = "connected"
            else:
                s.send(PROBE)
                s.recv(4096)
                res["result"] = "reply received"
        except ConnectionRefusedError:
            res["result"] = "refused (TCP RST)" if proto == "tcp" else \
                "refused (ICMP port unreachable)"
        except TimeoutError:
            res["result"] = "timeout"
        except OSError as e:
            res["result"] = f"error: {errno.errorcode.get(e.errno or 0, '')} {e.strerror}"
        finally:
            s.close()
    res["ms"] = round((time.monotonic() - t0) * 1000, 2)
    return res


# ---- reading the journey back --------------------------------------------------------------

def flow_records(records: list[dict], client_ip: str, sport: int | None, proto: str,
                 since: float) -> list[dict]:
    """The traced records of the probe's flow (both directions, every node), time order."""
    out = []
    for r in records:
        p = r.get("pkt", {})
        if r.get("time", 0) < since or not r.get("traced") or p.get("proto") != proto:
            continue
        port = p.get("id") if proto in ("ICMP", "ICMPv6") else None
        fwd = p.get("src") == client_ip and (p.get("sport") == sport or port == sport)
        back = p.get("dst") == client_ip and (p.get("dport") == sport or port == sport)
        if fwd or back:
            out.append(r)
    return out


def split_dest(dest: str) -> tuple[str, int | None]:
    """`NAME[:PORT]` (NAME a Service, pod, DNS name or IP) to (NAME, PORT or None); an IPv6
    address alone or as `[ADDR]:PORT` (RFC 3986 §3.2.2)."""
    if dest.startswith("["):
        host_, _, rest = dest[1:].partition("]")
        port = rest.removeprefix(":")
        if _version(host_) != 6 or (rest and not rest.startswith(":")):
            raise InputError(f"bad destination {dest!r}: use [IPv6]:PORT")
    elif dest.count(":") > 1:
        if _version(dest) != 6:
            raise InputError(f"bad destination {dest!r}: an IPv6 address with a port is "
                             "written [ADDR]:PORT")
        host_, port = dest, ""
    else:
        host_, _, port = dest.rpartition(":")
        if not host_:
            host_, port = dest, ""
    if port and not port.isdigit():
        raise InputError(f"bad port in {dest!r}: use DEST:PORT with a number")
    return host_, int(port) if port else None


def _version(text: str) -> int:
    """4 or 6 for an IP address literal, 0 for anything else (a name)."""
    try:
        return ipaddress.ip_address(text).version
    except ValueError:
        return 0


def run(state: ClusterState, namespace: str, pod_name: str, dest: str,
        protocol: str | None = None, timeout: float = 2.0,
        keep_records: bool = False, family: int | None = None) -> tuple[dict[str, Any], bool]:
    """Trace `dest` (NAME[:PORT]) from the pod: the report and whether the probe failed.
    `keep_records`: each packet also carries the agents' records it was built from. `family`
    6 (or an IPv6 `dest`): over IPv6, from the pod's IPv6 address (dual-stack only)."""
    name, port = split_dest(dest)
    pod = state.pods.get((namespace, pod_name))
    if pod is None:
        raise TraceError(f"pod {pod_name!r} not found in namespace {namespace} "
                         "(see `emunet get pods -A`)")
    six = family == 6 or _version(name) == 6
    if family == 6 and _version(name) == 4:
        raise InputError(f"{name} is an IPv4 address but --family 6 was given: drop one of "
                         "them")
    if six and not pod.ip6:
        raise InputError(f"pod {namespace}/{pod_name} has no IPv6 address: --family 6 needs "
                         "a dual-stack cluster (an IPv6 range in clusterCIDR and serviceCIDR)")
    d = Directory(state)
    report: dict[str, Any] = {"pod": f"{namespace}/{pod_name}", "node": pod.node,
                              "pod_ip": pod.ip, "dest": dest, "dns": [], "packets": []}
    if six:
        report["pod_ip6"] = pod.ip6  # the probe's source; DNS still asks over IPv4
    t0 = time.time()
    try:
        ip: str | None = str(ipaddress.ip_address(name))
    except ValueError:
        ip = None
    if ip is None:
        report["dns"] = resolve(state, pod, name, timeout, "AAAA" if six else "A")
        ok = next((r for r in report["dns"] if r["ips"]), None)
        if ok is not None:
            ip = ok["ips"][0]
        else:
            target = state.pods.get((namespace, name))
            if target is None:
                report["result"] = {"result": f"{name!r} does not resolve: "
                                    f"{report['dns'][-1]['rcode']}"}
                collect(report, d, t0, keep_records)
                return report, True
            ip = target.ip6 if six else target.ip  # pods have no DNS name (Services do)
            if ip is None:
                raise InputError(f"pod {namespace}/{name} has no IPv6 address")
            report["dns_note"] = f"{name} is a pod: its IP comes from the cluster state"
    svc = d.services.get(ip)
    proto = protocol
    if proto is None:
        sp = svc.service.ports[0] if svc and svc.service.ports else None
        proto = (sp.protocol.lower() if sp and (port is None or sp.port == port) else
                 ("tcp" if port or sp else "icmp"))
    if port is None and proto != "icmp":
        if svc and svc.service.ports:
            port = svc.service.ports[0].port
        else:
            raise InputError(f"say which port: {dest}:PORT (or --protocol icmp)")
    report["probe"] = probe(pod, ip, port, proto, timeout)
    res = report["probe"]["result"]
    report["result"] = {"result": res, "ms": report["probe"]["ms"]}
    collect(report, d, t0, keep_records)
    return report, res == "timeout" or res.startswith(("refused", "error", "ICMP"))


def collect(report: dict, d: Directory, t0: float, keep_records: bool = False) -> None:
    """Read the agents' records of the trace's flows back into the report (after SETTLE)."""
    time.sleep(SETTLE)
    records = flowlog.read_all(naming.run_dir())
    client = report["pod_ip"]
    for q in report["dns"]:
        if q.get("sport"):
            q["packets"] = packets(flow_records(records, client, q["sport"], "UDP", t0), d,
                                   keep_records)
    pr = report.get("probe")
    if pr:
        key = pr.get("id") if pr["protocol"] == "icmp" else pr.get("sport")
        proto = pr["protocol"].upper()
        if "pod_ip6" in report:  # an IPv6 probe: its records name the IPv6 source
            client, proto = report["pod_ip6"], "ICMPv6" if proto == "ICMP" else proto
        recs = flow_records(records, client, key, proto, t0)
        report["packets"] = packets(recs, d, keep_records)


def packets(recs: list[dict], d: Directory, keep_records: bool = False) -> list[dict]:
    """One flow's records as packets, each its hops (and, if asked, its records)."""
    out = []
    for group in journey.packets(recs):
        hops = [h for r in group for h in journey.hops(r, d)]
        p: dict[str, Any] = {"reply": group[0].get("ct") == "reply", "hops": hops}
        if keep_records:
            p["records"] = group
        out.append(p)
    return out
