"""Load lab definitions: one folder per lab under `labs/`, described by its `lab.yaml`.

A lab is data, not code in the CLI: a README for the learner, a start config (`emunet up` format,
possibly broken on purpose), numbered tasks with progressive hints, and checks declared in YAML.
Checks are built-in kinds (`exec`, `answer`) or small functions in the lab's own `checks.py`.
Adding a lab is adding a folder; `load_labs()` validates every one and names the file and field
of any mistake, so a broken lab fails the unit tests, never a learner's session.

    labs/02-services/
      README.md      goal, background tied to the story, numbered tasks, what to look at
      lab.yaml       id, title, story, config, tasks (id, title, answer, checks, hints)
      start.yaml     the cluster `emunet lab start 2` brings up
      checks.py      optional: def name(ctx) -> str | None  (None = pass, else what is wrong)
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from emunet.errors import EXIT_BAD_INPUT, EmunetError

CHECK_KINDS = ("exec", "python", "answer")
DEFAULT_RETRY = {"exec": 3.0, "python": 0.0, "answer": 0.0}
_TASK_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")


class LabError(EmunetError):
    """A lab folder that does not load: the message names the file and the field."""


@dataclass(frozen=True)
class Check:
    kind: str  # one of CHECK_KINDS
    spec: dict[str, Any]  # the kind's fields as written in lab.yaml
    retry: float  # seconds to keep retrying a failing check (convergence after apply)


@dataclass(frozen=True)
class Task:
    number: int  # 1-based, the README's numbering
    id: str  # short name used on the CLI: `emunet lab hint 2 fix`
    title: str
    hints: tuple[str, ...]
    checks: tuple[Check, ...]
    answer: str | None = None  # what to record, when the task asks for `emunet lab answer`


@dataclass
class Lab:
    id: int
    slug: str  # the folder name without its number: "services"
    title: str
    story: str  # which step of "The journey of a packet" it follows
    path: Path
    config: Path
    tasks: tuple[Task, ...]
    _module: ModuleType | None = field(default=None, repr=False)

    @property
    def readme(self) -> Path:
        return self.path / "README.md"

    def task(self, key: str) -> Task:
        """A task by id or by number (`fix` or `1`)."""
        for t in self.tasks:
            if key in (t.id, str(t.number)):
                return t
        names = ", ".join(f"{t.number} ({t.id})" for t in self.tasks)
        raise LabError(f"lab {self.id} has no task {key!r}; its tasks are {names}",
                       code=EXIT_BAD_INPUT)

    def function(self, name: str) -> Callable[..., Any]:
        """A check function from the lab's checks.py (loaded once)."""
        if self._module is None:
            self._module = _load_module(self)
        fn = getattr(self._module, name, None)
        if not callable(fn):
            raise LabError(f"{self.path / 'checks.py'}: no function {name!r}")
        return fn


def labs_root() -> Path:
    """The folder holding the labs: $EMUNET_LABS, else `labs/` next to the emunet package."""
    env = os.environ.get("EMUNET_LABS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "labs"


def load_labs(root: Path | None = None) -> list[Lab]:
    """Every lab under `root`, sorted by id; raises LabError on the first broken one."""
    root = root or labs_root()
    if not root.is_dir():
        raise LabError(f"no labs folder at {root} (set EMUNET_LABS to point at one)")
    labs = [load_lab(p) for p in sorted(root.iterdir()) if (p / "lab.yaml").is_file()]
    seen: dict[int, Path] = {}
    for lab in labs:
        if lab.id in seen:
            raise LabError(f"{lab.path}: lab id {lab.id} is also used by {seen[lab.id]}")
        seen[lab.id] = lab.path
    return sorted(labs, key=lambda lab: lab.id)


def find_lab(key: str, root: Path | None = None) -> Lab:
    """A lab by number (`2`) or slug (`services`)."""
    labs = load_labs(root)
    for lab in labs:
        if key in (str(lab.id), lab.slug, lab.path.name):
            return lab
    names = ", ".join(f"{lab.id} ({lab.slug})" for lab in labs)
    raise LabError(f"no lab {key!r}; the labs are {names} (see `emunet lab list`)",
                   code=EXIT_BAD_INPUT)


def load_lab(path: Path) -> Lab:
    src = path / "lab.yaml"
    try:
        doc = yaml.safe_load(src.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise LabError(f"{src}: {e}") from None
    where = str(src)
    if not isinstance(doc, dict):
        raise LabError(f"{where}: expected a mapping with id, title, story, config, tasks")
    lab_id = _get(doc, "id", int, where)
    m = re.match(r"^(\d+)-(.+)$", path.name)
    if not m or int(m.group(1)) != lab_id:
        raise LabError(f"{where}: id {lab_id} does not match the folder name {path.name!r} "
                       "(folders are NN-slug, NN = id)")
    config = path / _get(doc, "config", str, where)
    if not config.is_file():
        raise LabError(f"{where}: config: {config.name} does not exist in {path}")
    if not (path / "README.md").is_file():
        raise LabError(f"{path}: README.md is missing")
    raw_tasks = _get(doc, "tasks", list, where)
    if not raw_tasks:
        raise LabError(f"{where}: tasks: a lab needs at least one task")
    lab = Lab(id=lab_id, slug=m.group(2), title=_get(doc, "title", str, where),
              story=_get(doc, "story", str, where), path=path, config=config, tasks=())
    tasks = [_task(lab, i, t, f"{where}: tasks[{i - 1}]") for i, t in enumerate(raw_tasks, 1)]
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        raise LabError(f"{where}: task ids must be unique, got {ids}")
    lab.tasks = tuple(tasks)
    return lab


def _task(lab: Lab, number: int, doc: Any, where: str) -> Task:
    if not isinstance(doc, dict):
        raise LabError(f"{where}: a task is a mapping with id, title, checks, hints")
    tid = str(_get(doc, "id", (str, int), where))
    if not _TASK_ID.match(tid):
        raise LabError(f"{where}.id: {tid!r}: use lowercase letters, digits and '-'")
    hints = _get(doc, "hints", list, where)
    if not hints or not all(isinstance(h, str) and h.strip() for h in hints):
        raise LabError(f"{where}.hints: every task needs at least one hint (non-empty strings)")
    raw_checks = _get(doc, "checks", list, where)
    if not raw_checks:
        raise LabError(f"{where}.checks: every task needs at least one check")
    checks = tuple(_check(lab, c, f"{where}.checks[{i}]") for i, c in enumerate(raw_checks))
    answer = doc.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise LabError(f"{where}.answer: describe what the learner records, as a string")
    if any(c.kind == "answer" for c in checks) and answer is None:
        raise LabError(f"{where}: an answer check needs `answer:` (what to record)")
    return Task(number=number, id=tid, title=_get(doc, "title", str, where),
                hints=tuple(h.strip() for h in hints), checks=checks, answer=answer)


def _check(lab: Lab, doc: Any, where: str) -> Check:
    if not isinstance(doc, dict):
        raise LabError(f"{where}: a check is a mapping with one of {', '.join(CHECK_KINDS)}")
    kinds = [k for k in CHECK_KINDS if k in doc]
    if len(kinds) != 1:
        raise LabError(f"{where}: give exactly one of {', '.join(CHECK_KINDS)}")
    kind = kinds[0]
    retry = doc.get("retry", DEFAULT_RETRY[kind])
    if not isinstance(retry, int | float) or not 0 <= retry <= 30:
        raise LabError(f"{where}.retry: seconds between 0 and 30")
    spec = doc[kind]
    if kind == "python":
        if not isinstance(spec, str):
            raise LabError(f"{where}.python: the name of a function in checks.py")
        lab.function(spec)  # fails now, at load time, if it does not exist
        spec = {"function": spec}
    elif kind == "exec":
        if not isinstance(spec, dict) or not {"namespace", "pod", "command"} <= spec.keys():
            raise LabError(f"{where}.exec: needs namespace, pod and command")
        if not isinstance(spec["command"], list) or not spec["command"]:
            raise LabError(f"{where}.exec.command: a list: [curl, -s, http://monospaced]")
        if "output" in spec:
            try:
                re.compile(spec["output"])
            except re.error as e:
                raise LabError(f"{where}.exec.output: not a regular expression: {e}") from None
    else:  # answer
        if not isinstance(spec, dict) or len({"equals", "expect"} & spec.keys()) != 1:
            raise LabError(f"{where}.answer: give `equals: VALUE` or `expect: function`")
        if "expect" in spec:
            lab.function(spec["expect"])
    return Check(kind=kind, spec=dict(spec), retry=float(retry))


def _get(doc: dict, key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in doc:
        raise LabError(f"{where}: {key} is required")
    value = doc[key]
    if not isinstance(value, typ) or isinstance(value, bool):
        names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise LabError(f"{where}: {key} must be a {names}, got {value!r}")
    return value


def _load_module(lab: Lab) -> ModuleType:
    path = lab.path / "checks.py"
    if not path.is_file():
        raise LabError(f"{lab.path}: lab.yaml names a check function but checks.py is missing")
    spec = importlib.util.spec_from_file_location(f"emunet_lab_{lab.id}_checks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
