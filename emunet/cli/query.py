"""The verbs that look at a running cluster without changing it: get, status, kubeconfig, and
exec (a command in a pod's namespaces). They read the state file and ask the supervisor; none
imports the host layer's netlink code or the config parser, so each call starts fast."""

from __future__ import annotations

import argparse
import json
import os
import sys

from emunet import control, naming
from emunet.cli import views
from emunet.cli.common import CLIError, load_state, need_root
from emunet.host import adopted, kernelnode, sandbox
from emunet.host.manifest import Manifest
from emunet.observe.counters import status_lines


def cmd_kubeconfig(a: argparse.Namespace) -> int:
    """Print the running cluster's kubeconfig (`emunet kubeconfig > ~/.kube/emunet.yaml`)."""
    need_root()
    load_state()  # a cluster must be up
    try:
        sys.stdout.write(naming.kubeconfig_path().read_text())
    except FileNotFoundError:
        raise CLIError(f"{naming.kubeconfig_path()} is missing: the cluster's API server "
                       "did not start (see `emunet status`)") from None
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
        # imported here: it loads asyncio and the workloads layer, which no other kind needs
        from emunet.cli import workloads as cli_workloads
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
    after = getattr(a, "after_dashes", None)
    if after is not None and a.command:
        raise CLIError(f"unexpected arguments before `--`: {' '.join(a.command)} (emunet exec "
                       "[-n NS] POD -- CMD [ARGS...])", code=2)
    if a.outside:  # the NodePort client on the underlay (emunet/host/underlay.py)
        if after is not None and a.pod:
            raise CLIError(f"--outside runs the command on the outside client, not in a pod: "
                           f"drop {a.pod!r} (emunet exec --outside -- CMD [ARGS...])", code=2)
        cmd = after if after is not None else [a.pod, *a.command] if a.pod else []
        if not cmd:
            raise CLIError("no command given: emunet exec --outside -- CMD [ARGS...]", code=2)
        need_root()
        load_state()  # a cluster must be up
        os.execvp("ip", ["ip", "netns", "exec", naming.outside_netns(), *cmd])
    cmd = after if after is not None else a.command  # `exec POD CMD`: kubectl's old form
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
    recorded = Manifest.open(naming.manifest_path()).processes()
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
    watchdog = adopted.find(Manifest.open(naming.manifest_path()).processes(), "watchdog")
    if sup is None and watchdog is None:
        print("watchdog: gone, so nothing restarts the supervisor: `emunet up --resume` "
              "adopts the running cluster (or `emunet down`)")
    if sup:
        me = sup.get("supervisor") or {}
        print(f"cluster {st.cluster.name!r}: supervisor up {sup['uptime']:.0f}s (pid "
              f"{me.get('pid')}, restarts {me.get('restarts', 0)}), pods ready "
              f"{sup['pods_ready']}/{sup['pods']}")
        if watchdog is None:
            print("  warning: the watchdog is gone: a supervisor crash would not be "
                  "recovered (then run `emunet up --resume`)")
        behind = set(sup.get("behind") or ())
        for name, c in sup["children"].items():
            # "starting": alive, but not yet forwarding by the current state (just restarted)
            state = ("starting" if name in behind else "running") if c["alive"] else "DEAD"
            print(f"  {name:<16} {state:<8} pid {c['pid']}  restarts {c['restarts']}")
    for line in status_lines(naming.run_dir(), sup):
        print(line)
    for o in st.others:
        if o.kind == "CiliumNetworkPolicy":  # kept as a manifest, but enforced (emunet/l7)
            continue
        print(f"warning: {o.loc}: {o.kind} {o.namespace}/{o.name} is not acted on: emunet does "
              f"not implement {o.kind} yet")
    return 0
