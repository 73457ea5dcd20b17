"""`emunet status` counters, per node and for DNS, worded for people. Pure (dicts in, lines out).

Sources: `<run_dir>/agent-<node>.json` (the datapath's counters, written every second by each
agent), `dns.json` (the DNS responder's answers by rcode) and the supervisor's status (child
restarts). Counters no rule below knows are still shown, under "other", so none is hidden.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

_KNOWN = {"forwarded", "encap", "decap", "rx_bytes", "tx_bytes", "ct_entries", "dnat",
          "policy_allowed", "arp_replies", "echo_replies", "traced_flows", "flow_events_lost",
          "tx_errors", "csum_filled", "flow_events_suppressed"}


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _age(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else \
        (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


def agent_lines(doc: dict[str, Any], restarts: int | None, now: float) -> list[str]:
    c = doc.get("counters", {})
    node = doc.get("node", "?")
    head = f"node {node}: agent pid {doc.get('pid')}"
    if doc.get("started"):
        head += f", up {_age(now - doc['started'])}"
    if restarts is not None:
        head += f", restarts {restarts}"
    if doc.get("datapath"):  # the build it runs (emunet.native): compiled or pure Python
        head += f", datapath {doc['datapath']}"
    if now - doc.get("time", now) > 5:
        head += f" (counters {_age(now - doc['time'])} old: is the agent running?)"
    fwd = c.get("forwarded", 0) + c.get("encap", 0)
    lines = [head,
             f"  forwarded: {fwd} packets ({c.get('forwarded', 0)} to local pods, "
             f"{c.get('encap', 0)} VXLAN out, {c.get('decap', 0)} VXLAN in); bytes in "
             f"{_size(c.get('rx_bytes', 0))}, out {_size(c.get('tx_bytes', 0))}"]
    drops = {k.removeprefix("drop:"): v for k, v in c.items() if k.startswith("drop:")}
    lines.append("  drops: " + (", ".join(f"{k} {v}" for k, v in sorted(drops.items()))
                                or "none"))
    lines.append(f"  conntrack: {c.get('ct_entries', 0)} entries; Service DNAT: "
                 f"{c.get('dnat', 0)} translations; policy-allowed connections: "
                 f"{c.get('policy_allowed', 0)}")
    extra = {k: v for k, v in c.items() if k not in _KNOWN and not k.startswith("drop:")}
    extra.update({k: c[k] for k in ("tx_errors", "flow_events_lost", "flow_events_suppressed")
                  if c.get(k)})
    if extra:
        lines.append("  other: " + ", ".join(f"{k}={v}" for k, v in sorted(extra.items())))
    return lines


def dns_lines(doc: dict[str, Any]) -> list[str]:
    rcodes = {k: v for k, v in doc.items() if k.isupper()}
    rest = {k: v for k, v in doc.items() if not k.isupper() and k not in ("pid", "queries")}
    line = f"dns: {doc.get('queries', 0)} queries; answers " + \
        (", ".join(f"{k} {v}" for k, v in sorted(rcodes.items())) or "none")
    if rest:
        line += "; " + ", ".join(f"{k}={v}" for k, v in sorted(rest.items()))
    return [line]


def status_lines(run_dir: Path, sup: dict[str, Any] | None) -> list[str]:
    restarts = {n.removeprefix("agent-"): c.get("restarts")
                for n, c in (sup or {}).get("children", {}).items() if n.startswith("agent-")}
    now = time.time()
    out: list[str] = []
    for f in sorted(run_dir.glob("agent-*.json")):
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        out += agent_lines(doc, restarts.get(doc.get("node", "")), now)
    try:
        out += dns_lines(json.loads((run_dir / "dns.json").read_text()))
    except (OSError, ValueError):
        pass
    return out
