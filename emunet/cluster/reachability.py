"""`emunet probe`: a cyclonus-style truth table of which pod reaches which, measured for real.

For every (source pod, destination pod, protocol, port) a socket is opened *inside the source
pod's network namespace* (`socket_in_netns`) and a real connection is attempted to the
destination pod's IP: TCP connects (a silent policy drop times out), UDP sends a datagram and
waits for the built-in server's answer (resent twice, as one datagram may be lost). All probes
run concurrently in one event loop, so a 9x9x4 table takes about one timeout.

Tables are printed one per protocol/port, rows = from, columns = to, `.` = connected,
`X` = no answer (timeout), `R` = refused. The same text is accepted by `--expect FILE` (`R`
and `X` both mean "not reachable"), and the differences are listed.
"""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass

from emunet.errors import InputError
from emunet.host.netns import ip_family, socket_in_netns
from emunet.state.cluster import ClusterState, PodState

OK, TIMEOUT, REFUSED, ERROR = "ok", "timeout", "refused", "error"
CELL = {OK: ".", TIMEOUT: "X", REFUSED: "R", ERROR: "E"}
_HEADER = re.compile(r"^(TCP|UDP|SCTP)/(\d+)\b")


@dataclass(frozen=True)
class Result:
    src: str  # namespace/name
    dst: str
    protocol: str  # TCP | UDP
    port: int
    status: str

    @property
    def reachable(self) -> bool:
        return self.status == OK


def pods_of(state: ClusterState, namespaces: list[str] | None) -> list[PodState]:
    """The probed pods: those of `namespaces` (all but kube-system when None), sorted."""
    pods = [p for p in state.pods.values() if not getattr(p, "terminating", False)]
    if namespaces:
        pods = [p for p in pods if p.pod.namespace in namespaces]
    else:
        pods = [p for p in pods if p.pod.namespace != "kube-system"]
    return sorted(pods, key=lambda p: p.key)


def name(p: PodState) -> str:
    return f"{p.pod.namespace}/{p.pod.name}"


async def _tcp(src: PodState, ip: str, port: int, timeout: float) -> str:
    loop = asyncio.get_running_loop()
    s = socket_in_netns(src.netns, ip_family(ip), socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(s, (ip, port)), timeout)
        return OK
    except TimeoutError:
        return TIMEOUT
    except ConnectionRefusedError:
        return REFUSED
    except OSError:
        return ERROR
    finally:
        s.close()


async def _udp(src: PodState, ip: str, port: int, timeout: float) -> str:
    loop = asyncio.get_running_loop()
    s = socket_in_netns(src.netns, ip_family(ip), socket.SOCK_DGRAM)
    s.setblocking(False)
    try:
        s.connect((ip, port))
        tries = 3
        for _ in range(tries):
            s.send(b"emunet probe\n")
            try:
                await asyncio.wait_for(loop.sock_recv(s, 2048), timeout / tries)
                return OK
            except TimeoutError:
                continue
        return TIMEOUT
    except ConnectionRefusedError:  # ICMP port unreachable reported on the connected socket
        return REFUSED
    except OSError:
        return ERROR
    finally:
        s.close()


async def _probe_all(pods: list[PodState], ports: list[int], protocols: list[str],
                     timeout: float, family: int = 4) -> list[Result]:
    jobs, keys = [], []
    for proto in protocols:
        fn = _tcp if proto == "TCP" else _udp
        for port in ports:
            for a in pods:
                for b in pods:
                    ip = b.ip6 if family == 6 else b.ip
                    assert ip, f"{name(b)} has no IPv{family} address"  # checked by probe
                    jobs.append(fn(a, ip, port, timeout))
                    keys.append((name(a), name(b), proto, port))
    statuses = await asyncio.gather(*jobs)
    return [Result(*k, st) for k, st in zip(keys, statuses, strict=True)]


def probe(state: ClusterState, namespaces: list[str] | None = None,
          ports: tuple[int, ...] = (80, 81), protocols: tuple[str, ...] = ("TCP", "UDP"),
          timeout: float = 1.5, family: int = 4) -> list[Result]:
    """Every pair of `pods_of`, by each pod's address of `family` (6: dual-stack clusters)."""
    pods = pods_of(state, namespaces)
    if family == 6 and any(not p.ip6 for p in pods):
        raise InputError("--family 6: the pods have no IPv6 addresses (the cluster is not "
                         "dual-stack: clusterCIDR/serviceCIDR with an IPv6 range)")
    return asyncio.run(_probe_all(pods, list(ports), [p.upper() for p in protocols], timeout,
                                  family))


# ---- tables ------------------------------------------------------------------------------------

def render(results: list[Result]) -> str:
    groups: dict[tuple[str, int], list[Result]] = {}
    for r in results:
        groups.setdefault((r.protocol, r.port), []).append(r)
    out = []
    for (proto, port), rs in groups.items():
        names = list(dict.fromkeys(r.src for r in rs))
        cell = {(r.src, r.dst): CELL[r.status] for r in rs}
        w = max(len(n) for n in names)
        lines = [f"{proto}/{port}  (rows: from, columns: to; . connected, X no answer, "
                 "R refused)",
                 " " * w + "  " + " ".join(names)]
        for a in names:
            row = " ".join(cell[(a, b)].center(len(b)) for b in names)
            lines.append(f"{a.ljust(w)}  {row}")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def parse_tables(text: str) -> dict[tuple[str, int, str, str], bool]:
    """An expected truth table in `render`'s format: (proto, port, from, to) -> reachable."""
    out: dict[tuple[str, int, str, str], bool] = {}
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    i = 0
    while i < len(lines):
        m = _HEADER.match(lines[i])
        if m is None:
            raise ValueError(f"expected a table header like 'TCP/80', got {lines[i]!r}")
        proto, port = m.group(1), int(m.group(2))
        cols = lines[i + 1].split()
        i += 2
        while i < len(lines) and not _HEADER.match(lines[i]):
            src, *cells = lines[i].split()
            if len(cells) != len(cols):
                raise ValueError(f"row {src}: {len(cells)} cells for {len(cols)} columns")
            for dst, c in zip(cols, cells, strict=True):
                if c not in ".XR":
                    raise ValueError(f"row {src}, column {dst}: {c!r} is not . X or R")
                out[(proto, port, src, dst)] = c == "."
            i += 1
    return out


def differences(results: list[Result], expected: dict[tuple[str, int, str, str], bool]
                ) -> list[str]:
    out = []
    for r in results:
        want = expected.get((r.protocol, r.port, r.src, r.dst))
        if want is not None and want != r.reachable:
            out.append(f"{r.protocol}/{r.port} {r.src} -> {r.dst}: expected "
                       f"{'connected' if want else 'blocked'}, measured {r.status}")
    return out
