"""A learner's progress: recorded answers, hints revealed, last check results, the running lab.

Two places, for two lifetimes:
- the learner's folder (`~/emunet-lab/`, or $EMUNET_LAB_DIR) outlives clusters: `answers.yaml`
  (what `emunet lab answer` records; plain YAML a learner may edit by hand) and
  `progress.json` (hints revealed per task, the last result of each task);
- `<run dir>/lab.json` lives and dies with the cluster (`emunet down` removes the run dir): which
  lab the cluster belongs to and a baseline taken at start (pod IPs, agent counters), so checks
  can ask "did the IP change?" or "did the DNAT counter rise?".
"""

from __future__ import annotations

import json
import os
import pwd
import time
from pathlib import Path
from typing import Any

import yaml

from emunet import naming


def lab_dir() -> Path:
    """$EMUNET_LAB_DIR, else ~/emunet-lab of the user who ran sudo (not root's home)."""
    env = os.environ.get("EMUNET_LAB_DIR")
    if env:
        return Path(env)
    user = os.environ.get("SUDO_USER")
    if user and os.geteuid() == 0:
        try:
            return Path(pwd.getpwnam(user).pw_dir) / "emunet-lab"
        except KeyError:
            pass
    return Path.home() / "emunet-lab"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    _give_to_sudo_user(path.parent)
    _give_to_sudo_user(path)


def _give_to_sudo_user(path: Path) -> None:
    """Under sudo, leave the learner's own files owned by the learner, not by root."""
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if os.geteuid() == 0 and uid and gid and "EMUNET_LAB_DIR" not in os.environ:
        try:
            os.chown(path, int(uid), int(gid))
        except OSError:
            pass


class Progress:
    """answers.yaml + progress.json in the learner's folder, read and written whole."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or lab_dir()
        self.answers_file = self.folder / "answers.yaml"
        self.progress_file = self.folder / "progress.json"

    # ---- answers ----------------------------------------------------------------------------

    def _answers(self) -> dict[int, dict[str, str]]:
        try:
            doc = yaml.safe_load(self.answers_file.read_text()) or {}
        except FileNotFoundError:
            return {}
        if not isinstance(doc, dict):
            return {}
        return {int(k): {str(t): str(v) for t, v in (v or {}).items()}
                for k, v in doc.items() if isinstance(v, dict | None)}

    def answer(self, lab: int, task: str) -> str | None:
        return self._answers().get(lab, {}).get(task)

    def set_answer(self, lab: int, task: str, value: str) -> None:
        answers = self._answers()
        answers.setdefault(lab, {})[task] = value
        self._save_answers(answers)

    def clear_answers(self, lab: int) -> None:
        answers = self._answers()
        if answers.pop(lab, None) is not None:
            self._save_answers(answers)

    def _save_answers(self, answers: dict[int, dict[str, str]]) -> None:
        head = "# Answers recorded by `emunet lab answer LAB TASK VALUE`, read by `emunet lab " \
               "check LAB`.\n"
        _write(self.answers_file, head + yaml.safe_dump(answers, sort_keys=True))

    # ---- hints and results ------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.progress_file.read_text())
        except (FileNotFoundError, ValueError):
            return {"hints": {}, "results": {}}
        return {"hints": doc.get("hints", {}), "results": doc.get("results", {})}

    def hints_shown(self, lab: int, task: str) -> int:
        return int(self._load()["hints"].get(str(lab), {}).get(task, 0))

    def reveal_hint(self, lab: int, task: str, total: int) -> int:
        """One more hint for the task (up to `total`); returns how many are now shown."""
        doc = self._load()
        per_lab = doc["hints"].setdefault(str(lab), {})
        per_lab[task] = min(total, int(per_lab.get(task, 0)) + 1)
        self._save(doc)
        return per_lab[task]

    def results(self, lab: int) -> dict[str, bool]:
        return dict(self._load()["results"].get(str(lab), {}))

    def set_results(self, lab: int, results: dict[str, bool]) -> None:
        doc = self._load()
        doc["results"][str(lab)] = results
        self._save(doc)

    def _save(self, doc: dict[str, Any]) -> None:
        _write(self.progress_file, json.dumps(doc, indent=1, sort_keys=True) + "\n")


# ---- the running lab (in the cluster's run dir) ---------------------------------------------

def marker_path() -> Path:
    return naming.run_dir() / "lab.json"


def running_lab() -> dict[str, Any] | None:
    """{"lab": id, "started": t, "baseline": {...}} for the lab whose cluster is up, or None."""
    try:
        return json.loads(marker_path().read_text())
    except (FileNotFoundError, ValueError):
        return None


def mark_running(lab: int, baseline: dict[str, Any]) -> None:
    doc = {"lab": lab, "started": time.time(), "baseline": baseline}
    path = marker_path()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, path)
