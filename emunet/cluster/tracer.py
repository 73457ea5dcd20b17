"""A real traced probe from a pod, and its journey read back from the agents' records.

The probe is an ordinary socket created inside the pod's network namespace, with IPv4 TOS
`TRACE_TOS` so that every node's datapath records each packet of the flow, replies included
(`observe.hook`). A name is first resolved the way the pod's resolver would (resolv.conf search
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
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, TRACE_TOS)
    return s


def dns_lookup(netns: str, server: str, name: str, timeout: float) -> dict[str, Any]:
    """One A query from the pod, marked; the answer as the pod's resolver would get it."""
    # Scapy takes about half a second to import: only the verbs that use it load it, so every
    # other `emunet` command starts without it.
    from scapy.layers.dns import DNS, DNSQR

    q = DNS(id=os.getpid() & 0xFFFF, rd=1, qd=DNSQR(qname=name, qtype="A"))
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
    ips = [str(a.rdata) for a in (r.an or []) if a.type == 1] if r.ancount else []
    rcode = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}.get(r.rcode, str(r.rcode))
    return {"name": name, "server": server, "sport": sport, "rcode": rcode, "ips": ips,
            "ms": round((time.monotonic() - t0) * 1000, 2)}


def resolve(state: ClusterState, pod: PodState, name: str, timeout: float) -> list[dict]:
    """The queries a glibc resolver makes with the pod's resolv.conf (ndots:5: search first)."""
    domain = state.cluster.cluster_domain
    search = [f"{pod.pod.namespace}.svc.{domain}", f"svc.{domain}", domain]
    names = [name.rstrip(".")] if name.endswith(".") else \
        ([f"{name}.{s}" for s in search] + [name]) if name.count(".") < 5 else \
        [name] + [f"{name}.{s}" for s in search]
    tries = []
    for n in names:
        r = dns_lookup(pod.netns, state.cluster.cluster_dns, n + ".", timeout)
        tries.append(r)
        if r["ips"] or r["rcode"] not in ("NXDOMAIN", "NOERROR"):
            break
    return tries


def probe(pod: PodState, ip: str, port: int | None, proto: str,
          timeout: float) -> dict[str, Any]:
    """Send one real probe; what the pod's socket saw."""
    t0 = time.monotonic()
    res: dict[str, Any] = {"protocol": proto, "dst": ip, "port": port}
    if proto == "icmp":
        s = _sock(pod.netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        ident = os.getpid() & 0xFFFF
        res["id"] = ident
        body = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + PROBE
        body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
        try:
            s.settimeout(timeout)
            s.sendto(body, (ip, 0))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data, _ = s.recvfrom(2048)
                icmp = data[(data[0] & 0xF) * 4:]
                if icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
                    res["result"] = "echo reply"
                    break
                if icmp[0] in (3, 11):
                    res["result"] = f"ICMP error type {icmp[0]} code {icmp[1]}"
                    break
            else:
                res["result"] = "timeout"
        except TimeoutError:
            res["result"] = "timeout"
        finally:
            s.close()
    else:
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        s = _sock(pod.netns, socket.AF_INET, kind)
        s.settimeout(timeout)
        try:
            s.bind(("0.0.0.0", 0))
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
        port = p.get("id") if proto == "ICMP" else None
        fwd = p.get("src") == client_ip and (p.get("sport") == sport or port == sport)
        back = p.get("dst") == client_ip and (p.get("dport") == sport or port == sport)
        if fwd or back:
            out.append(r)
    return out


def split_dest(dest: str) -> tuple[str, int | None]:
    """`NAME[:PORT]` (NAME a Service, pod, DNS name or IP) to (NAME, PORT or None)."""
    host_, _, port = dest.rpartition(":") if dest.count(":") == 1 else (dest, "", "")
    if not host_:
        host_, port = dest, ""
    if port and not port.isdigit():
        raise InputError(f"bad port in {dest!r}: use DEST:PORT with a number")
    if ":" in host_.strip("[]"):  # an IPv6 literal (dual-stack): the probes are IPv4 only
        raise InputError(f"{dest!r} is IPv6: emunet trace sends IPv4 probes only (not built "
                         "for IPv6 yet); trace the IPv4 address or the name, or watch IPv6 "
                         "with `emunet observe`")
    return host_, int(port) if port else None


def run(state: ClusterState, namespace: str, pod_name: str, dest: str,
        protocol: str | None = None, timeout: float = 2.0,
        keep_records: bool = False) -> tuple[dict[str, Any], bool]:
    """Trace `dest` (NAME[:PORT]) from the pod: the report and whether the probe failed.
    `keep_records`: each packet also carries the agents' records it was built from."""
    name, port = split_dest(dest)
    pod = state.pods.get((namespace, pod_name))
    if pod is None:
        raise TraceError(f"pod {pod_name!r} not found in namespace {namespace} "
                         "(see `emunet get pods -A`)")
    d = Directory(state)
    report: dict[str, Any] = {"pod": f"{namespace}/{pod_name}", "node": pod.node,
                              "pod_ip": pod.ip, "dest": dest, "dns": [], "packets": []}
    t0 = time.time()
    try:
        ip = str(ipaddress.IPv4Address(name))
    except ValueError:
        ip = None
    if ip is None:
        report["dns"] = resolve(state, pod, name, timeout)
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
            ip = target.ip  # pods have no DNS name of their own (only Services do)
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
        recs = flow_records(records, client, key, pr["protocol"].upper(), t0)
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
