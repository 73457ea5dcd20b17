"""Config input is bounded (issue 15 §3): a file larger than the cap is refused after reading
no more than the cap (`validate /dev/zero` used to read until memory ran out), errors are
capped per file ("... and N more"), an echoed value is cut, and a NUL byte is reported at its
line and column; all of them exit 2 with one located message."""

from __future__ import annotations

import pytest

from emunet import config
from emunet.cli.main import main
from emunet.config import ConfigError, load_config, load_config_text
from emunet.config import errors as cerrors

CLUSTER = ("apiVersion: emunet/v1alpha1\nkind: Cluster\nmetadata: {name: x}\n"
           "spec: {nodes: [{name: n1}]}\n")


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EMUNET_RUN_DIR", str(tmp_path / "run"))

    def go(*args: str) -> tuple[int, str]:
        code = main(list(args))
        return code, capsys.readouterr().err
    return go


def test_dev_zero_is_refused_after_the_cap(cli, monkeypatch):
    reads = []
    real_open = open

    class Spy:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def read(self, n=-1):
            reads.append(n)
            return self.f.read(n)

    monkeypatch.setattr("builtins.open", lambda p, m="r", *a, **k: Spy(real_open(p, m, *a, **k))
                        if p == "/dev/zero" else real_open(p, m, *a, **k))
    code, err = cli("validate", "/dev/zero")
    assert code == 2 and reads == [config.MAX_BYTES + 1]
    assert err == ("emunet: /dev/zero: the config is larger than 8 MiB (emunet reads at most "
                   "8388608 bytes) — split it into several files, or is it the right file?\n")


def test_a_big_file_is_refused_with_its_name(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "MAX_BYTES", 1000)
    f = tmp_path / "big.yaml"
    f.write_text(CLUSTER + "# " + "x" * 2000 + "\n")
    with pytest.raises(ConfigError, match=r"big\.yaml: the config is larger than"):
        load_config(f)
    with pytest.raises(ConfigError, match="the config is larger than"):
        load_config_text(f.read_text(), "stdin")


def test_errors_are_capped_with_a_count_of_the_rest(tmp_path, cli):
    f = tmp_path / "empty.yaml"
    f.write_text(CLUSTER + "---\n{}\n" * 100_000)  # 2 errors each (apiVersion, kind)
    code, err = cli("validate", str(f))
    lines = err.splitlines()
    assert code == 2 and len(lines) == cerrors.MAX_ERRORS + 1
    assert lines[-1] == f"{f}: ... and {200_000 - cerrors.MAX_ERRORS} more errors"
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert len(e.value.errors) == cerrors.MAX_ERRORS and e.value.more == 199_950


def test_an_echoed_value_is_cut(cli, tmp_path):
    f = tmp_path / "long.yaml"
    f.write_text(CLUSTER + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n"
                 "  restartPolicy: " + "A" * 2 ** 20 + "\n  containers: [{name: c, image: x}]\n")
    code, err = cli("validate", str(f))
    assert code == 2 and len(err) < 700, len(err)
    assert err.startswith(f"emunet: {f}:10: spec.restartPolicy: must be one of Always, ")
    assert "characters left out" in err
    assert err.rstrip().endswith("known values: Always, Never, OnFailure")


def test_a_nul_byte_is_reported_at_its_line_and_column(cli, tmp_path):
    f = tmp_path / "nul.yaml"
    f.write_bytes(CLUSTER.encode() + b"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: a\0b\n")
    code, err = cli("validate", str(f))
    assert code == 2
    assert err.startswith(f"emunet: {f}:9: column 10: character #x0000 is not allowed in YAML")
