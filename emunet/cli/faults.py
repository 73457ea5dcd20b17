"""CLI verbs for faults: `emunet node stop|start NODE` and `emunet link set|show|reset`.

Both go through the supervisor: node power (emunet/cluster/nodepower.py), and link
impairments, which live in the cluster state the agents read (delay/jitter/loss) plus a tc tbf
for the rate (emunet/host/tc.py, emunet/datapath/netem.py).
"""

from __future__ import annotations

import argparse
import dataclasses

from emunet import control
from emunet.cli import views
from emunet.cli.common import CLIError, load_state, need_root
from emunet.config import impairment
from emunet.host import tc


def cmd_node(a: argparse.Namespace) -> int:
    need_root()
    res = control.request("node", action=a.action, node=a.node, timeout=30)
    for line in res["changes"]:
        print(line)
    return 0


def cmd_link(a: argparse.Namespace) -> int:
    imp = None
    if a.action != "show":
        if not a.node:
            raise CLIError(f"say which node: emunet link {a.action} NODE", code=2)
        if a.action == "set":
            imp = impairment.parse(a.delay, a.jitter, a.loss, a.rate, a.distribution)
    need_root()
    st = load_state()
    if a.action == "show":
        print(views.table(tc.show(st)))
        return 0
    names = [n.name for n in st.nodes]
    if a.node not in names:
        raise CLIError(f"no node named {a.node!r} (nodes: {', '.join(names)})", code=2)
    res = control.request("link", node=a.node, timeout=30,
                          impairment=dataclasses.asdict(imp) if imp else None)
    for line in res["changes"]:
        print(line)
    return 0


