"""`emunet trace`: send a real probe from a pod and print its journey hop by hop.

The probe and the reading back are `emunet.cluster.tracer`'s (shared with `emunet ui`); this
module checks the arguments and prints the report, or `-o json` the same as data.
"""

from __future__ import annotations

import argparse
import json

from emunet.cli.common import load_state, need_root
from emunet.cluster import tracer


def cmd_trace(a: argparse.Namespace) -> int:
    tracer.split_dest(a.dest)  # bad input is exit 2 before root and the state
    need_root("trace sends a probe from inside a pod's namespace")
    state = load_state()
    report, fail = tracer.run(state, a.namespace or "default", a.pod, a.dest, a.protocol,
                              a.timeout, family=a.family)
    return _print(report, a, fail)


def _print(report: dict, a: argparse.Namespace, fail: bool) -> int:
    if a.output == "json":
        print(json.dumps(report, indent=2))
        return 1 if fail else 0
    print(f"trace from {report['pod']} ({report['pod_ip']} on {report['node']}) to "
          f"{report['dest']}\n")
    for q in report["dns"]:
        ans = ", ".join(q["ips"]) or q["rcode"]
        ms = f", {q['ms']} ms" if "ms" in q else ""
        print(f"[L7 DNS] {q['name']} -> {ans}  (asked {q['server']}, the kube-dns Service, "
              f"{q['rcode']}{ms})")
        if q.get("packets") and (q["ips"] or q is report["dns"][-1]):
            _print_packets(q["packets"], indent="    ", brief=True)
    if report.get("dns_note"):
        print(f"[state] {report['dns_note']}")
    if report.get("probe"):
        pr = report["probe"]
        print(f"\nprobe: {pr['protocol'].upper()} to {pr['dst']}"
              f"{':' + str(pr['port']) if pr.get('port') else ''}\n")
        _print_packets(report["packets"], indent="  ", brief=False)
        if not report["packets"]:
            print("  (no datapath records of the probe: is the node agent running? "
                  "see `emunet status`)")
    res = report["result"]
    print(f"\nresult: {res['result']}" + (f" in {res['ms']} ms" if "ms" in res else ""))
    return 1 if fail else 0


def _print_packets(pkts: list[dict], indent: str, brief: bool) -> None:
    """The first request in full, then the first reply (or, when the request was dropped, a
    count of the retransmissions); the rest of the connection as a count."""
    shown = pkts[:1]
    reply = next((p for p in pkts if p["reply"]), None)
    if reply is not None:
        shown.append(reply)
    n = 0
    for p in shown:
        print(f"{indent}{'reply' if p['reply'] else 'request'}:")
        for h in p["hops"]:
            n += 1
            print(f"{indent}{n:>3}. [{h['layer']:<11}] {h['node']}: {h['text']}")
    rest = [p for p in pkts if all(p is not q for q in shown)]
    dropped = [p for p in rest if p["hops"] and p["hops"][-1]["step"] == "drop"]
    if dropped and len(dropped) == len(rest):
        print(f"{indent}... {len(rest)} retransmissions, each dropped at the same hop")
    elif rest:
        print(f"{indent}... and {len(rest)} more packets of this connection "
              "(emunet trace -o json shows them all)")
