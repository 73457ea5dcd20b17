"""The verbs that build and change a cluster: up, down, apply, delete, and the checks that build
nothing (validate, doctor). Each returns the exit status; errors are EmunetErrors, which
`emunet.cli.main` prints as one line."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from emunet import control
from emunet.cli import views
from emunet.cli.common import CLIError, need_root
from emunet.config import load_config
from emunet.state import store
from emunet.state.cluster import ClusterState
from emunet.state.plan import plan


def _say(msg: str) -> None:
    print(f"  {msg}", flush=True)


def cmd_up(a: argparse.Namespace) -> int:
    from emunet.cluster import lifecycle  # here, not at the top: `apply` skips pyroute2

    if a.resume:
        if a.file:
            raise CLIError(f"--resume restarts the running cluster's supervisor and takes no "
                           f"config: drop {a.file!r} (emunet up --resume)", code=2)
        need_root()
        st = lifecycle.resume(_say)
        print(f"cluster {st.cluster.name!r} resumed: supervisor running, pods ready "
              f"{sum(p.ready for p in st.pods.values())}/{len(st.pods)}")
        return 0
    if not a.file:
        raise CLIError("no config given: emunet up CONFIG (or emunet up --resume)", code=2)
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
    from emunet.cluster import lifecycle

    need_root()
    if lifecycle.down(_say):
        print("emunet: cluster removed")
    else:
        print("emunet: no cluster is up; nothing to remove")
    return 0


def cmd_apply(a: argparse.Namespace) -> int:
    need_root()
    load_config(a.file, base=store.read_cluster())  # located errors before anything is sent
    res = control.request("apply", file=str(Path(a.file).resolve()), timeout=120)
    for line in res["changes"]:
        print(line)
    return 0


def cmd_delete(a: argparse.Namespace) -> int:
    if not a.file and not (a.kind and a.name):
        raise CLIError("say what to delete: emunet delete -f FILE, or emunet delete KIND NAME "
                       "[-n NS]", code=2)
    need_root()
    cluster = store.read_cluster()  # and "no cluster is up" without one
    if a.file:
        load_config(a.file, base=cluster)
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
    from emunet.host import doctor

    findings = doctor.run()
    print(doctor.report(findings))
    return 1 if any(f.level == "problem" for f in findings) else 0
