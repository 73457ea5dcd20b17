"""Chooses, at import time, between the mypyc-compiled hot modules and their Python sources.

The Python sources are the only source; `scripts/build-native` (run by `scripts/setup` when a
C compiler is present) compiles the modules in `MODULES` with mypyc into extension modules next
to their .py files (git-ignored), and records in `MANIFEST` a hash of the sources it compiled.
Python's FileFinder prefers an extension module to a .py of the same name, so the compiled build
is what an import gets, unless the finder `install` puts first on `sys.meta_path` says pure:

  - `EMUNET_PURE=1` in the environment (the agents inherit it: tests run both builds);
  - no manifest, a missing extension module, or another Python or mypyc than the build's;
  - a stale build: a compiled module's source changed since the build (compiled code would
    silently run the old source: the developers edit the .py, and the e2e tests start
    `python -m emunet` from the tree), which also prints one warning.

The choice is made once, for every module in `MODULES` together: mypyc compiles them as one
group whose native classes and calls bind across modules, so a mix would run stale code too.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

PKG = Path(__file__).resolve().parent
# The hot path: the datapath (the pipeline, the fast path, conntrack, NAT), the packet helpers
# it calls per packet, and the agent's event hook around it. A package __init__ stays Python.
MODULES = tuple(sorted(
    [f"emunet.datapath.{p.stem}" for p in (PKG / "datapath").glob("*.py")
     if p.stem != "__init__"]
    + ["emunet.packets", "emunet.observe.hook", "emunet.observe.record"]))
MANIFEST = PKG / "_native.json"
GROUP = "emunet._native"  # mypyc's shared library of the group: emunet/_native__mypyc.*.so
ENV_PURE = "EMUNET_PURE"

_decision: tuple[bool, str] | None = None


def source(module: str) -> Path:
    return PKG.parent.joinpath(*module.split(".")).with_suffix(".py")


def extension(module: str) -> Path:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return PKG.parent.joinpath(*module.split(".")).with_name(module.rsplit(".", 1)[1] + suffix)


def sources_hash() -> str:
    """One hash of every compiled module's name and source bytes."""
    h = hashlib.sha256()
    for m in MODULES:
        h.update(m.encode() + b"\0" + source(m).read_bytes() + b"\0")
    return h.hexdigest()


def abi() -> str:
    return f"{sys.implementation.cache_tag} {importlib.machinery.EXTENSION_SUFFIXES[0]}"


def _decide() -> tuple[bool, str]:
    """(compiled?, why): the build every module of MODULES is imported from."""
    if os.environ.get(ENV_PURE, "") not in ("", "0"):
        return False, f"pure Python ({ENV_PURE}=1)"
    try:
        doc: dict[str, Any] = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return False, "pure Python (no compiled build: scripts/build-native)"
    if doc.get("abi") != abi() or sorted(doc.get("modules", ())) != list(MODULES):
        return False, "pure Python (the compiled build is for another Python or module set: " \
            "scripts/build-native)"
    if any(not extension(m).exists() for m in MODULES):
        return False, "pure Python (the compiled build is incomplete: scripts/build-native)"
    try:
        fresh = doc.get("sources") == sources_hash()
    except OSError:
        fresh = False
    if not fresh:
        why = "pure Python (the compiled build is stale, its sources changed since: " \
            "scripts/build-native)"
        sys.stderr.write(f"emunet: warning: {why.removeprefix('pure Python (')[:-1]}; "
                         "running the pure Python modules\n")
        return False, why
    return True, f"compiled (mypyc {doc.get('mypyc', '?')})"


def decision() -> tuple[bool, str]:
    global _decision
    if _decision is None:
        _decision = _decide()
    return _decision


class _PureFinder:
    """Meta path finder: the .py source of a module in MODULES whenever the build is pure
    (otherwise None, and the path's FileFinder picks the extension module)."""

    @staticmethod
    def find_spec(fullname: str, path: Any = None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _MODULE_SET or decision()[0]:
            return None
        return importlib.util.spec_from_file_location(fullname, source(fullname))

    @staticmethod
    def invalidate_caches() -> None:
        pass


_MODULE_SET = frozenset(MODULES)


def install() -> None:
    if not any(f is _PureFinder for f in sys.meta_path):
        sys.meta_path.insert(0, _PureFinder)  # type: ignore[arg-type]


def running() -> str:
    """What the imported hot modules are: 'compiled (mypyc X)' or 'pure Python (why)'. Only
    what was really loaded counts (a module's file is an extension module, or not)."""
    loaded = [sys.modules[m] for m in MODULES if m in sys.modules]
    compiled = [m for m in loaded if str(getattr(m, "__file__", "")).endswith(".so")]
    if loaded and len(compiled) == len(loaded):
        return decision()[1] if decision()[0] else "compiled"
    if compiled:
        return f"mixed ({len(compiled)} of {len(loaded)} modules compiled)"
    return decision()[1] if not decision()[0] else "pure Python"
