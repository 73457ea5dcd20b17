"""Selecting and printing Hubble-style flows, with `hubble observe`'s flags. Pure.

A filter is built once from the CLI flags (`FlowFilter.from_args`) and applied to each flow;
every given flag must match (AND), as in Hubble. Output formats: `compact` (one line per flow,
like `hubble observe`), `table`, `json` (one JSON object per line: `{"flow": ..., "node_name",
"time"}`, the shape `hubble observe -o json` prints).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from emunet.errors import InputError

TYPES = ("drop", "trace", "l7", "policy-verdict")
# hubble observe --verdict takes these (flow.proto Verdict); emunet records the first two
VERDICTS = ("FORWARDED", "DROPPED", "ERROR", "AUDIT", "REDIRECTED", "TRACED", "TRANSLATED")
_EVENT_TYPE = {"drop": 1, "trace": 4, "policy-verdict": 5, "l7": 129}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_POINTS = {"TO_ENDPOINT": "to-endpoint", "TO_OVERLAY": "to-overlay",
           "FROM_ENDPOINT": "from-endpoint", "FROM_OVERLAY": "from-overlay",
           "FROM_NETWORK": "from-network", "TO_NETWORK": "to-network"}


class FilterError(InputError, ValueError):
    """A flag value that cannot be understood (reported to the user, exit 2)."""


def parse_since(value: str, now: float | None = None) -> float:
    """`--since`: a duration back from now (30s, 5m, 2h) or an RFC 3339 / ISO time."""
    now = time.time() if now is None else now
    m = _DURATION.match(value.strip())
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        t = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(f"--since {value!r}: use a duration (30s, 5m, 1h) or a time "
                          "(2024-05-01T10:00:00Z)") from None
    if t.tzinfo is None:
        t = t.astimezone()
    return t.timestamp()


def _pod_pattern(value: str, namespace: str | None) -> tuple[str | None, str]:
    """`[NS/]POD-PREFIX` as Hubble reads it; without NS the -n namespace (if any)."""
    if "/" in value:
        ns, _, name = value.partition("/")
        return ns or None, name
    return namespace, value


def _label_match(labels: list[str], selector: str) -> bool:
    have = {}
    for lab in labels:
        k, _, v = lab.partition(":")[2].partition("=") if ":" in lab else lab.partition("=")
        have[k] = v
    for term in filter(None, (t.strip() for t in selector.split(","))):
        k, eq, v = term.partition("=")
        k = k.removeprefix("k8s:")
        if eq and have.get(k) != v:
            return False
        if not eq and k not in have:
            return False
    return True


@dataclass
class FlowFilter:
    namespace: str | None = None
    pods: list[tuple[str | None, str]] = field(default_factory=list)
    from_pods: list[tuple[str | None, str]] = field(default_factory=list)
    to_pods: list[tuple[str | None, str]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    protocols: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    since: float | None = None

    @classmethod
    def from_args(cls, a: Any) -> FlowFilter:
        for t in a.type or []:
            if t not in TYPES:
                raise FilterError(f"--type {t!r}: use one of {', '.join(TYPES)}")
        for v in a.verdict or []:
            if v.upper() not in VERDICTS:
                raise FilterError(f"--verdict {v!r}: use one of {', '.join(VERDICTS)}")
        ns = a.namespace
        return cls(namespace=ns,
                   pods=[_pod_pattern(p, ns) for p in a.pod or []],
                   from_pods=[_pod_pattern(p, ns) for p in a.from_pod or []],
                   to_pods=[_pod_pattern(p, ns) for p in a.to_pod or []],
                   labels=list(a.label or []),
                   verdicts=[v.upper() for v in a.verdict or []],
                   protocols=[p.lower() for p in a.protocol or []],
                   ports=[int(p) for p in a.port or []], types=list(a.type or []),
                   since=parse_since(a.since) if a.since else None)

    def match(self, f: dict[str, Any]) -> bool:
        src, dst = f.get("source", {}), f.get("destination", {})
        if self.since is not None and _epoch(f["time"]) < self.since:
            return False
        if self.namespace and not self.pods and not self.from_pods and not self.to_pods and \
                self.namespace not in (src.get("namespace"), dst.get("namespace")):
            return False
        if self.pods and not any(_pod_is(src, p) or _pod_is(dst, p) for p in self.pods):
            return False
        if self.from_pods and not any(_pod_is(src, p) for p in self.from_pods):
            return False
        if self.to_pods and not any(_pod_is(dst, p) for p in self.to_pods):
            return False
        if self.labels and not any(_label_match(src.get("labels", []), sel)
                                   or _label_match(dst.get("labels", []), sel)
                                   for sel in self.labels):
            return False
        if self.verdicts and f.get("verdict") not in self.verdicts:
            return False
        if self.protocols and not any(_proto_is(f, p) for p in self.protocols):
            return False
        if self.ports:
            l4 = next(iter((f.get("l4") or {}).values()), {})
            if not {l4.get("source_port"), l4.get("destination_port")} & set(self.ports):
                return False
        if self.types and f.get("event_type", {}).get("type") not in \
                {_EVENT_TYPE[t] for t in self.types}:
            return False
        return True


def _pod_is(ep: dict[str, Any], pat: tuple[str | None, str]) -> bool:
    ns, prefix = pat
    return bool(ep.get("pod_name", "").startswith(prefix) and ep.get("pod_name")
                and (ns is None or ep.get("namespace") == ns))


# --protocol names -> the flow's l4 key (Hubble's spelling: ICMPv4, ICMPv6; dual-stack flows)
_L4_KEYS = {"icmp": "ICMPv4", "icmpv4": "ICMPv4", "icmpv6": "ICMPv6", "tcp": "TCP", "udp": "UDP"}


def _proto_is(f: dict[str, Any], p: str) -> bool:
    if p in ("dns", "http"):
        return p in f.get("l7", {})
    want = _L4_KEYS.get(p, p.upper())
    return want in (f.get("l4") or {})


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# ---- output --------------------------------------------------------------------------------

def _name(ep: dict[str, Any], ip: str | None, port: Any) -> str:
    if ep.get("pod_name"):
        who = f"{ep['namespace']}/{ep['pod_name']}"
    elif port is not None and ip and ":" in ip:
        return f"[{ip}]:{port}"  # an IPv6 address with a port, as RFC 3986 writes it
    else:
        who = ip or "?"
    if port is not None:
        who += f":{port}"
    return who


def _ends(f: dict[str, Any]) -> tuple[str, str]:
    ip = f.get("IP") or {}
    l4 = next(iter((f.get("l4") or {}).values()), {})
    return (_name(f.get("source", {}), ip.get("source"), l4.get("source_port")),
            _name(f.get("destination", {}), ip.get("destination"), l4.get("destination_port")))


def _extras(f: dict[str, Any]) -> str:
    bits = []
    if f.get("dnat"):
        d = f["dnat"]
        bits.append(f"service {d['service']} -> backend {d['backend']}")
    if f.get("reverse_nat"):
        bits.append(f"reverse NAT {f['reverse_nat']['from']} -> {f['reverse_nat']['to']}")
    for k in ("egress_denied_by", "ingress_denied_by", "egress_allowed_by",
              "ingress_allowed_by"):
        for p in f.get(k, []):
            what = k.replace("_by", "").replace("_", " ")
            bits.append(f"{what} by {p.get('namespace', '')}/{p.get('name', '')}".replace(
                " /", " "))
    if f.get("emunet_drop_detail"):
        bits.append(f["emunet_drop_detail"])
    return ("  [" + "; ".join(bits) + "]") if bits else ""


def compact(f: dict[str, Any]) -> str:
    t = dt.datetime.fromisoformat(f["time"].replace("Z", "+00:00")).astimezone()
    stamp = t.strftime("%b %d %H:%M:%S.%f")[:-3]
    src, dst = _ends(f)
    arrow = "<-" if f.get("is_reply") else "->"
    left, right = (dst, src) if f.get("is_reply") else (src, dst)
    point = _POINTS.get(f.get("trace_observation_point", ""), "")
    if f.get("event_type", {}).get("type") == 5:
        point = "policy-verdict"
    elif f.get("Type") == "L7":
        point = f"{'dns' if 'dns' in f.get('l7', {}) else 'http'}-" + \
            f["l7"]["type"].lower()
    verdict = f.get("verdict", "")
    if verdict == "DROPPED" and f.get("drop_reason_desc"):
        verdict = f"{f['drop_reason_desc']} DROPPED"
    return (f"{stamp} [{f.get('node_name', '')}]: {left} {arrow} {right} {point} {verdict} "
            f"({f.get('Summary', '')}){_extras(f)}")


TABLE_HEAD = ("TIMESTAMP", "NODE", "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY")


def table_row(f: dict[str, Any]) -> tuple[str, ...]:
    src, dst = _ends(f)
    t = dt.datetime.fromisoformat(f["time"].replace("Z", "+00:00")).astimezone()
    kind = _POINTS.get(f.get("trace_observation_point", ""), f.get("Type", ""))
    if f.get("event_type", {}).get("type") == 5:
        kind = "policy-verdict"
    verdict = f.get("verdict", "")
    if f.get("drop_reason_desc"):
        verdict += f" {f['drop_reason_desc']}"
    return (t.strftime("%b %d %H:%M:%S.%f")[:-3], f.get("node_name", ""), src, dst, kind,
            verdict, f.get("Summary", "") + _extras(f))


def as_json(f: dict[str, Any]) -> str:
    return json.dumps({"flow": f, "node_name": f.get("node_name"), "time": f.get("time")},
                      separators=(",", ":"))
