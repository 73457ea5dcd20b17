"""The CLI verbs of a living cluster: `scale`, `logs` and `get events` (kubectl's shapes).

    emunet scale deployment web --replicas 5 -n shop
    emunet logs -n shop web-7d9f8b6c4d-x2kqp [-c web] [-f]
    emunet get events -A
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from emunet import control, naming
from emunet.cli import views
from emunet.cli.common import CLIError, load_state, need_root
from emunet.cluster import events, workloads
from emunet.state.cluster import PodState


def cmd_scale(a: argparse.Namespace) -> int:
    kind, _, name = a.target.partition("/")
    if not name:
        kind, name = a.target, a.name
    if kind.lower() not in ("deployment", "deployments", "deploy"):
        raise CLIError(f"cannot scale {kind!r}: only deployments scale", code=2)
    if not name:
        raise CLIError("say which: emunet scale deployment NAME --replicas N", code=2)
    if a.replicas < 0:
        raise CLIError("--replicas must be 0 or more", code=2)
    need_root()
    res = control.request("scale", name=name, namespace=a.namespace or "default",
                          replicas=a.replicas, timeout=30)
    for line in res["changes"]:
        print(line)
    return 0


def log_path(ps: PodState, container: str) -> Path:
    """Where a container's output goes (the supervisor's workloads write it)."""
    return workloads.log_path(naming.run_dir() / "logs", ps, container)


def cmd_logs(a: argparse.Namespace) -> int:
    need_root()
    st = load_state()
    ns = a.namespace or "default"
    ps = st.pods.get((ns, a.pod))
    if ps is None:
        raise CLIError(f'pods "{a.pod}" not found in namespace {ns}')
    names = [c.name for c in ps.pod.containers]
    container = a.container
    if container is None:
        if len(names) > 1:
            raise CLIError(f"a container name must be specified for pod {a.pod}, choose "
                               f"one of: [{' '.join(names)}]", code=2)
        container = names[0]
    elif container not in names:
        raise CLIError(f"container {container} is not valid for pod {a.pod}, choose one "
                           f"of: [{' '.join(names)}]", code=2)
    path = log_path(ps, container)
    pos = _copy_from(path, 0, a.tail)
    while a.follow:
        time.sleep(0.2)
        pos = _copy_from(path, pos, None)
        if pos < 0 or (ps.key not in load_state().pods):
            break  # the pod is gone: kubectl logs -f ends too
    return 0


def _copy_from(path: Path, pos: int, tail: int | None) -> int:
    """Write what `path` holds after `pos` to stdout; the new position (-1: file gone)."""
    try:
        with open(path, "rb") as f:
            f.seek(pos)
            data = f.read()
    except FileNotFoundError:
        return pos if pos == 0 else -1
    if tail is not None and tail >= 0:
        data = b"".join(data.splitlines(keepends=True)[-tail:]) if tail else b""
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return pos + len(data) if tail is None else path.stat().st_size


def cmd_events(a: argparse.Namespace) -> int:
    ns = None if a.all_namespaces else (a.namespace or "default")
    res = control.request("events", namespace=ns, timeout=10)
    if a.output == "json":
        import json

        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Event", "type": e["type"], "reason": e["reason"],
             "message": e["message"], "count": e["count"],
             "metadata": {"namespace": e["namespace"]},
             "involvedObject": {"kind": e["kind"], "name": e["name"],
                                "namespace": e["namespace"]},
             "firstTimestamp": e["first"], "lastTimestamp": e["last"]}
            for e in res["events"]]}, indent=2))
        return 0
    rows = events.rows(res["events"], res["now"], all_namespaces=ns is None)
    if len(rows) == 1:
        print(f"No events found in {ns} namespace." if ns else "No events found.")
        return 0
    print(views.table(rows))
    return 0


