"""Lab definitions and the lab framework, without a cluster: every lab folder loads, every task
has hints and checks, start configs validate, solutions exist; broken lab folders are rejected
with the file and field named; hints are progressive; retries stop at their deadline."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from emunet.config import load_config
from emunet.labs import catalog
from emunet.labs.catalog import Check, LabError, load_lab, load_labs
from emunet.labs.checks import Context, normalise, run_check, run_task
from emunet.labs.progress import Progress
from emunet.state.plan import plan

ROOT = Path(__file__).resolve().parents[2]
LABS = load_labs(ROOT / "labs")
SOLUTIONS = ROOT / "tests" / "labs" / "solutions"


def test_labs_follow_the_story_from_try_this_on():
    ids = [lab.id for lab in LABS]
    assert ids[:6] == [0, 1, 2, 3, 4, 5]
    assert ids == sorted(set(ids))


@pytest.mark.parametrize("lab", LABS, ids=[lab.path.name for lab in LABS])
def test_every_lab_is_complete(lab):
    assert lab.tasks
    readme = lab.readme.read_text()
    for t in lab.tasks:
        assert t.hints and t.checks
        # the README numbers each task and names it as the CLI does
        assert re.search(rf"^{t.number}\. \*\*{re.escape(t.id)}\*\*", readme, re.M), t.id
        if t.answer is not None:
            assert f"lab answer {lab.id} {t.id}" in readme
    for heading in ("**Goal:**", "## Background", "## Tasks", "## What to look at"):
        assert heading in readme
    cfg = load_config(lab.config)  # the start state is a valid config that plans
    plan(cfg)


@pytest.mark.parametrize("lab", LABS, ids=[lab.path.name for lab in LABS])
def test_every_lab_has_a_reference_solution(lab):
    folder = SOLUTIONS / lab.path.name
    steps = yaml.safe_load((folder / "solution.yaml").read_text())["steps"]
    assert steps and all(isinstance(s["emunet"], list) for s in steps)
    answered = {s["emunet"][3] for s in steps if s["emunet"][:2] == ["lab", "answer"]}
    assert answered == {t.id for t in lab.tasks if t.answer is not None}
    for s in steps:  # files the solution applies exist
        for arg in s["emunet"]:
            if "{solution}" in arg or "{lab}" in arg:
                assert Path(arg.format(solution=folder, lab=lab.path)).is_file(), arg


def test_solutions_are_not_where_the_cli_looks():
    for lab in LABS:
        assert not list(lab.path.glob("solution*")), lab.path


# ---- broken lab folders ----------------------------------------------------------------------

def _copy(tmp_path: Path, name: str = "02-services") -> Path:
    dst = tmp_path / name
    shutil.copytree(ROOT / "labs" / name, dst)
    return dst


def _edit(path: Path, fn) -> None:
    doc = yaml.safe_load((path / "lab.yaml").read_text())
    fn(doc)
    (path / "lab.yaml").write_text(yaml.safe_dump(doc))


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["tasks"][0].update(hints=[]), r"tasks\[0\]\.hints: every task needs"),
    (lambda d: d["tasks"][1].update(checks=[]), r"tasks\[1\]\.checks: every task needs"),
    (lambda d: d["tasks"][0]["checks"].append({"python": "nope"}), r"no function 'nope'"),
    (lambda d: d["tasks"][0]["checks"].append({"shell": "x"}), r"exactly one of"),
    (lambda d: d["tasks"][1].update(id="fix"), r"task ids must be unique"),
    (lambda d: d["tasks"][0].update(id="Bad Id"), r"tasks\[0\]\.id"),
    (lambda d: d.update(id=7), r"does not match the folder name"),
    (lambda d: d.update(config="missing.yaml"), r"config: missing.yaml does not exist"),
    (lambda d: d.pop("title"), r"title is required"),
    (lambda d: d["tasks"][2].pop("answer"), r"answer check needs `answer:`"),
    (lambda d: d["tasks"][0]["checks"][0].update(retry=99), r"retry: seconds"),
    (lambda d: d["tasks"][0]["checks"][0]["exec"].update(output="("), r"regular expression"),
])
def test_broken_lab_is_rejected_with_file_and_field(tmp_path, mutate, message):
    lab = _copy(tmp_path)
    _edit(lab, mutate)
    with pytest.raises(LabError, match=message) as e:
        load_lab(lab)
    assert "lab.yaml" in str(e.value) or "checks.py" in str(e.value)


def test_missing_readme_and_duplicate_ids(tmp_path):
    lab = _copy(tmp_path)
    (lab / "README.md").unlink()
    with pytest.raises(LabError, match="README.md is missing"):
        load_lab(lab)
    _copy(tmp_path / "two", "01-pods")
    shutil.copytree(tmp_path / "two" / "01-pods", tmp_path / "two" / "01-again")
    with pytest.raises(LabError, match="lab id 1 is also used"):
        load_labs(tmp_path / "two")


def test_find_lab_by_number_or_name(monkeypatch):
    monkeypatch.setenv("EMUNET_LABS", str(ROOT / "labs"))
    assert catalog.find_lab("2").slug == "services"
    assert catalog.find_lab("vxlan").id == 5
    with pytest.raises(LabError, match="no lab 'nine'.*0 \\(try-this\\)"):
        catalog.find_lab("nine")
    assert LABS[2].task("2").id == "second-port"
    with pytest.raises(LabError, match="has no task"):
        LABS[2].task("nine")


# ---- progress: answers and hints ------------------------------------------------------------

def test_answers_round_trip_and_reset_forgets_one_lab(tmp_path):
    p = Progress(tmp_path / "learner")
    assert p.answer(3, "ndots") is None
    p.set_answer(3, "ndots", "5")
    p.set_answer(4, "forward", "0")
    assert Progress(tmp_path / "learner").answer(3, "ndots") == "5"
    assert "ndots: '5'" in (tmp_path / "learner" / "answers.yaml").read_text()
    p.clear_answers(3)
    assert p.answer(3, "ndots") is None and p.answer(4, "forward") == "0"


def test_hints_are_revealed_one_at_a_time_up_to_the_last(tmp_path):
    p = Progress(tmp_path)
    assert [p.reveal_hint(2, "fix", 3) for _ in range(5)] == [1, 2, 3, 3, 3]
    assert p.hints_shown(2, "fix") == 3 and p.hints_shown(2, "endpoint") == 0
    p.set_results(2, {"fix": True})
    assert p.results(2) == {"fix": True} and p.hints_shown(2, "fix") == 3


def test_answers_compare_loosely():
    assert normalise(" '10.42.2.2:3000' ") == normalise("10.42.2.2:3000")
    assert normalise("Catalog.Shop") == "catalog.shop"


# ---- running checks (no cluster: the answer kind and retry timing) ---------------------------

class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s
        self.sleeps += 1


def _ctx(tmp_path, lab_index: int = 2) -> Context:
    return Context(LABS[lab_index], Progress(tmp_path))


def test_answer_check_literal_and_missing_answer(tmp_path, monkeypatch):
    monkeypatch.setenv("EMUNET_RUN_DIR", str(tmp_path / "run"))
    ctx = _ctx(tmp_path)
    task = LABS[2].task("endpoint")
    r = run_task(ctx, task)
    assert not r.ok and "sudo emunet lab answer 2 endpoint VALUE" in r.detail
    ctx.progress.set_answer(2, "endpoint", "x")
    ctx.task = task
    literal = Check("answer", {"equals": "X "}, 0.0)
    assert run_check(ctx, literal) is None
    assert "not what the cluster shows" in run_check(ctx, Check("answer", {"equals": "y"}, 0))


def test_failing_check_retries_until_its_deadline(tmp_path, monkeypatch):
    ctx = _ctx(tmp_path)
    calls = []

    def flaky(_ctx):
        calls.append(1)
        return None if len(calls) == 4 else "not yet"

    monkeypatch.setattr(ctx.lab, "function", lambda name: flaky)
    clock = FakeClock()
    assert run_check(ctx, Check("python", {"function": "f"}, 5.0), clock=clock,
                     sleep=clock.sleep) is None
    assert len(calls) == 4
    calls.clear()
    clock = FakeClock()
    problem = run_check(ctx, Check("python", {"function": "f"}, 0.5), clock=clock,
                        sleep=clock.sleep)
    assert problem == "not yet" and clock.t < 1.0  # gave up at the deadline
    calls.clear()
    ctx.wait = False  # `lab check --no-wait`: one try
    assert run_check(ctx, Check("python", {"function": "f"}, 5.0), clock=clock,
                     sleep=clock.sleep) == "not yet"
    assert len(calls) == 1


def test_vagrantfile_provisions_with_scripts_setup():
    text = (ROOT / "Vagrantfile").read_text()
    assert re.search(r'config\.vm\.box\s*=\s*"debian/bookworm64"', text)
    assert "scripts/setup" in text and 'synced_folder "."' in text


@pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby is not installed")
def test_vagrantfile_parses():
    p = subprocess.run(["ruby", "-c", str(ROOT / "Vagrantfile")], capture_output=True,
                       text=True)
    assert p.returncode == 0 and "Syntax OK" in p.stdout, p.stderr
