"""The state codec's own asdict writes exactly what `dataclasses.asdict` wrote, for every
shipped config (each object kind the state holds), and the state reads back the same."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from emunet.config import load_config
from emunet.state import codec
from emunet.state.plan import plan

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml")) + sorted(
    (ROOT / "tests" / "e2e" / "configs").glob("*.yaml"))


# the dual-stack fields the codec leaves out while they hold their defaults (issue 19)
_OPTIONAL = {n: list(d) if isinstance(d, tuple) else d
             for names in codec._OPTIONAL.values() for n, d in names.items()}


def _strip(v):
    if isinstance(v, dict):
        return {k: _strip(x) for k, x in v.items()
                if not (k in _OPTIONAL and x == _OPTIONAL[k])}
    if isinstance(v, list):
        return [_strip(x) for x in v]
    return v


def _slow(st) -> str:
    real = codec._asdict
    try:
        codec._asdict = dataclasses.asdict
        return codec.dumps(_strip(json.loads(codec.to_json(st))))
    finally:
        codec._asdict = real


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_fast_asdict_writes_what_dataclasses_asdict_wrote(path):
    try:
        st = plan(load_config(str(path)))
    except Exception:
        pytest.skip("not a plannable config on its own")
    fast = codec.to_json(st)
    assert fast == _slow(st)
    assert codec.to_json(codec.from_json(fast)) == fast
    assert json.loads(fast)["pods"]


def test_publisher_memo_writes_what_a_fresh_to_dict_writes():
    """store.Publisher's pod-spec memo (codec.to_dict(st, memo)): a replaced pod spec (a
    relabel) is written anew, and pods removed are forgotten."""
    st = plan(load_config(str(ROOT / "configs" / "two-node.yaml")))
    memo: codec.PodMemo = {}
    assert codec.to_dict(st, memo) == codec.to_dict(st)
    key = next(iter(st.pods))
    ps = st.pods[key]
    ps.pod = dataclasses.replace(ps.pod, labels={**ps.pod.labels, "tier": "x"})
    assert codec.to_dict(st, memo) == codec.to_dict(st)
    assert codec.to_dict(st, memo)["pods"][0]["pod"]["labels"]["tier"] == "x"
    for _ in range(3 * len(st.pods) + 70):  # many replaced specs: the memo stays bounded
        ps.pod = dataclasses.replace(ps.pod)
        codec.to_dict(st, memo)
    assert len(memo) <= 2 * len(st.pods) + 65
