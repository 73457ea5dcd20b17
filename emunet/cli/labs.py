"""`emunet lab ...`: list, start, check, hint, answer and reset the lab exercises.

The verbs only glue the catalog (what a lab is), the checks (is it done?) and the progress
(answers, hints) to `emunet up`/`down`; everything lab-specific lives in the lab's folder.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from emunet import naming
from emunet.cli import views
from emunet.cli.common import need_root
from emunet.cluster import lifecycle
from emunet.labs.catalog import Lab, find_lab, load_labs
from emunet.labs.checks import TaskResult, check_lab
from emunet.labs.progress import Progress, mark_running, running_lab


class LabUserError(lifecycle.UserError):
    """A lab verb cannot go on (exit 1); the message says what to do."""


def _lab(key: str) -> Lab:
    return find_lab(key)  # LabError: exit 2 for a lab that does not exist


def _need_root(what: str) -> None:
    need_root(f"`emunet lab {what}` builds or inspects network namespaces and needs root")


def _say(msg: str) -> None:
    print(f"  {msg}", flush=True)


# ---- verbs ----------------------------------------------------------------------------------

def cmd_list(a: argparse.Namespace) -> int:
    labs = load_labs()
    running = running_lab() if lifecycle.is_up() else None
    progress = Progress()
    rows = [["LAB", "TITLE", "STORY", "TASKS", "STATUS"]]
    for lab in labs:
        done = progress.results(lab.id)
        passed = sum(1 for t in lab.tasks if done.get(t.id))
        status = f"{passed}/{len(lab.tasks)} passed" if done else "not checked"
        if running and running.get("lab") == lab.id:
            status = "RUNNING, " + status
        rows.append([str(lab.id), lab.title, lab.story, str(len(lab.tasks)), status])
    print(views.table(rows))
    print("\nstart one with: sudo emunet lab start N   (the README: labs/NN-name/README.md)")
    return 0


def cmd_start(a: argparse.Namespace) -> int:
    lab = _lab(a.lab)
    _need_root("start")
    if lifecycle.is_up():
        marker = running_lab()
        if marker and marker.get("lab") == lab.id:
            print(f"lab {lab.id} ({lab.title}) is already running; `sudo emunet lab reset "
                  f"{lab.id}` starts it over")
            _print_tasks(lab)
            return 0
        owner = f"lab {marker['lab']}" if marker else "a cluster not started by `emunet lab`"
        raise LabUserError(f"another cluster is up ({owner}, state in {naming.run_dir()}): "
                           "`sudo emunet down` first, or `sudo emunet lab reset "
                           f"{lab.id}` to replace it")
    _start(lab)
    return 0


def _start(lab: Lab) -> None:
    t0 = time.monotonic()
    print(f"emunet: starting lab {lab.id}: {lab.title} ({lab.story})", flush=True)
    st = lifecycle.up(str(lab.config), _say)
    mark_running(lab.id, _baseline(st))
    print(f"lab {lab.id} is up in {time.monotonic() - t0:.1f}s\n")
    print(views.table(views.pods(st, None, wide=True)) + "\n")
    _print_tasks(lab)


def _baseline(st: Any) -> dict[str, Any]:
    """What the cluster looked like at start: pod IPs and (fresh) agent counters."""
    started = time.time()
    counters: dict[str, dict[str, int]] = {}
    # An agent writes its counters within a second of a change (and an unchanged file every
    # few seconds): a file written after `started`, or any file a second after it, is current.
    deadline = time.monotonic() + 2.5
    for node in st.nodes:
        path = naming.run_dir() / f"agent-{node.name}.json"
        while True:
            try:
                doc = json.loads(path.read_text())
                if doc.get("time", 0) >= started - 0.5 or time.time() >= started + 1.1 \
                        or time.monotonic() > deadline:
                    counters[node.name] = doc.get("counters", {})
                    break
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    break
            time.sleep(0.1)
    pods = {f"{ns}/{name}": ps.ip for (ns, name), ps in st.pods.items()}
    return {"pods": pods, "counters": counters}


def _print_tasks(lab: Lab) -> None:
    print(f"read the lab: {lab.readme}")
    for t in lab.tasks:
        print(f"  {t.number}. [{t.id}] {t.title}")
    print(f"\ncheck your work: sudo emunet lab check {lab.id}    "
          f"a hint: sudo emunet lab hint {lab.id} [TASK]")


def cmd_check(a: argparse.Namespace) -> int:
    lab = _lab(a.lab)
    _need_root("check")
    progress = Progress()
    results = check_lab(lab, progress, wait=not a.no_wait)
    progress.set_results(lab.id, {r.task.id: r.ok for r in results})
    for r in results:
        print(_format(lab, r, progress))
    passed = sum(r.ok for r in results)
    print(f"\nlab {lab.id}: {passed}/{len(results)} tasks pass"
          + (": well done!" if passed == len(results) else ""))
    return 0 if passed == len(results) else 1


def _format(lab: Lab, r: TaskResult, progress: Progress) -> str:
    head = f"{'PASS' if r.ok else 'FAIL'}  {r.task.number}. [{r.task.id}] {r.task.title}"
    if r.ok:
        return head
    shown = max(1, progress.hints_shown(lab.id, r.task.id))
    more = (f" (more: sudo emunet lab hint {lab.id} {r.task.id})"
            if shown < len(r.task.hints) else "")
    return (f"{head}\n      why:  {r.detail}\n"
            f"      hint: {r.task.hints[shown - 1]}{more}")


def cmd_hint(a: argparse.Namespace) -> int:
    lab = _lab(a.lab)
    progress = Progress()
    if a.task:
        task = _task(lab, a.task)
    else:  # the first task that failed last time, else the first one still hiding hints
        last = progress.results(lab.id)
        task = next((t for t in lab.tasks if last and not last.get(t.id, False)), None) or next(
            (t for t in lab.tasks if progress.hints_shown(lab.id, t.id) < len(t.hints)),
            lab.tasks[-1])
    before = progress.hints_shown(lab.id, task.id)
    shown = progress.reveal_hint(lab.id, task.id, len(task.hints))
    print(f"lab {lab.id}, task {task.number} [{task.id}]: {task.title}")
    for i, h in enumerate(task.hints[:shown], 1):
        print(f"  hint {i}/{len(task.hints)}: {h}")
    if shown == before:
        print("  (that was the last hint: the README's 'What to look at' has the rest)")
    return 0


def _task(lab: Lab, key: str):
    return lab.task(key)


def cmd_answer(a: argparse.Namespace) -> int:
    lab = _lab(a.lab)
    task = _task(lab, a.task)
    if task.answer is None:
        raise LabUserError(f"task {task.number} [{task.id}] of lab {lab.id} is checked on the "
                           f"cluster itself; there is nothing to record")
    value = " ".join(a.value)
    progress = Progress()
    progress.set_answer(lab.id, task.id, value)
    print(f"recorded lab {lab.id} task {task.number} [{task.id}]: {value!r} (in "
          f"{progress.answers_file}); check it: sudo emunet lab check {lab.id}")
    return 0


def cmd_reset(a: argparse.Namespace) -> int:
    lab = _lab(a.lab)
    _need_root("reset")
    if lifecycle.is_up():
        lifecycle.down(_say)
        print("emunet: previous cluster removed")
    Progress().clear_answers(lab.id)
    _start(lab)
    return 0


# ---- argument parsing -----------------------------------------------------------------------

