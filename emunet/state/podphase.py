"""A pod's lifecycle by its restartPolicy: what follows a container's exit, the pod's phase, and
the STATUS word `get pods` prints. Pure.

The rules are the kubelet's (pkg/kubelet/kubelet_pods.go getPhase, pkg/kubelet/container
ShouldContainerBeRestarted) and kubectl's printPod (pkg/printers/internalversion):

- a container's exit restarts it under `Always`, under `OnFailure` only if its exit code is not
  0, never under `Never`; an exit by signal N is exit code 128 + N, as a shell reports it;
- a terminated container's reason is `Completed` (exit 0) or `Error`;
- phase: Pending while a container has not started; Running while one runs, or while every one
  has exited and one will restart; once all have exited for good: Succeeded if every exit code
  was 0, else Failed (under OnFailure a failed container always restarts, so Failed needs Never).

A container's runtime status, as the supervisor publishes it in `PodState.containers`, is a dict:
`{"state": "running" | "waiting" | "terminated", "startedAt": t, "exitCode": n, "reason": str,
"finishedAt": t, "last": {exitCode, reason, startedAt, finishedAt} | None}` (times: epoch
seconds; "waiting" is a container between an exit and its restart, `last` its ended run).
"""

from __future__ import annotations

from typing import Any

from emunet.state.cluster import PodState

POLICIES = ("Always", "OnFailure", "Never")
START_ERROR = 128  # the exit code the kubelet reports for a container that could not start


def exit_code(returncode: int) -> int:
    """A process's wait status as Kubernetes reports it: a signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def reason(code: int) -> str:
    return "Completed" if code == 0 else "Error"


def restarts_after(policy: str, code: int) -> bool:
    """Whether a container that exited with `code` is started again (ShouldContainerBeRestarted)."""
    if policy == "Never":
        return False
    if policy == "OnFailure":
        return code != 0
    return True


def phase(policy: str, states: list[dict[str, Any] | None]) -> str:
    """The pod's phase from its containers' statuses (None: a container that has not started,
    or a built-in server, which runs when the pod does: pass {"state": "running"} for those)."""
    waiting = running = stopped = succeeded = 0
    for s in states:
        kind = (s or {}).get("state")
        if kind == "running":
            running += 1
        elif kind == "terminated":
            stopped += 1
            succeeded += s.get("exitCode") == 0  # type: ignore[union-attr]
        elif kind == "waiting" and (s or {}).get("last"):
            stopped += 1  # restarting: it ran and will run again
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped and policy == "Always":
        return "Running"
    if stopped and stopped == succeeded:
        return "Succeeded"
    if stopped and policy == "Never":
        return "Failed"
    return "Running" if stopped else "Pending"


def done(policy: str, states: list[dict[str, Any] | None]) -> bool:
    """Every container has exited for good (the pod is Succeeded or Failed)."""
    return phase(policy, states) in ("Succeeded", "Failed")


def status_word(phase_: str, states: list[dict[str, Any] | None], ready: bool,
                terminating: bool = False) -> str:
    """kubectl's STATUS column (printPod): the phase, overridden by the last-listed reason of a
    waiting or terminated container (the first container wins: they are read in reverse), a
    Completed pod with a ready container still running shows Running. (printPod also prints
    NotReady for a pod with a ready container in a pod not Ready; emunet has no readiness per
    container, so a running one counts as ready only in a Ready pod.)"""
    word, has_running = phase_, False
    for s in reversed(states):
        s = s or {}
        if s.get("state") == "waiting" and s.get("reason"):
            word = s["reason"]
        elif s.get("state") == "terminated":
            word = s.get("reason") or f"ExitCode:{s.get('exitCode', 0)}"
        elif s.get("state") == "running" and ready:
            has_running = True
    if word == "Completed" and has_running:
        word = "Running" if ready else "NotReady"
    return "Terminating" if terminating else word


def pod_states(ps: PodState) -> list[dict[str, Any] | None]:
    """Each container's status, in spec order: the published one of a process container, else
    running while the pod runs (built-in servers; a state written before statuses were kept)."""
    up = {"state": "running"} if ps.running or ps.ready else None
    return [ps.containers.get(c.name, up) for c in ps.pod.containers]


def pod_phase(ps: PodState) -> str:
    return phase(ps.pod.restart_policy, pod_states(ps))


def pod_status_word(ps: PodState) -> str:
    """What `get pods` prints in STATUS for the pod (emunet get pods, kubectl's Table)."""
    return status_word(pod_phase(ps), pod_states(ps), ps.ready, ps.terminating)
