"""The `emunet` command line's grammar: every verb, its arguments and help, and which function
runs it, as "module:function" inside emunet.cli.

Only argparse is imported here: `emunet get pods` must not pay for importing pyroute2, the
config parser or the lab catalog, which the verbs that need them import when they run
(`emunet.cli.main.handler`). Each CLI call is a new process, and the tests make hundreds.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from emunet import __version__
from emunet.errors import EXIT_BAD_INPUT

EPILOG = """\
examples:
  sudo emunet up configs/two-node.yaml
  sudo emunet get pods -A -o wide
  sudo emunet exec -n blog-website frontend-client -- curl -s http://monospaced
  sudo emunet exec -n blog-website frontend-client -- nslookup monospaced
  sudo emunet down
"""

OBSERVE_EPILOG = """\
examples:
  sudo emunet observe -n blog-website                        the last 20 flows in a namespace
  sudo emunet observe --verdict DROPPED -o json              drops, Hubble's JSON field names
  sudo emunet observe --to-pod blog-website/monospaced -f    follow flows to a pod, live
  sudo emunet observe --type policy-verdict --since 5m       which policy allowed/denied what
  sudo emunet observe --protocol dns                         DNS questions and answers

Events: the first packet of every connection (with the Service backend chosen), every drop
(with its reason and, for policy drops, the policy), every packet of a traced flow
(`emunet trace`), DNS answers and HTTP requests seen by the L7 proxy. Each node keeps
between 4 and 8 MiB of recent events (about 10k flows), in the run directory.
"""

CAPTURE_POINTS = """\
POINT is
  [NS/]POD            the pod's eth0, captured inside the pod's namespace (what the app sends)
  node/NAME           the node's underlay eth0: VXLAN on the wire between nodes
  node/NAME/veths     the node's datapath view: every pod-facing veth in the node namespace
                      (frames from pods before NAT, frames to pods after NAT)
An AF_PACKET socket per interface is created inside the right namespace (a socket keeps the
namespace it was made in); Scapy's PcapWriter writes the file (LINKTYPE_ETHERNET), so tcpdump,
tshark and Wireshark open it. VXLAN is on UDP 8472 (Flannel's port, not the IANA 4789 that
Wireshark decodes by default): `tshark -r FILE -d udp.port==8472,vxlan`."""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line like every other emunet error (kubectl's style:
    what is wrong, then where the usage is), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"emunet: error: {message} (see `{self.prog} --help`)\n")


def parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="emunet", description="A miniature Kubernetes network on one Linux machine: "
        "pods, Services, CoreDNS and a Flannel-style VXLAN overlay in network namespaces, "
        "with a userspace datapath you can watch.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    ap.add_argument("--version", action="version", version=f"emunet {__version__}")
    sub = ap.add_subparsers(dest="verb", metavar="COMMAND", required=True)

    p = sub.add_parser("up", help="build a cluster from a config file and start it")
    p.add_argument("file", nargs="?",
                   help="config: a Cluster document followed by Kubernetes manifests")
    p.add_argument("--resume", action="store_true",
                   help="no FILE: restart the supervisor of the running cluster when it and "
                        "its watchdog are gone (it adopts the agents, pods and servers)")
    p.set_defaults(func="build:cmd_up")
    p = sub.add_parser("down", help="stop the cluster and remove everything emunet created")
    p.set_defaults(func="build:cmd_down")
    p = sub.add_parser("status", help="supervisor, node agents, DNS and their counters")
    p.set_defaults(func="query:cmd_status")
    p = sub.add_parser("kubeconfig", help="print the kubeconfig of the cluster's Kubernetes "
                       "API (for kubectl and client libraries)")
    p.set_defaults(func="query:cmd_kubeconfig")
    p = sub.add_parser("get", help="list nodes, pods, services or endpoints (like kubectl get)")
    p.add_argument("kind", help="pods | services | endpoints | deployments | events | nodes")
    p.add_argument("-n", "--namespace", help="namespace (default: default)")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="all namespaces")
    p.add_argument("-o", "--output", choices=["wide", "json"], help="wide table or JSON List")
    p.set_defaults(func="query:cmd_get")
    p = sub.add_parser("exec", help="run a command inside a pod (its network, hostname, processes)",
                       usage="emunet exec [-n NS] POD -- CMD [ARGS...]")
    p.add_argument("-n", "--namespace", help="the pod's namespace (default: default)")
    p.add_argument("-i", "--stdin", action="store_true", help="accepted for kubectl habits; "
                   "stdin is always passed")
    p.add_argument("-t", "--tty", action="store_true", help="accepted for kubectl habits")
    p.add_argument("-c", "--container", help="the container (default: the pod's first)")
    p.add_argument("--outside", action="store_true",
                   help="run in the outside client namespace on the underlay (no POD)")
    p.add_argument("pod", nargs="?")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    p.set_defaults(func="query:cmd_exec")
    _faults(sub)  # node stop|start, link set|show|reset
    p = sub.add_parser("apply", help="create or update objects in the running cluster")
    p.add_argument("-f", "--filename", dest="file", required=True, help="manifest file")
    p.set_defaults(func="build:cmd_apply")
    p = sub.add_parser("delete", help="delete objects: -f FILE, or KIND NAME [-n NS]")
    p.add_argument("-f", "--filename", dest="file", help="manifest file")
    p.add_argument("kind", nargs="?", help="pod | service | namespace | networkpolicy")
    p.add_argument("name", nargs="?")
    p.add_argument("-n", "--namespace", help="namespace (default: default)")
    p.set_defaults(func="build:cmd_delete")
    _workloads(sub)
    p = sub.add_parser("validate", help="check a config file without building anything "
                       "(no root needed)")
    p.add_argument("file")
    p.set_defaults(func="build:cmd_validate")
    p = sub.add_parser("doctor", help="check this machine (root, kernel, tools, UDP port) and "
                       "find leftovers of a crashed run; prints the fix for each problem")
    p.set_defaults(func="build:cmd_doctor")
    _policy(sub)  # label, probe
    _labs(sub)  # lab list|start|check|hint|solution|reset
    _observe(sub)
    _trace(sub)
    _capture(sub)
    _ui(sub)
    return ap


def _faults(sub: Any) -> None:
    p = sub.add_parser("node", help="stop or start a node (its agent and pods), as a failure",
                       usage="emunet node stop|start NODE")
    p.add_argument("action", choices=["stop", "start"])
    p.add_argument("node")
    p.set_defaults(func="faults:cmd_node")
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
    p.set_defaults(func="faults:cmd_link")


def _workloads(sub: Any) -> None:
    p = sub.add_parser("scale", help="set a Deployment's replicas (like kubectl scale)",
                       usage="emunet scale deployment NAME --replicas N [-n NS]")
    p.add_argument("target", help="deployment, or deployment/NAME")
    p.add_argument("name", nargs="?")
    p.add_argument("--replicas", type=int, required=True)
    p.add_argument("-n", "--namespace", help="namespace (default: default)")
    p.set_defaults(func="workloads:cmd_scale")
    p = sub.add_parser("logs", help="print a container's log (like kubectl logs)",
                       usage="emunet logs [-n NS] POD [-c CONTAINER] [-f] [--tail N]")
    p.add_argument("pod")
    p.add_argument("-n", "--namespace", help="namespace (default: default)")
    p.add_argument("-c", "--container", help="which container (needed if the pod has more)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("--tail", type=int, help="only the last N lines")
    p.set_defaults(func="workloads:cmd_logs")


def _policy(sub: Any) -> None:
    p = sub.add_parser("label", help="set (k=v) or remove (k-) labels of a pod or namespace",
                       usage="emunet label pod|namespace NAME k=v [k2-] [-n NS] [--overwrite]")
    p.add_argument("kind", help="pod | namespace")
    p.add_argument("name")
    p.add_argument("labels", nargs="+", help="key=value to set, key- to remove")
    p.add_argument("-n", "--namespace", help="the pod's namespace (default: default)")
    p.add_argument("--overwrite", action="store_true", help="allow changing existing values")
    p.set_defaults(func="policy:cmd_label")
    p = sub.add_parser("probe", help="measure which pod reaches which (real connections "
                       "from inside the pods), as a truth table")
    p.add_argument("-n", "--namespace", action="append",
                   help="probe pods of this namespace (repeatable; default: all but "
                   "kube-system)")
    p.add_argument("--ports", default="80,81", help="comma separated (default 80,81)")
    p.add_argument("--protocols", default="tcp,udp", help="tcp,udp (default both)")
    p.add_argument("--timeout", type=float, default=1.5, help="seconds per probe (default 1.5)")
    p.add_argument("--family", type=int, choices=[4, 6], default=4,
                   help="6: to the pods' IPv6 addresses (dual-stack clusters)")
    p.add_argument("--expect", help="expected table (the printed format); exit 1 on "
                   "differences")
    p.add_argument("-o", "--output", choices=["json"], help="JSON results")
    p.set_defaults(func="policy:cmd_probe")


def _labs(sub: Any) -> None:
    p = sub.add_parser("lab", help="lab exercises that follow the story and check themselves",
                       description="Lab exercises: `list`, then `start N`, read "
                       "labs/NN-*/README.md, work, `check N`; `hint N` when stuck.")
    verbs = p.add_subparsers(dest="lab_verb", metavar="VERB", required=True)
    v = verbs.add_parser("list", help="the labs, which one is running, what passed")
    v.set_defaults(func="labs:cmd_list")
    for name, func, text in (("start", "labs:cmd_start", "bring up the lab's start state"),
                             ("check", "labs:cmd_check",
                              "PASS/FAIL per task (exit 0 when all pass)"),
                             ("reset", "labs:cmd_reset", "remove the cluster, forget this lab's "
                              "answers, start again")):
        v = verbs.add_parser(name, help=text)
        v.add_argument("lab", help="lab number or name")
        v.set_defaults(func=func)
        if name == "check":
            v.add_argument("--no-wait", action="store_true", help="do not retry failing checks "
                           "(they otherwise wait a few seconds for the cluster to converge)")
    v = verbs.add_parser("hint", help="the next hint for a task (the first failing one "
                         "if not given)")
    v.add_argument("lab", help="lab number or name")
    v.add_argument("task", nargs="?", help="task number or id")
    v.set_defaults(func="labs:cmd_hint")
    v = verbs.add_parser("answer", help="record an answer a task asks for")
    v.add_argument("lab", help="lab number or name")
    v.add_argument("task", help="task number or id")
    v.add_argument("value", nargs="+", help="what you found")
    v.set_defaults(func="labs:cmd_answer")


def _observe(sub: Any) -> None:
    p = sub.add_parser("observe", help="show flows: forwarded, dropped (why), translated, "
                       "policy verdicts, DNS/HTTP (like hubble observe)",
                       epilog=OBSERVE_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--namespace", help="flows from or to pods in this namespace")
    p.add_argument("--pod", action="append", metavar="[NS/]POD",
                   help="flows from or to this pod (name prefix)")
    p.add_argument("--from-pod", action="append", metavar="[NS/]POD")
    p.add_argument("--to-pod", action="append", metavar="[NS/]POD")
    p.add_argument("-l", "--label", action="append", metavar="KEY=VALUE[,...]",
                   help="flows from or to pods with these labels")
    p.add_argument("--verdict", action="append", metavar="VERDICT",
                   help="FORWARDED | DROPPED")
    p.add_argument("--protocol", action="append", metavar="PROTO",
                   help="tcp | udp | icmp | dns | http")
    p.add_argument("--port", action="append", type=int, help="source or destination port")
    p.add_argument("-t", "--type", action="append", metavar="TYPE",
                   help="drop | trace | l7 | policy-verdict")
    p.add_argument("--last", type=int, metavar="N", help="the last N flows (default 20)")
    p.add_argument("--since", metavar="WHEN", help="30s, 5m, 1h or an RFC 3339 time")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new flows")
    p.add_argument("--follow-for", type=float, metavar="S", help=argparse.SUPPRESS)
    p.add_argument("-o", "--output", choices=["compact", "json", "table"], default="compact")
    p.set_defaults(func="observe:cmd_observe")


def _trace(sub: Any) -> None:
    p = sub.add_parser("trace", help="send a real probe from a pod and show its journey hop "
                       "by hop (DNS, veth, conntrack, DNAT, policy, VXLAN, delivery, reply)",
                       usage="emunet trace [-n NS] POD DEST[:PORT] [--protocol tcp|udp|icmp]"
                       " [--family 4|6]")
    p.add_argument("-n", "--namespace", help="the pod's namespace (default: default)")
    p.add_argument("pod")
    p.add_argument("dest", help="a Service or pod name, a DNS name or an IP, with :PORT")
    p.add_argument("--protocol", choices=["tcp", "udp", "icmp"],
                   help="default: the Service port's protocol, else tcp with a port, icmp "
                   "without")
    p.add_argument("--family", type=int, choices=[4, 6],
                   help="6: over IPv6 (AAAA for a name; dual-stack clusters); default: the "
                   "destination's, IPv4 for a name")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for answers")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.set_defaults(func="trace:cmd_trace")


def _capture(sub: Any) -> None:
    p = sub.add_parser("capture", help="write a pcap at a pod's eth0, a node's underlay or a "
                       "node's pod veths", description=CAPTURE_POINTS,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("point", help="[NS/]POD | node/NAME | node/NAME/veths")
    p.add_argument("-n", "--namespace", help="the pod's namespace (default: default)")
    p.add_argument("-w", "--write", required=True, metavar="FILE.pcap")
    p.add_argument("-c", "--count", type=int, help="stop after N packets")
    p.add_argument("--duration", type=float, help="stop after S seconds")
    p.set_defaults(func="capture:cmd_capture")


def _ui(sub: Any) -> None:
    p = sub.add_parser("ui", help="a live web view: the cluster map, flows, a packet's journey "
                       "drawn hop by hop (on 127.0.0.1, for root)",
                       description="Serve the web view on http://127.0.0.1:PORT/ until Ctrl-C: "
                       "nodes, pods, Services and policies as a map that follows the cluster; "
                       "live flows (emunet observe's filters) with drops marked; a trace from "
                       "a pod drawn as its path (DNAT, policy, VXLAN, reverse NAT), each hop's "
                       "headers decoded; the trace's pcap and the flows as JSON to download. "
                       "Loopback only; a request needs the printed URL's token (or a "
                       "root-owned client socket).")
    p.add_argument("--port", type=int, default=8484, help="the port on 127.0.0.1 "
                   "(default 8484)")
    p.set_defaults(func="ui:cmd_ui")
