"""Run a lab's checks against the live cluster: PASS/FAIL per task, retrying for convergence.

A check looks at the cluster the way a learner would: the state file the CLI reads, commands
run inside pod and node namespaces (`ip netns exec`), DNS queries sent from a pod through the
datapath, the agents' counters. Nothing here changes the cluster.

Check kinds (declared in lab.yaml, see catalog.py):
- `exec`:   run a command in a pod; pass on the expected exit status (0) and output regex;
- `answer`: the learner's recorded answer equals a literal, or what a lab function computes
            from the live cluster (a string or a set of acceptable strings);
- `python`: a lab function `fn(ctx) -> str | None`: None passes, a string says what is wrong.
A failing check is retried for its `retry` seconds (an apply takes a moment to reach the
agents); a task passes when all its checks pass.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emunet import naming
from emunet.cluster import lifecycle
from emunet.labs.catalog import Check, Lab, LabError, Task
from emunet.labs.progress import Progress, running_lab
from emunet.state import store
from emunet.state.cluster import ClusterState, NodeState, PodState


@dataclass(frozen=True)
class TaskResult:
    task: Task
    ok: bool
    detail: str  # what is wrong, for a FAIL; empty for a PASS


class Context:
    """What a check may look at: the live cluster, the learner's answer, the start baseline."""

    def __init__(self, lab: Lab, progress: Progress) -> None:
        self.lab = lab
        self.progress = progress
        marker = running_lab() or {}
        self.baseline: dict[str, Any] = marker.get("baseline", {})
        self.task: Task | None = None
        self.wait = True  # False: each check once, no retry window

    # -- cluster --------------------------------------------------------------------------------

    def state(self) -> ClusterState:
        """The cluster state as it is now (re-read on every call: checks retry)."""
        return store.read()

    def pod(self, namespace: str, name: str) -> PodState | None:
        return self.state().pods.get((namespace, name))

    def node(self, name: str) -> NodeState:
        return self.state().node(name)

    def run(self, netns: str, *cmd: str, timeout: float = 10) -> subprocess.CompletedProcess:
        """A command inside a namespace, as `ip netns exec` runs it (pod resolv.conf too)."""
        try:
            return subprocess.run(["ip", "netns", "exec", netns, *cmd], capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(cmd, 124, "", f"timed out after {timeout:.0f}s")

    def exec(self, namespace: str, pod: str, *cmd: str,
             timeout: float = 10) -> subprocess.CompletedProcess:
        ps = self.pod(namespace, pod)
        if ps is None:
            return subprocess.CompletedProcess(cmd, 1, "", f"pod {namespace}/{pod} not found")
        return self.run(ps.netns, *cmd, timeout=timeout)

    def resolve(self, namespace: str, pod: str, name: str) -> str | None:
        """One DNS A query for exactly `name`, sent from the pod to the cluster DNS."""
        ps = self.pod(namespace, pod)
        if ps is None:
            return None
        st = self.state()
        return lifecycle.dns_query(ps.netns, st.cluster.cluster_dns, name.rstrip("."))

    def counters(self, node: str) -> dict[str, int]:
        """The node agent's datapath counters (written every second by the agent)."""
        try:
            doc = json.loads((naming.run_dir() / f"agent-{node}.json").read_text())
        except (OSError, ValueError):
            return {}
        return dict(doc.get("counters", {}))

    # -- the learner ----------------------------------------------------------------------------

    def answer(self, task: str | None = None) -> str | None:
        key = task or (self.task.id if self.task else "")
        value = self.progress.answer(self.lab.id, key)
        return value.strip() if value is not None else None


def check_lab(lab: Lab, progress: Progress, *, wait: bool = True,
              clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep) -> list[TaskResult]:
    """Every task's result, in order. Raises LabError when this lab's cluster is not up.

    `wait=False` tries each check once (no retry window).
    """
    marker = running_lab()
    if marker is None or not lifecycle.is_up():
        raise LabError(f"lab {lab.id} is not running: start it with `sudo emunet lab start "
                       f"{lab.id}`")
    if marker.get("lab") != lab.id:
        raise LabError(f"the cluster that is up belongs to lab {marker.get('lab')}, not lab "
                       f"{lab.id}: `sudo emunet lab reset {lab.id}` switches to it")
    ctx = Context(lab, progress)
    ctx.wait = wait
    return [run_task(ctx, t, clock=clock, sleep=sleep) for t in lab.tasks]


def run_task(ctx: Context, task: Task, *, clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> TaskResult:
    ctx.task = task
    if task.answer is not None and ctx.answer() is None:
        return TaskResult(task, False, f"no answer recorded yet: {task.answer}, then `sudo "
                          f"emunet lab answer {ctx.lab.id} {task.id} VALUE`")
    for check in task.checks:
        problem = run_check(ctx, check, clock=clock, sleep=sleep)
        if problem is not None:
            return TaskResult(task, False, problem)
    return TaskResult(task, True, "")


def run_check(ctx: Context, check: Check, *, clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep) -> str | None:
    """None when the check passes (within its retry window), else the last problem."""
    deadline = clock() + (check.retry if ctx.wait else 0.0)
    while True:
        try:
            problem = _once(ctx, check)
        except FileNotFoundError:
            problem = "the cluster's state is gone: is the lab still up? (`emunet status`)"
        if problem is None or clock() >= deadline:
            return problem
        sleep(0.3)


def _once(ctx: Context, check: Check) -> str | None:
    spec = check.spec
    if check.kind == "python":
        return ctx.lab.function(spec["function"])(ctx)
    if check.kind == "answer":
        return _answer(ctx, spec)
    return _exec(ctx, spec)


def _exec(ctx: Context, spec: dict[str, Any]) -> str | None:
    cmd = [str(c) for c in spec["command"]]
    p = ctx.exec(spec["namespace"], spec["pod"], *cmd, timeout=float(spec.get("timeout", 10)))
    shown = f"`{' '.join(cmd)}` in {spec['namespace']}/{spec['pod']}"
    want = int(spec.get("exit", 0))
    out = (p.stdout + p.stderr).strip()
    if p.returncode != want:
        msg = spec.get("message") or f"{shown} exited {p.returncode}, expected {want}"
        return f"{msg}" + (f" ({_last_line(out)})" if out else "")
    if "output" in spec and not re.search(spec["output"], p.stdout):
        return spec.get("message") or f"{shown}: output does not match {spec['output']!r}"
    return None


def _answer(ctx: Context, spec: dict[str, Any]) -> str | None:
    given = ctx.answer()
    if given is None:
        return "no answer recorded yet"
    if "equals" in spec:
        ok = normalise(given) == normalise(str(spec["equals"]))
    else:
        truth = ctx.lab.function(spec["expect"])(ctx)
        if truth is None:
            return "the cluster is not in a state where this can be checked (is the lab up?)"
        accepted = {truth} if isinstance(truth, str) else set(truth)
        ok = normalise(given) in {normalise(a) for a in accepted}
    return None if ok else f"your answer {given!r} is not what the cluster shows"


def normalise(value: str) -> str:
    """Answers compare case-insensitively, ignoring surrounding space and quotes."""
    return value.strip().strip("'\"").strip().lower()


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""
