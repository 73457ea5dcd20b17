"""The choice between the compiled hot modules and their sources (emunet.native): EMUNET_PURE,
a missing or stale build fall back to the .py files, never to old compiled code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emunet import native

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake complete build: a manifest of the real sources and an 'extension' per module."""
    manifest = tmp_path / "_native.json"
    monkeypatch.setattr(native, "MANIFEST", manifest)
    monkeypatch.setattr(native, "extension", lambda m: tmp_path / f"{m}.so")
    for m in native.MODULES:
        (tmp_path / f"{m}.so").write_bytes(b"")
    manifest.write_text(json.dumps({"abi": native.abi(), "mypyc": "1.19.1",
                                    "modules": list(native.MODULES),
                                    "sources": native.sources_hash()}))
    monkeypatch.delenv(native.ENV_PURE, raising=False)
    return manifest


def test_a_fresh_complete_build_is_chosen(build: Path) -> None:
    assert native._decide() == (True, "compiled (mypyc 1.19.1)")


def test_emunet_pure_wins_over_a_fresh_build(build: Path, monkeypatch) -> None:
    monkeypatch.setenv(native.ENV_PURE, "1")
    assert native._decide() == (False, "pure Python (EMUNET_PURE=1)")
    monkeypatch.setenv(native.ENV_PURE, "0")
    assert native._decide()[0]


def test_a_stale_build_falls_back_to_the_sources_with_a_warning(build: Path, capsys) -> None:
    doc = json.loads(build.read_text())
    build.write_text(json.dumps({**doc, "sources": "0" * 64}))  # a .py edited after the build
    compiled, why = native._decide()
    assert not compiled and "stale" in why
    assert "warning" in capsys.readouterr().err


def test_no_incomplete_or_foreign_build_is_used(build: Path, tmp_path: Path) -> None:
    (tmp_path / f"{native.MODULES[0]}.so").unlink()
    assert native._decide() == (False, "pure Python (the compiled build is incomplete: "
                                       "scripts/build-native)")
    doc = json.loads(build.read_text())
    build.write_text(json.dumps({**doc, "abi": "cpython-39"}))
    assert not native._decide()[0]
    build.unlink()
    assert not native._decide()[0]


def test_the_hot_modules_are_the_datapath_packets_and_the_hook() -> None:
    assert "emunet.datapath.fastpath" in native.MODULES
    assert {"emunet.packets", "emunet.observe.hook"} <= set(native.MODULES)
    assert "emunet.datapath" not in native.MODULES  # a package's __init__ stays Python
    assert all(native.source(m).is_file() for m in native.MODULES)


def _loaded(env: dict[str, str]) -> str:
    code = ("import emunet.observe.hook, emunet.datapath.pipeline as p; from emunet import "
            "native; print(p.__file__); print(native.running())")
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env, "PYTHONPATH":
                          str(ROOT)}, capture_output=True, text=True, check=True).stdout


def test_emunet_pure_imports_the_sources_in_a_new_process() -> None:
    out = _loaded({native.ENV_PURE: "1"}).splitlines()
    assert out[0].endswith("pipeline.py") and out[1] == "pure Python (EMUNET_PURE=1)"


@pytest.mark.skipif(not native.decision()[0], reason="no fresh compiled build in this tree "
                    "(scripts/build-native)")
def test_the_compiled_build_is_what_a_new_process_imports() -> None:
    out = _loaded({native.ENV_PURE: ""}).splitlines()
    assert out[0].endswith(".so") and out[1].startswith("compiled (mypyc ")
