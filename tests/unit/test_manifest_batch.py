"""The manifest at scale: a batch recorded ahead with one write, removals saved once per
`deferred` block, and recording or discarding one entry without scanning the others."""

from __future__ import annotations

import json

from emunet.host.manifest import Manifest


def _saves(m: Manifest, monkeypatch) -> list[int]:
    calls: list[int] = []
    real = m.save
    monkeypatch.setattr(m, "save", lambda: calls.append(1) or real())
    return calls


def _on_disk(m: Manifest) -> list[dict]:
    return json.loads(m.path.read_text())["entries"]


def test_record_ahead_writes_the_batch_once_and_later_adds_find_it(tmp_path, monkeypatch):
    m = Manifest.open(tmp_path / "manifest.json")
    saves = _saves(m, monkeypatch)
    batch = [{"kind": "netns", "name": f"p-{i}"} for i in range(500)]
    m.record_ahead(batch)
    assert len(saves) == 1 and _on_disk(m) == batch
    for i in range(500):
        m.add_netns(f"p-{i}")  # already listed: no write
    assert len(saves) == 1
    m.add_netns("new")  # a new entry is still written ahead at once
    assert len(saves) == 2 and _on_disk(m)[-1] == {"kind": "netns", "name": "new"}


def test_deferred_removals_are_saved_once_at_the_end(tmp_path, monkeypatch):
    m = Manifest.open(tmp_path / "manifest.json")
    m.record_ahead([{"kind": "netns", "name": f"p-{i}"} for i in range(100)])
    saves = _saves(m, monkeypatch)
    with m.deferred():
        for e in reversed(m.entries[1:]):
            m.discard(e)
        assert not saves and len(_on_disk(m)) == 100  # still listed until the block ends
    assert len(saves) == 1 and _on_disk(m) == [{"kind": "netns", "name": "p-0"}]


def test_an_add_inside_a_deferred_block_is_still_written_ahead(tmp_path):
    m = Manifest.open(tmp_path / "manifest.json")
    with m.deferred():
        m.add_dir("/etc/netns/x")
        assert _on_disk(m) == [{"kind": "dir", "path": "/etc/netns/x", "if_empty": False}]


def test_a_reopened_manifest_keeps_the_order(tmp_path):
    m = Manifest.open(tmp_path / "manifest.json")
    m.add_netns("b")
    m.add_netns("a")
    m.add_dir("/d")
    again = Manifest.open(tmp_path / "manifest.json")
    assert [e.get("name", e.get("path")) for e in again.entries] == ["b", "a", "/d"]
    again.discard({"kind": "netns", "name": "a"})
    assert [e.get("name", e.get("path")) for e in Manifest.open(m.path).entries] == ["b", "/d"]
