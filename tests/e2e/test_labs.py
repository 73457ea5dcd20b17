"""Every lab, through the real CLI: the start state FAILs with hints, the reference solution
(tests/labs/solutions/NN-name/solution.yaml) makes every task PASS, `lab reset` restores the
start. One cluster per lab (reset replaces it once); everything is removed afterwards.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable

import pytest
import yaml

from emunet.labs.catalog import Lab, load_labs
from tests.e2e.cluster import ROOT, Cluster
from tests.waiting import wait_for

LABS = load_labs(ROOT / "labs")
SOLUTIONS = ROOT / "tests" / "labs" / "solutions"


@pytest.fixture
def make_cluster(clusters) -> Callable[[Lab], Cluster]:
    """A cluster for `lab`, not up yet: the test starts it with `emunet lab start`."""
    def make(lab: Lab) -> Cluster:
        c = clusters(lab.config, f"el{lab.id}", up=False)
        c.env["EMUNET_LAB_DIR"] = str(c.tmp / "learner")
        return c

    return make


def results(out: str) -> dict[str, str]:
    """{task id: PASS|FAIL} from `emunet lab check` output."""
    return {m.group(2): m.group(1) for m in re.finditer(r"^(PASS|FAIL)\s+\d+\. \[([\w-]+)\]",
                                                        out, re.M)}


def assert_start_state(c: Cluster, lab: Lab) -> None:
    p = c.emunet("lab", "check", str(lab.id), "--no-wait", check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    assert results(p.stdout) == {t.id: "FAIL" for t in lab.tasks}, p.stdout
    assert p.stdout.count("hint: ") == len(lab.tasks)  # a hint on each FAIL
    assert p.stdout.count("why: ") == len(lab.tasks)


def solve(c: Cluster, lab: Lab) -> None:
    folder = SOLUTIONS / lab.path.name
    steps = yaml.safe_load((folder / "solution.yaml").read_text())["steps"]
    for step in steps:
        args = [a.format(solution=folder, lab=lab.path) for a in step["emunet"]]
        if until := step.get("until"):
            wait_for(lambda args=args, until=until: re.search(
                until, c.emunet(*args, check=False).stdout),
                10, f"{args} to print {until!r}", interval=0.3)
        else:
            c.emunet(*args)


@pytest.mark.parametrize("lab", LABS, ids=[f"lab{lab.id}-{lab.slug}" for lab in LABS])
def test_lab_fails_at_start_passes_when_solved_and_resets(lab, make_cluster):
    c = make_cluster(lab)
    c.emunet("lab", "start", str(lab.id))
    assert_start_state(c, lab)

    solve(c, lab)
    p = c.emunet("lab", "check", str(lab.id), check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert results(p.stdout) == {t.id: "PASS" for t in lab.tasks}, p.stdout

    c.emunet("lab", "reset", str(lab.id))
    assert_start_state(c, lab)


def test_lab_cli_guards_and_progressive_hints(make_cluster):
    lab = LABS[0]
    c = make_cluster(lab)
    p = c.emunet("lab", "check", str(lab.id), check=False)
    assert p.returncode == 1 and "not running" in p.stderr
    c.emunet("lab", "start", str(lab.id))
    again = c.emunet("lab", "start", str(lab.id))  # the same lab: says so, changes nothing
    assert "already running" in again.stdout
    other = c.emunet("lab", "start", str(LABS[1].id), check=False)
    assert other.returncode == 1 and "another cluster is up" in other.stderr
    wrong = c.emunet("lab", "check", str(LABS[1].id), check=False)
    assert wrong.returncode == 1 and f"belongs to lab {lab.id}" in wrong.stderr

    task = lab.tasks[0]
    shown = []
    for _ in range(len(task.hints) + 1):
        out = c.emunet("lab", "hint", str(lab.id), task.id).stdout
        shown.append(out.count("  hint "))
    assert shown == [*range(1, len(task.hints) + 1), len(task.hints)]
    assert "last hint" in out
    listing = c.emunet("lab", "list").stdout
    assert re.search(rf"^{lab.id}\s.*RUNNING", listing, re.M), listing
    bad = c.emunet("lab", "answer", str(lab.id), "no-such-task", "x", check=False)
    # a task that does not exist is bad input: exit 2, like every bad argument (emunet.errors)
    assert bad.returncode == 2 and "has no task" in bad.stderr, shlex.join(bad.args)
