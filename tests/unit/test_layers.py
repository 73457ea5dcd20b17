"""The tree's layers (DESIGN.md section 6): packages import only packages below them, no import
cycle, and no module takes another module's private names.

Read with the standard library's `ast` from the source files, so it sees every import, also the
ones inside functions and under `if TYPE_CHECKING:` (a deferred import is still a dependency).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "emunet"

# The data flow, bottom up. A module may import its own package, a leaf, or a package of a lower
# rank; packages of one rank (agent, l7) do not import each other.
LEAVES = {"emunet", "emunet.errors", "emunet.naming", "emunet.packets", "emunet.model",
          "emunet.native",
          "emunet.control", "emunet.nodeproc"}
RANKS = {
    "emunet.config": 1,
    "emunet.state": 2,
    "emunet.policy": 3,
    "emunet.datapath": 4,
    "emunet.observe": 5,
    "emunet.dns": 6,
    "emunet.host": 7,
    "emunet.agent": 8,
    "emunet.l7": 8,
    "emunet.cluster": 9,
    "emunet.api": 10,
    "emunet.ui": 11,
    "emunet.labs": 10,
    "emunet.cli": 12,
    "emunet.__main__": 13,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def layer_of(mod: str) -> str | None:
    """The leaf module or package a module belongs to (None: not in any layer)."""
    for leaf in LEAVES - {"emunet"}:
        if mod == leaf or mod.startswith(leaf + "."):
            return leaf
    if mod == "emunet":
        return "emunet"
    for pkg in RANKS:
        if mod == pkg or mod.startswith(pkg + "."):
            return pkg
    return None


def imports(mod: str, path: Path, known: set[str]) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every emunet import in the file. A name
    that is itself a module (`from emunet import naming`) is an import of that module."""
    is_pkg = path.name == "__init__.py"
    package = mod if is_pkg else mod.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("emunet")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("emunet"):
                continue
            names = []
            for a in node.names:
                if f"{target}.{a.name}" in known:
                    out.append((f"{target}.{a.name}", [], node.lineno))
                else:
                    names.append(a.name)
            if names:
                out.append((target, names, node.lineno))
    return out


def graph() -> tuple[dict[str, Path], dict[str, list[tuple[str, list[str], int]]]]:
    mods = modules()
    known = set(mods)
    return mods, {m: imports(m, p, known) for m, p in mods.items()}


def upward_imports(mods, edges) -> list[str]:
    bad = []
    for m, deps in edges.items():
        src = layer_of(m)
        if src is None:
            bad.append(f"{m}: not in any layer (add it to a package of tests/unit/test_layers.py)")
            continue
        for dep, _, line in deps:
            dst = layer_of(dep)
            if dst is None or dst == src or dst in LEAVES:
                continue
            if src in LEAVES or RANKS[dst] >= RANKS[src]:
                bad.append(f"{mods[m].relative_to(ROOT)}:{line}: {m} imports {dep}, "
                           f"which is not below it")
    return bad


def cycles(edges) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    adj = defaultdict(set)
    for m, deps in edges.items():
        for dep, _, _ in deps:
            if dep in edges and dep != m:
                adj[m].add(dep)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(adj[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def private_reach_ins(mods, edges) -> list[str]:
    """`from x import _name` across modules, and `alias._name` on an imported module."""
    bad = []
    for m, deps in edges.items():
        for dep, names, line in deps:
            for n in names:
                if n.startswith("_") and not n.startswith("__") and dep != m:
                    bad.append(f"{mods[m].relative_to(ROOT)}:{line}: {m} takes {dep}.{n}")
        tree = ast.parse(mods[m].read_text())
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("emunet"):
                for a in node.names:
                    if f"{node.module}.{a.name}" in mods:
                        aliases.add(a.asname or a.name)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("emunet") and a.asname:
                        aliases.add(a.asname)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                bad.append(f"{mods[m].relative_to(ROOT)}:{node.lineno}: "
                           f"{node.value.id}.{node.attr}")
    return bad


@pytest.fixture(scope="module")
def tree():
    return graph()


def test_every_import_points_down(tree):
    assert upward_imports(*tree) == []


def test_no_import_cycle(tree):
    assert cycles(tree[1]) == []


def test_no_module_takes_another_modules_private_names(tree):
    assert private_reach_ins(*tree) == []


def test_the_checks_catch_what_they_are_for():
    """The checks themselves: an upward import, a cycle and a private name are all found."""
    mods = {"emunet.state.a": ROOT / "emunet/state/a.py", "emunet.cli.b": ROOT / "emunet/cli/b.py"}
    edges = {"emunet.state.a": [("emunet.cli.b", ["_x"], 3)],
             "emunet.cli.b": [("emunet.state.a", [], 1)]}
    assert len(upward_imports(mods, edges)) == 1
    assert cycles(edges) == [["emunet.cli.b", "emunet.state.a"]]
    assert layer_of("emunet.flat_module") is None
