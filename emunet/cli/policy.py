"""CLI verbs for policy work: `emunet label` (relabel pods/namespaces) and `emunet probe`."""

from __future__ import annotations

import argparse
import json
import sys

from emunet import control
from emunet.cli.common import CLIError, load_state, need_root
from emunet.cluster import reachability
from emunet.state.labels import parse_changes


def cmd_label(a: argparse.Namespace) -> int:
    parse_changes(a.labels)  # a malformed label is bad input, also without a cluster
    need_root("label talks to the root-only supervisor")
    res = control.request("label", kind=a.kind, name=a.name, namespace=a.namespace,
                          labels=a.labels, overwrite=a.overwrite, timeout=30)
    for line in res["changes"]:
        print(line)
    return 0


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def cmd_probe(a: argparse.Namespace) -> int:
    try:
        ports = tuple(int(p) for p in _csv(a.ports))
    except ValueError:
        raise CLIError(f"--ports {a.ports!r}: numbers, comma separated", code=2) from None
    protocols = tuple(p.upper() for p in _csv(a.protocols))
    bad = [p for p in protocols if p not in ("TCP", "UDP")]
    if bad or not ports or any(not 0 < p < 65536 for p in ports):
        raise CLIError("--protocols takes tcp,udp; --ports 1-65535", code=2)
    expected = None
    if a.expect:
        try:
            with open(a.expect) as f:
                expected = reachability.parse_tables(f.read())
        except (OSError, ValueError) as e:
            raise CLIError(f"{a.expect}: {e}", code=2) from None
    need_root("probe opens sockets inside pod namespaces")
    st = load_state()
    results = reachability.probe(st, a.namespace or None, ports, protocols, a.timeout, a.family)
    if not results:
        raise CLIError("no pods to probe in those namespaces", code=2)
    if a.output == "json":
        print(json.dumps({"results": [r.__dict__ for r in results]}, indent=1))
    else:
        print(reachability.render(results), end="")
    if expected is None:
        return 0
    diffs = reachability.differences(results, expected)
    if diffs:
        print(f"\n{len(diffs)} differences from {a.expect}:", file=sys.stderr)
        for d in diffs:
            print(f"  {d}", file=sys.stderr)
        return 1
    print(f"\nmatches {a.expect}", file=sys.stderr)
    return 0


