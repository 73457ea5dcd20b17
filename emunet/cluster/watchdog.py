"""The supervisor's watchdog: the process `emunet up` leaves running, which runs the supervisor
and starts it again (`--adopt`, emunet.cluster.adopt) when it dies by a signal or a crash, as
systemd's Restart=on-failure keeps a kubelet up. It exits when the supervisor exits cleanly
(after `shutdown`) or when it is itself told to stop (SIGTERM from `emunet down`). If it is
killed itself (or gives up on a supervisor that keeps dying), `emunet up --resume` starts a new
one whose first supervisor adopts the cluster (`--resume N`: N supervisors ran before).

It is the child subreaper (prctl(2) PR_SET_CHILD_SUBREAPER) of everything below it: when the
supervisor dies, its agents, sandboxes and containers are reparented here, not to init, and are
reaped here when they exit, so the restarted supervisor (which polls them by pid and start
time) never waits on a zombie a busy or absent init leaves behind.

Each supervisor is recorded in the manifest before it is told to go (it writes the manifest
itself only after that, so the two never write it at once).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from emunet import naming
from emunet.host.manifest import Manifest

log = logging.getLogger("emunet.cluster.watchdog")
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
MAX_QUICK_DEATHS = 5  # a supervisor dying this often within QUICK of its start: give up
QUICK = 10.0


def _subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_CHILD_SUBREAPER): %s", os.strerror(ctypes.get_errno()))


def should_restart(status: int, stopping: bool) -> bool:
    """A supervisor that exited 0 was shut down; one killed by a signal or exiting with an
    error crashed, unless we are stopping (then `down` is ending it)."""
    return not stopping and os.waitstatus_to_exitcode(status) != 0


def backoff(quick_deaths: int) -> float:
    """Seconds before the next start: at once after one crash, then doubling to 5 s."""
    return 0.0 if quick_deaths <= 1 else min(5.0, 0.25 * 2 ** (quick_deaths - 2))


def _start(restarts: int, debug: bool) -> int:
    logf = open(naming.run_dir() / "logs" / "supervisor.log", "ab")  # noqa: SIM115
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    argv = [sys.executable, "-m", "emunet.cluster.supervisor"]
    argv += ["--adopt", "--restarts", str(restarts)] if restarts else []
    argv += ["--debug"] if debug else []
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=logf, stderr=subprocess.STDOUT,
                         env=env, start_new_session=True)
    logf.close()
    Manifest.open(naming.manifest_path()).add_process(p.pid, "supervisor")
    assert p.stdin is not None
    p.stdin.write(b"go\n")
    p.stdin.close()
    return p.pid


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    # `emunet up --resume`: the cluster is running without a supervisor (this watchdog's
    # predecessor was killed, or gave up): the first supervisor already adopts it
    resumed = int(args[args.index("--resume") + 1]) if "--resume" in args else 0
    if sys.stdin.readline() != "go\n":  # `up` recorded our pid in the manifest
        return 1  # or `up` died before it could: nothing to run
    _subreaper()
    stopping = False
    sup = 0

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if sup:
            with contextlib.suppress(ProcessLookupError):
                os.kill(sup, signal.SIGTERM)  # it stops its children and exits

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    restarts, quick = resumed, 0
    while not stopping:
        started = time.monotonic()
        try:
            sup = _start(restarts, debug)
        except Exception as e:  # the run dir is gone (`down` raced us): nothing to run
            log.error("cannot start the supervisor: %s", e)
            return 1
        while True:  # reap orphans (we are their subreaper) until the supervisor exits
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return 0
            if pid == sup:
                break
        sup = 0
        if not should_restart(status, stopping):
            log.info("supervisor exited (%d): done", os.waitstatus_to_exitcode(status))
            break
        quick = quick + 1 if time.monotonic() - started < QUICK else 1
        if quick > MAX_QUICK_DEATHS:
            log.error("supervisor died %d times within %.0fs of starting: giving up "
                      "(`emunet down` cleans up)", quick - 1, QUICK)
            return 1
        restarts += 1
        log.warning("supervisor died (%d); restart %d", os.waitstatus_to_exitcode(status),
                    restarts)
        time.sleep(backoff(quick))
    # Orphans still running after a clean stop are `down`'s to end (by the manifest); reap
    # what exits meanwhile without blocking, then go.
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
