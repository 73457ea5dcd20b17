"""Pod sandboxes: the namespaces a pod's processes share besides the network, as a container
runtime builds them (the "pause" container of a Kubernetes pod).

A pod with container processes gets one sandbox process, started inside the pod's network
namespace with new UTS, IPC, mount and PID namespaces:

    ip netns exec <pod netns> unshare --uts --ipc --mount --pid --fork --mount-proc
        sh -c 'hostname <pod>; mount -t tmpfs tmpfs /tmp; exec catatonit -P'

- UTS: the pod's hostname is its name (or spec.hostname), as the kubelet sets it;
- IPC: System V IPC and POSIX queues are the pod's own;
- mount: a private /proc (of the pod's PID namespace), /dev/shm and /tmp (an overlay on the
  host's: what the pod writes is its own), on top of what `ip netns exec` bind-mounts (the
  pod's resolv.conf and hosts under /etc);
- PID: catatonit in pause mode is PID 1 (podman's pause process): it reaps orphans and holds
  the namespaces while the containers come and go.

Each container process joins the sandbox's network, UTS, IPC and mount namespaces (nsenter). Its
PID namespace is its own, with its own /proc (Kubernetes' default), unless the pod sets
`shareProcessNamespace: true`: then every container joins the sandbox's PID namespace and sees
the others (and PID 1). Either way a pod's processes cannot see, signal or ptrace another pod's:
they are not in its PID namespace, and /proc shows only their own. `exec` (emunet exec, exec
probes) enters the namespaces of the container it runs in. A pod without container processes
(emunet's built-in servers run in the supervisor) has no sandbox; an exec into it gets fresh
namespaces of the same kind, with the pod's hostname.

Pure: argument vectors, plus `child_pid` to find the process an nsenter/unshare runs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from emunet.host.manifest import process_start_time
from emunet.model import Container, Pod

PAUSE = "catatonit"  # Debian/Ubuntu package catatonit; `-P`: pause mode, reaps children
TMP_SIZE = "64m"  # the pod's /dev/shm, which also holds its /tmp writes (memory, bounded)
# What an image's environment has (the Docker/OCI default PATH), not the invoking shell's.
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NOBODY = 65534  # the default user and group of container processes (see run_as)
# nsenter: network, UTS, IPC, mount (pid is added for a shared PID namespace or an exec), and
# the target's root directory: entering a mount namespace resets the root to that namespace's
# own (setns(2)), which escapes a chroot that emunet runs in (scripts/check-fresh-install)
# and would show the host's /etc/resolv.conf instead of the pod's.
_JOIN = ("--net", "--uts", "--ipc", "--mount", "--root")


def hostname(pod: Pod) -> str:
    """The pod's hostname: spec.hostname, else its name cut to 63 characters (kubelet's
    GeneratePodHostNameAndDomain)."""
    return pod.hostname or pod.name[:63].rstrip("-.")


def run_as(c: Container) -> list[str]:
    """The setpriv(1) prefix that drops root for a container's process (entering namespaces
    needs root). securityContext.runAsUser/runAsGroup when set; otherwise nobody/nogroup
    (65534): emunet has no image whose USER could say otherwise, and a workload has no business
    being root on the host. runAsUser 0 keeps root (group 0 unless runAsGroup says otherwise).
    Supplementary groups are cleared."""
    uid = NOBODY if c.run_as_user is None else c.run_as_user
    gid = c.run_as_group if c.run_as_group is not None else (0 if uid == 0 else NOBODY)
    if uid == 0 and gid == 0:
        return []
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]


def env(pod: Pod, c: Container) -> dict[str, str]:
    """A container's environment: what an image and the kubelet set, then the container's env."""
    home = "/root" if c.run_as_user == 0 else "/nonexistent"  # passwd entries of root, nobody
    return {"PATH": PATH, "HOSTNAME": hostname(pod), "HOME": home, **dict(c.env)}


def _setup(pod: Pod, then: list[str]) -> list[str]:
    """sh -c: set the hostname, mount the pod's /dev/shm and /tmp in the new namespaces, exec.

    /tmp is an overlay: the host's /tmp below (read-only from here: a pod's "image" is the
    host's filesystem, and a checkout or interpreter may live under /tmp), the pod's own tmpfs
    above, so whatever the pod writes there stays the pod's, invisible to the host and to every
    other pod. A kernel without overlayfs gets a plain tmpfs /tmp."""
    tmpfs = f"-o mode=1777,nosuid,nodev,size={TMP_SIZE}"
    layer = "/dev/shm/.emunet-tmp"
    script = (
        f'hostname "$0" && mount -t tmpfs {tmpfs} tmpfs /dev/shm'
        f' && mkdir -p {layer}/upper {layer}/work && chmod 1777 {layer}/upper'
        f' && {{ mount -t overlay overlay -o lowerdir=/tmp,upperdir={layer}/upper,'
        f'workdir={layer}/work /tmp 2>/dev/null || mount -t tmpfs {tmpfs} tmpfs /tmp; }}'
        ' && exec "$@"')
    return ["sh", "-c", script, hostname(pod), *then]


def sandbox_argv(pod: Pod, netns: str) -> list[str]:
    """The pod's sandbox: new UTS/IPC/mount/PID namespaces in its netns, PID 1 the pause."""
    return ["ip", "netns", "exec", netns, "unshare", "--uts", "--ipc", "--mount", "--pid",
            "--fork", "--mount-proc", "--propagation", "private",
            *_setup(pod, [PAUSE, "-P"])]


def container_argv(pod: Pod, c: Container, sandbox_pid: int, cmd: list[str]) -> list[str]:
    """A container process in the pod's sandbox (`sandbox_pid`: the pause, PID 1 of the pod).
    With `tty` the command leads a session with its pty as controlling terminal (setsid -c;
    it does not fork there: the process before it is no group leader), so ^C reaches it."""
    if c.tty:
        cmd = ["setsid", "-w", "-c", *cmd]
    if pod.share_process_namespace:
        return ["nsenter", f"--target={sandbox_pid}", *_JOIN, "--pid", "--wd=/", "--",
                *run_as(c), *cmd]
    # its own PID namespace and /proc; unshare forks so that the container's command is its PID 1
    return ["nsenter", f"--target={sandbox_pid}", *_JOIN, "--wd=/", "--",
            "unshare", "--pid", "--fork", "--mount-proc", "--", *run_as(c), *cmd]


def exec_argv(pod: Pod, netns: str, target_pid: int | None, cmd: list[str],
              user: list[str] | None = None) -> list[str]:
    """An exec in the pod: into the namespaces of `target_pid` (a container's first process),
    or, for a pod without processes, into fresh ones with the pod's hostname. `user`: a
    setpriv prefix (run_as), none for root."""
    user = user or []
    if target_pid is not None:
        return ["nsenter", f"--target={target_pid}", *_JOIN, "--pid", "--wd=/", "--",
                *user, *cmd]
    return ["ip", "netns", "exec", netns, "unshare", "--uts", "--ipc", "--mount", "--pid",
            "--fork", "--mount-proc", "--propagation", "private", *_setup(pod, [*user, *cmd])]


def child_pid(pid: int, proc: Path = Path("/proc")) -> int | None:
    """The one child of `pid` (the process an `unshare --fork` runs), None if it has none."""
    try:
        text = (proc / str(pid) / "task" / str(pid) / "children").read_text().split()
    except OSError:
        return None
    return int(text[0]) if text else None


def recorded_pid(processes: list[dict], role: str) -> int | None:
    """The newest live process recorded (in the manifest) with `role`, whose start time still
    matches (a recycled pid is never taken for it)."""
    for e in reversed(processes):
        if e.get("role") == role and process_start_time(e["pid"]) == e.get("start_time"):
            return e["pid"]
    return None


def sandbox_role(pod: Pod) -> str:
    return f"sandbox {pod.namespace}/{pod.name}"


def container_role(pod: Pod, c: Container) -> str:
    return f"container {pod.namespace}/{pod.name}/{c.name}"


def exec_command(pod: Pod, netns: str, c: Container, processes: list[dict], cmd: list[str],
                 as_user: bool, tty: bool = False) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of an exec into container `c` (`emunet exec` as root,
    `kubectl exec` as the container's user): into the namespaces of its running process, found
    among the manifest's recorded `processes`. `tty`: the command leads a new session with its
    terminal as controlling tty (setsid -c), as a container's tty is."""
    started = recorded_pid(processes, container_role(pod, c))
    target = child_pid(started) if started is not None else None
    user = run_as(c) if as_user else []
    prefix = ["setsid", "-c"] if tty else []
    environ = env(pod, c if as_user else replace(c, run_as_user=0))
    if tty:
        environ["TERM"] = "xterm"
    return exec_argv(pod, netns, target, [*prefix, *user, *cmd]), environ
