"""The `emunet` command line: parse arguments, call the layer that does the work, print.

Errors reach users as one clear message (exit 2 for bad input, 1 for failures); a traceback only
with --debug.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import NoReturn

from emunet import __version__, control, naming
from emunet.cli import capture as cli_capture
from emunet.cli import faults as cli_faults
from emunet.cli import labs as cli_labs
from emunet.cli import observe as cli_observe
from emunet.cli import policy as cli_policy
from emunet.cli import trace as cli_trace
from emunet.cli import views
from emunet.cli import workloads as cli_workloads
from emunet.cli.common import CLIError, load_state, need_root
from emunet.cluster import lifecycle
from emunet.config import load_config
from emunet.errors import EXIT_BAD_INPUT, EmunetError
from emunet.host import doctor, kernelnode, sandbox
from emunet.host.manifest import Manifest
from emunet.observe.counters import status_lines
from emunet.state.cluster import ClusterState
from emunet.state.plan import plan

EPILOG = """\
examples:
  sudo emunet up configs/two-node.yaml
  sudo emunet get pods -A -o wide
  sudo emunet exec -n blog-website frontend-client -- curl -s http://monospaced
  sudo emunet exec -n blog-website frontend-client -- nslookup monospaced
  sudo emunet down
"""


def _say(msg: str) -> None:
    print(f"  {msg}", flush=True)


# ---- verbs ----------------------------------------------------------------------------------

def cmd_up(a: argparse.Namespace) -> int:
    cfg = load_config(a.file)  # a bad file is bad input, also without root
    need_root()
    t0 = time.monotonic()
    print(f"emunet: bringing up {a.file}", flush=True)
    st = lifecycle.up(a.file, _say, cfg)
    print(f"cluster {st.cluster.name!r} is up in {time.monotonic() - t0:.1f}s\n")
    ready = {n.name: True for n in st.nodes}
    print(views.table(views.nodes(st, ready, wide=False)) + "\n")
    print(views.table(views.pods(st, None, wide=True)) + "\n")
    print(views.table(views.services(st, None, wide=False)) + "\n")
    print(f"Kubernetes API at http://127.0.0.1:{st.cluster.api_port} (plain HTTP, loopback "
          "only); for kubectl:\n"
          f"  export KUBECONFIG={lifecycle.kubeconfig_path()}\n")
    print(_next_steps(st))
    return 0


def cmd_kubeconfig(a: argparse.Namespace) -> int:
    """Print the running cluster's kubeconfig (`emunet kubeconfig > ~/.kube/emunet.yaml`)."""
    need_root()
    load_state()  # a cluster must be up
    try:
        sys.stdout.write(lifecycle.kubeconfig_path().read_text())
    except FileNotFoundError:
        raise CLIError(f"{lifecycle.kubeconfig_path()} is missing: the cluster's API server "
                       "did not start (see `emunet status`)") from None
    return 0


def _next_steps(st: ClusterState) -> str:
    user = sorted((p for p in st.pods.values() if p.pod.namespace != "kube-system"),
                  key=lambda p: p.key)
    svc = next((s for s in sorted(st.services.values(), key=lambda s: s.key)
                if s.key[0] != "kube-system"), None)
    lines = ["next steps:", "  sudo emunet get pods -A -o wide"]
    if user:
        c = user[0]
        if svc is not None:
            target = svc.key[1] if svc.key[0] == c.pod.namespace else ".".join(svc.key)
            lines.append(f"  sudo emunet exec -n {c.pod.namespace} {c.pod.name} -- "
                         f"nslookup {target}")
            lines.append(f"  sudo emunet exec -n {c.pod.namespace} {c.pod.name} -- "
                         f"curl -s http://{target}")
        lines.append(f"  sudo ip netns exec {c.netns} ip addr show eth0")
    lines.append("  sudo emunet down")
    return "\n".join(lines)


def cmd_down(a: argparse.Namespace) -> int:
    need_root()
    if lifecycle.down(_say):
        print("emunet: cluster removed")
    else:
        print("emunet: no cluster is up; nothing to remove")
    return 0


def _node_ready() -> dict[str, bool]:
    try:
        st = control.request("status", timeout=3)
    except (control.ControlError, OSError):
        return {}
    ready = {name.removeprefix("agent-"): c["alive"] for name, c in st["children"].items()
             if name.startswith("agent-")}
    # a kernel-mode node has no agent: Linux forwards there as long as the cluster is up
    return ready | dict.fromkeys(kernelnode.kernel_nodes(load_state()), True)


def cmd_get(a: argparse.Namespace) -> int:
    if a.kind.lower() in ("events", "event", "ev"):  # kept by the supervisor, not the state
        return cli_workloads.cmd_events(a)
    kind = views.KINDS.get(a.kind.lower())
    if kind is None:
        raise CLIError(f"unknown resource type {a.kind!r}: use pods, services, endpoints, "
                       "deployments, networkpolicies, ciliumnetworkpolicies, events or nodes",
                       code=2)
    st = load_state()
    ns = None if a.all_namespaces else (a.namespace or "default")
    ready = _node_ready() if kind == "nodes" else {}
    if a.output == "json":
        print(json.dumps(views.as_list(st, kind, ns, ready), indent=2))
        return 0
    wide = a.output == "wide"
    rows = (views.nodes(st, ready, wide) if kind == "nodes"
            else getattr(views, kind)(st, ns, wide))
    if len(rows) == 1:
        print(f"No resources found in {ns} namespace." if ns else "No resources found")
        return 0
    print(views.table(rows))
    return 0


def cmd_exec(a: argparse.Namespace) -> int:
    if a.outside:  # the NodePort client on the underlay (emunet/host/underlay.py)
        cmd = ([a.pod] if a.pod and a.pod != "--" else []) + a.command
        cmd = cmd[1:] if cmd[:1] == ["--"] else cmd
        if not cmd:
            raise CLIError("no command given: emunet exec --outside -- CMD [ARGS...]", code=2)
        need_root()
        load_state()  # a cluster must be up
        os.execvp("ip", ["ip", "netns", "exec", naming.outside_netns(), *cmd])
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not a.pod or not cmd:
        raise CLIError("no command given: emunet exec POD -- CMD [ARGS...]", code=2)
    need_root()
    st = load_state()
    ps = st.pods.get((a.namespace or "default", a.pod))
    if ps is None:
        raise CLIError(f"pod {a.pod!r} not found in namespace {a.namespace or 'default'} "
                       "(see `emunet get pods -A`)")
    containers = [c for c in ps.pod.containers if a.container in (None, c.name)]
    if not containers:
        raise CLIError(f"container {a.container} is not valid for pod {a.pod}, choose one "
                       f"of: {[c.name for c in ps.pod.containers]}", code=2)
    c = containers[0]
    # The container's namespaces (network, UTS, IPC, mount, PID: emunet.host.sandbox), as root
    # (what most images run as); its mount namespace has the pod's resolv.conf and hosts.
    recorded = Manifest.open(lifecycle.manifest_path()).processes()
    argv, env = sandbox.exec_command(ps.pod, ps.netns, c, recorded, cmd, as_user=False)
    if "TERM" in os.environ:
        env["TERM"] = os.environ["TERM"]
    os.execvpe(argv[0], argv, env)
    return 127  # not reached


def cmd_status(a: argparse.Namespace) -> int:
    st = load_state()
    try:
        sup = control.request("status", timeout=3)
    except (control.ControlError, OSError) as e:
        sup = None
        print(f"supervisor: NOT RUNNING ({e})")
    if sup:
        print(f"cluster {st.cluster.name!r}: supervisor up {sup['uptime']:.0f}s, pods ready "
              f"{sup['pods_ready']}/{sup['pods']}")
        for name, c in sup["children"].items():
            state = "running" if c["alive"] else "DEAD"
            print(f"  {name:<16} {state:<8} pid {c['pid']}  restarts {c['restarts']}")
    for line in status_lines(naming.run_dir(), sup):
        print(line)
    for o in st.others:
        if o.kind == "CiliumNetworkPolicy":  # kept as a manifest, but enforced (emunet/l7)
            continue
        print(f"warning: {o.loc}: {o.kind} {o.namespace}/{o.name} is not acted on: emunet does "
              f"not implement {o.kind} yet")
    return 0


def cmd_apply(a: argparse.Namespace) -> int:
    need_root()
    st = load_state()
    load_config(a.file, base=st.cluster)  # located errors before anything is sent
    res = control.request("apply", file=str(Path(a.file).resolve()), timeout=120)
    for line in res["changes"]:
        print(line)
    return 0


def cmd_delete(a: argparse.Namespace) -> int:
    if not a.file and not (a.kind and a.name):
        raise CLIError("say what to delete: emunet delete -f FILE, or emunet delete KIND NAME "
                       "[-n NS]", code=2)
    need_root()
    st = load_state()
    if a.file:
        load_config(a.file, base=st.cluster)
        res = control.request("delete", file=str(Path(a.file).resolve()), timeout=120)
    else:
        res = control.request("delete", kind=a.kind, name=a.name,
                              namespace=a.namespace, timeout=120)
    for line in res["changes"]:
        print(line)
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    cfg = load_config(a.file)
    st = plan(cfg)
    for w in cfg.warnings:
        print(f"warning: {w}")
    deployments = (f", {len(cfg.deployments)} deployments "
                   f"({sum(d.replicas for d in cfg.deployments)} replicas)"
                   if cfg.deployments else "")
    print(f"{a.file}: valid: {len(st.nodes)} nodes, {len(cfg.pods)} pods, "
          f"{len(cfg.services)} services{deployments}")
    return 0


def cmd_doctor(a: argparse.Namespace) -> int:
    findings = doctor.run()
    print(doctor.report(findings))
    return 1 if any(f.level == "problem" for f in findings) else 0


# ---- argument parsing -----------------------------------------------------------------------

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
    p.add_argument("file", help="config: a Cluster document followed by Kubernetes manifests")
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("down", help="stop the cluster and remove everything emunet created")
    p.set_defaults(func=cmd_down)
    p = sub.add_parser("status", help="supervisor, node agents, DNS and their counters")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("kubeconfig", help="print the kubeconfig of the cluster's Kubernetes "
                       "API (for kubectl and client libraries)")
    p.set_defaults(func=cmd_kubeconfig)
    p = sub.add_parser("get", help="list nodes, pods, services or endpoints (like kubectl get)")
    p.add_argument("kind", help="pods | services | endpoints | deployments | events | nodes")
    p.add_argument("-n", "--namespace", help="namespace (default: default)")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="all namespaces")
    p.add_argument("-o", "--output", choices=["wide", "json"], help="wide table or JSON List")
    p.set_defaults(func=cmd_get)
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
    p.set_defaults(func=cmd_exec)
    cli_faults.add_parsers(sub)  # node stop|start, link set|show|reset
    p = sub.add_parser("apply", help="create or update objects in the running cluster")
    p.add_argument("-f", "--filename", dest="file", required=True, help="manifest file")
    p.set_defaults(func=cmd_apply)
    p = sub.add_parser("delete", help="delete objects: -f FILE, or KIND NAME [-n NS]")
    p.add_argument("-f", "--filename", dest="file", help="manifest file")
    p.add_argument("kind", nargs="?", help="pod | service | namespace | networkpolicy")
    p.add_argument("name", nargs="?")
    p.add_argument("-n", "--namespace", help="namespace (default: default)")
    p.set_defaults(func=cmd_delete)
    cli_workloads.add_parsers(sub)
    p = sub.add_parser("validate", help="check a config file without building anything "
                       "(no root needed)")
    p.add_argument("file")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("doctor", help="check this machine (root, kernel, tools, UDP port) and "
                       "find leftovers of a crashed run; prints the fix for each problem")
    p.set_defaults(func=cmd_doctor)
    cli_policy.add_parsers(sub)  # label, probe
    cli_labs.add_parser(sub)  # lab list|start|check|hint|solution|reset
    cli_observe.add_parsers(sub)
    cli_trace.add_parser(sub)
    cli_capture.add_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except EmunetError as e:
        print(f"emunet: {e.label}{e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("emunet: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(f"emunet: internal error: {type(e).__name__}: {e} (run with --debug for "
              "details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
