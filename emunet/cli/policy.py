"""CLI verbs for policy work: `emunet label` (relabel pods/namespaces) and `emunet probe`."""

from __future__ import annotations

import argparse
import json
import os
import sys

from emunet import control, naming
from emunet.state import codec
from emunet.state.cluster import ClusterState


def _state() -> ClusterState:
    path = naming.run_dir() / "state.json"
    try:
        return codec.from_json(path.read_text())
    except FileNotFoundError:
        raise SystemExit("emunet: error: no cluster is up: start one with "
                         "`sudo emunet up FILE`") from None


def cmd_label(a: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise SystemExit("emunet: error: label talks to the root-only supervisor: use sudo")
    res = control.request("label", kind=a.kind, name=a.name, namespace=a.namespace,
                          labels=a.labels, overwrite=a.overwrite, timeout=30)
    for line in res["changes"]:
        print(line)
    return 0


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def cmd_probe(a: argparse.Namespace) -> int:
    from emunet.cluster import reachability as probe

    if os.geteuid() != 0:
        raise SystemExit("emunet: error: probe opens sockets inside pod namespaces: use sudo")
    try:
        ports = tuple(int(p) for p in _csv(a.ports))
    except ValueError:
        raise SystemExit(f"emunet: error: --ports {a.ports!r}: numbers, comma separated"
                         ) from None
    protocols = tuple(p.upper() for p in _csv(a.protocols))
    bad = [p for p in protocols if p not in ("TCP", "UDP")]
    if bad or not ports or any(not 0 < p < 65536 for p in ports):
        raise SystemExit("emunet: error: --protocols takes tcp,udp; --ports 1-65535")
    expected = None
    if a.expect:
        try:
            with open(a.expect) as f:
                expected = probe.parse_tables(f.read())
        except (OSError, ValueError) as e:
            raise SystemExit(f"emunet: error: {a.expect}: {e}") from None
    st = _state()
    results = probe.probe(st, a.namespace or None, ports, protocols, a.timeout)
    if not results:
        raise SystemExit("emunet: error: no pods to probe in those namespaces")
    if a.output == "json":
        print(json.dumps({"results": [r.__dict__ for r in results]}, indent=1))
    else:
        print(probe.render(results), end="")
    if expected is None:
        return 0
    diffs = probe.differences(results, expected)
    if diffs:
        print(f"\n{len(diffs)} differences from {a.expect}:", file=sys.stderr)
        for d in diffs:
            print(f"  {d}", file=sys.stderr)
        return 1
    print(f"\nmatches {a.expect}", file=sys.stderr)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label", help="set (k=v) or remove (k-) labels of a pod or namespace",
                       usage="emunet label pod|namespace NAME k=v [k2-] [-n NS] [--overwrite]")
    p.add_argument("kind", help="pod | namespace")
    p.add_argument("name")
    p.add_argument("labels", nargs="+", help="key=value to set, key- to remove")
    p.add_argument("-n", "--namespace", help="the pod's namespace (default: default)")
    p.add_argument("--overwrite", action="store_true", help="allow changing existing values")
    p.set_defaults(func=cmd_label)
    p = sub.add_parser("probe", help="measure which pod reaches which (real connections "
                       "from inside the pods), as a truth table")
    p.add_argument("-n", "--namespace", action="append",
                   help="probe pods of this namespace (repeatable; default: all but "
                   "kube-system)")
    p.add_argument("--ports", default="80,81", help="comma separated (default 80,81)")
    p.add_argument("--protocols", default="tcp,udp", help="tcp,udp (default both)")
    p.add_argument("--timeout", type=float, default=1.5, help="seconds per probe (default 1.5)")
    p.add_argument("--expect", help="expected table (the printed format); exit 1 on "
                   "differences")
    p.add_argument("-o", "--output", choices=["json"], help="JSON results")
    p.set_defaults(func=cmd_probe)
