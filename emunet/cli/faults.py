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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("node", help="stop or start a node (its agent and pods), as a failure",
                       usage="emunet node stop|start NODE")
    p.add_argument("action", choices=["stop", "start"])
    p.add_argument("node")
    p.set_defaults(func=cmd_node)
    p = sub.add_parser("link", help="impair a node's underlay link (delay, loss, rate)",
                       usage="emunet link set NODE [--delay 50ms] [--jitter 5ms "
                             "[--distribution normal]] [--loss 5%%] [--rate 10mbit] "
                             "| show | reset NODE")
    p.add_argument("action", choices=["set", "show", "reset"])
    p.add_argument("node", nargs="?")
    p.add_argument("--delay", help="added one-way delay, e.g. 50ms (the agent, as netem)")
    p.add_argument("--jitter", help="delay variation, e.g. 5ms (needs --delay)")
    p.add_argument("--distribution", help="of the jitter: uniform (default) or normal")
    p.add_argument("--loss", help="random loss, e.g. 5%% (the agent, as netem)")
    p.add_argument("--rate", help="rate limit, e.g. 10mbit (the kernel's tc tbf)")
    p.set_defaults(func=cmd_link)
