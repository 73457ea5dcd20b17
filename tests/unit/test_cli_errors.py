"""One error path (emunet.errors): every verb answers a bad flag or a bad argument with exit 2
and one line, `emunet: error: ...`, and never a traceback. The CLI's `main` runs in-process (as
the `emunet` entry point calls it) with no cluster up (a fresh run dir), so no check here
depends on a cluster; one case runs the real `python -m emunet` too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from emunet.cli.main import main
from emunet.cli.parser import parser

ROOT = Path(__file__).resolve().parents[2]


def verbs() -> list[list[str]]:
    """Every command and sub-command the parser knows (`get`, `lab start`, ...)."""
    out = []
    sub = next(a for a in parser()._actions if a.dest == "verb")
    for name, p in sub.choices.items():
        nested = [a for a in p._actions if a.__class__.__name__ == "_SubParsersAction"]
        if nested:
            out += [[name, n] for n in nested[0].choices]
        else:
            out.append([name])
    return out


# Bad arguments that every verb can judge without a cluster (checked before the state is read).
BAD_ARGUMENTS = [
    ["get", "nosuchkind"],
    ["exec", "-n", "default", "some-pod"],  # no command
    ["exec", "-n", "default", "some-pod", "ls", "--", "-l"],  # arguments on both sides of --
    ["exec", "--outside", "some-pod", "--", "curl", "-s", "http://10.0.0.1"],  # no pod outside
    ["exec", "--outside", "--"],  # no command
    ["delete"],
    ["validate", "/nonexistent/emunet.yaml"],
    ["up", "/nonexistent/emunet.yaml"],
    ["scale", "foo/x", "--replicas", "1"],
    ["scale", "deployment/x", "--replicas", "-1"],
    ["logs", "-n", "x", "pod", "--tail", "abc"],
    ["label", "pod", "x", "bad!key=1"],
    ["probe", "--ports", "abc"],
    ["probe", "--protocols", "sctp"],
    ["trace", "some-pod", "web:abc"],
    ["node", "reboot", "node-1"],
    ["link", "set"],
    ["link", "set", "node-1", "--delay", "5parsecs"],
    ["observe", "--verdict", "MAYBE"],
    ["observe", "--since", "yesterday"],
    ["observe", "--type", "nonsense"],
    ["lab", "start", "99"],
    ["lab", "hint", "1", "no-such-task"],
    ["nosuchverb"],
]


@pytest.fixture
def run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EMUNET_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("EMUNET_PREFIX", "emtcli")

    def go(args: list[str]) -> subprocess.CompletedProcess:
        try:
            code = main(args)
        except SystemExit as e:  # argparse's own exit
            code = e.code if isinstance(e.code, int) else 1
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return go


def assert_one_line_error(p: subprocess.CompletedProcess, args: list[str]) -> None:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, (args, p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, (args, p.stderr)
    assert len(lines) == 1 and lines[0].startswith("emunet: "), (args, p.stderr)


def test_the_parser_knows_the_verbs_a_user_types():
    names = {" ".join(v) for v in verbs()}
    assert {"up", "down", "get", "exec", "observe", "trace", "lab start", "link"} <= names


@pytest.mark.parametrize("verb", verbs(), ids=" ".join)
def test_every_verb_rejects_a_bad_flag_with_one_line_and_exit_2(verb, run):
    assert_one_line_error(run([*verb, "--no-such-flag"]), verb)


@pytest.mark.parametrize("args", BAD_ARGUMENTS, ids=" ".join)
def test_bad_arguments_exit_2_with_one_line(args, run):
    assert_one_line_error(run(args), args)


def test_no_cluster_is_a_failure_not_bad_input(run):
    p = run(["get", "pods"])
    assert p.returncode == 1 and p.stderr.strip() == (
        "emunet: error: no cluster is up: start one with `sudo emunet up FILE`")


def test_exec_takes_everything_after_dashes_verbatim(run, monkeypatch):
    """`--` ends emunet's options: what follows is the command, `--` and all (argparse alone
    drops it); before it, only the pod."""
    seen = []
    monkeypatch.setattr("emunet.cli.query.need_root", lambda: None)
    monkeypatch.setattr("emunet.cli.query.load_state", lambda: seen.append("state"))
    monkeypatch.setattr("os.execvp", lambda f, argv: seen.append(argv) or 0)
    run(["exec", "--outside", "--", "curl", "--", "-s"])
    assert seen == ["state", ["ip", "netns", "exec", "emtcli-outside", "curl", "--", "-s"]]


def test_the_real_command_line_too(tmp_path):
    env = {**os.environ, "EMUNET_RUN_DIR": str(tmp_path / "run"), "EMUNET_PREFIX": "emtcli"}
    for args in (["probe", "--ports", "abc"], ["get", "--no-such-flag"]):
        p = subprocess.run([sys.executable, "-m", "emunet", *args], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert_one_line_error(p, args)
