"""A reader's copy of the published state, kept current from the supervisor's deltas.

The supervisor (`store.Publisher`) writes the whole state (`state.json`) and then the delta
from the previous generation (`delta.json`: {"base": N-1, "generation": N, "sections": ...},
emunet.state.delta). A reader at generation N-1 decodes only what the delta sets; one at any
other generation (it missed a publish, or it just started) reads the whole state, so a lost
delta costs time, never correctness. `load` says what changed (`delta.changed_keys`, or None
for "everything"), so a reader can recompute only that.

The file a reader compares against to notice a publish without its SIGHUP (`changed`) is the
delta when there is one: every publish renames a new delta into place after the state, so its
stamp changes on every publish; before the supervisor's first publish, the state file's.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from emunet.state import codec, delta, store
from emunet.state.cluster import ClusterState

Changes = dict[str, set]


def apply_state(d: dict[str, Any], old: ClusterState) -> ClusterState:
    """A new state: `old` with delta `d` (emunet.state.delta's form) applied. `old` is left as
    it was (a shallow copy; only the tables the delta touches are copied), so a reader that
    still holds it (the API's watch compares the old view with the new) sees no change."""
    st = copy.copy(old)
    for name, sec in d["sections"].items():
        if name in codec.KEYED_DECODERS:
            attr, decode, key = codec.KEYED_DECODERS[name]
            table = dict(getattr(st, attr))
            setattr(st, attr, table)
            for k in sec.get("del", ()):
                table.pop(_state_key(name, k), None)
            for item in sec.get("set", ()):
                obj = decode(item)
                table[key(obj)] = obj
            if "order" in sec:
                setattr(st, attr, {sk: table[sk] for sk in
                                   (_state_key(name, k) for k in sec["order"])})
        elif name in codec.MAP_DECODERS:
            decode_value = codec.MAP_DECODERS[name]
            table = dict(getattr(st, name))
            setattr(st, name, table)
            for k in sec.get("del", ()):
                table.pop(k, None)
            for k, v in sec.get("set", {}).items():
                table[k] = decode_value(v)
            if "order" in sec:
                setattr(st, name, {k: table[k] for k in sec["order"]})
        elif "whole" in sec:
            codec.decode_whole(st, name, sec["whole"])
        elif name not in delta.WHOLE:
            raise delta.DeltaError(f"delta section {name!r} not classified")
        if sec.get("absent") and name in codec.MAP_DECODERS:
            setattr(st, name, {})
    st.forget_derived()
    return st


def _state_key(section: str, k: list) -> Any:
    """A delta's key (a JSON array) as the ClusterState dict keys it."""
    return k[0] if section == "namespaces" else tuple(k)


class Follower:
    """The newest published state for one reader (agent, proxy, DNS responder, API)."""

    def __init__(self, state_path: Path | str) -> None:
        self.state_path = Path(state_path)
        self.delta_path = store.delta_path(self.state_path)
        self.state: ClusterState | None = None
        self.seen: store.Stamp | None = None
        self.full_loads = self.delta_loads = 0  # how each load went (logs, tests)

    def current(self) -> store.Stamp | None:
        """The stamp `changed` compares: the delta's, else the state file's."""
        return store.stamp(self.delta_path) or store.stamp(self.state_path)

    def changed(self) -> bool:
        """A publish this reader has not loaded (checked once a second: one or two stats)."""
        now = self.current()
        return now is not None and now != self.seen

    def load(self) -> Changes | None:
        """Bring `state` up to the newest publish. Returns the keys changed per section
        ({} when nothing was new), or None when the whole state was read."""
        d, dstamp = self._read_delta()
        st = self.state
        if d is not None and st is not None:
            if d.get("generation") == st.generation:
                self.seen = dstamp
                return {}
            if d.get("base") == st.generation:
                try:
                    self.state = apply_state(d, st)
                except (KeyError, TypeError, ValueError):
                    pass  # a delta this state cannot take: the full state below is right
                else:
                    self.seen = dstamp
                    self.delta_loads += 1
                    return delta.changed_keys(d)
        self.state, sstamp = store.read_stamped(self.state_path)
        self.seen = dstamp if d is not None else sstamp
        self.full_loads += 1
        return None

    def _read_delta(self) -> tuple[dict | None, store.Stamp | None]:
        try:
            with open(self.delta_path, "rb") as f:
                st = os.fstat(f.fileno())
                text = f.read()
        except FileNotFoundError:
            return None, None
        try:
            d = json.loads(text)
        except ValueError:
            return None, None
        return (d if isinstance(d, dict) else None), store.stamp_of(st)
