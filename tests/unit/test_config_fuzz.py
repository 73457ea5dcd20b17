"""Property tests: whatever a user does to a config file, emunet.config answers with a Config
or a ConfigError (never another exception), and a Config it accepts can always be planned."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emunet import model
from emunet.config import ConfigError, load_config_text
from emunet.state.plan import plan

STORY = (Path(__file__).resolve().parents[2] / "configs" / "two-node.yaml").read_text()
STORY_LINES = STORY.splitlines()

# 100 examples in CI (about 15 s); EMUNET_FUZZ_EXAMPLES=5000 for a deep run
FAST = settings(max_examples=int(os.environ.get("EMUNET_FUZZ_EXAMPLES", "100")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["None", "node-1", "node-9", "10.43.0.10", "10.42.0.0/16", "1.2.3.4/33",
                     "v1", "Pod", "blog-website", "http", "UDP", "", "-", "A_B", "x" * 70]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)


def check(text: str) -> None:
    try:
        cfg = load_config_text(text, "fuzz.yaml")
    except ConfigError as e:
        assert e.errors and all(isinstance(x, ConfigError) for x in e.errors)
        assert str(e)
        return
    assert isinstance(cfg, model.Config)
    plan(cfg)  # a validated config is always plannable (no StateError)


@FAST
@given(st.data())
def test_line_mutations(data: st.DataObject) -> None:
    lines = list(STORY_LINES)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        op = data.draw(st.sampled_from(["delete", "duplicate", "indent", "dedent", "garble",
                                        "swap", "insert"]))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "indent":
            lines[i] = "  " + lines[i]
        elif op == "dedent":
            lines[i] = lines[i][2:]
        elif op == "swap":
            j = data.draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "insert":
            lines.insert(i, data.draw(st.text(max_size=20)))
        else:
            pos = data.draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:pos] + data.draw(st.text(max_size=4)) + lines[i][pos:]
        if not lines:
            break
    check("\n".join(lines))


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@FAST
@given(st.data())
def test_structure_mutations(data: st.DataObject) -> None:
    docs = list(yaml.safe_load_all(STORY))
    for _ in range(data.draw(st.integers(1, 3))):
        d = data.draw(st.integers(0, len(docs) - 1))
        path = data.draw(st.sampled_from(_paths(docs[d])))
        new = data.draw(values)
        if not path:
            docs[d] = new
            continue
        parent = docs[d]
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = new
    check(yaml.safe_dump_all(docs, allow_unicode=True))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    check(text)
