"""The host manifest: write-ahead JSON record of created objects, atomic saves, pid identity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from emunet.host.manifest import HostError, Manifest, process_start_time


def test_new_manifest_is_empty_and_not_written_until_a_change(tmp_path):
    m = Manifest.open(tmp_path / "manifest.json")
    assert m.entries == [] and len(m) == 0
    assert not (tmp_path / "manifest.json").exists()


def test_every_addition_is_saved_and_reloads_in_order(tmp_path):
    path = tmp_path / "run" / "manifest.json"  # parent created on first save
    m = Manifest.open(path)
    m.add_netns("emt-node-1")
    assert json.loads(path.read_text())["entries"] == [{"kind": "netns", "name": "emt-node-1"}]
    m.add_dir("/etc/netns", if_empty=True)
    m.add_dir("/etc/netns/emt-a")
    m.add_netns("emt-a")
    again = Manifest.open(path)
    assert again.entries == m.entries
    assert again.netns() == ["emt-node-1", "emt-a"]
    assert again.dirs() == ["/etc/netns", "/etc/netns/emt-a"]
    assert [e["kind"] for e in again.entries] == ["netns", "dir", "dir", "netns"]
    assert again.entries[1]["if_empty"] is True and again.entries[2]["if_empty"] is False


def test_adding_twice_records_once_and_discard_saves(tmp_path):
    path = tmp_path / "m.json"
    m = Manifest.open(path)
    m.add_netns("x")
    m.add_netns("x")
    assert m.netns() == ["x"]
    m.discard({"kind": "netns", "name": "x"})
    m.discard({"kind": "netns", "name": "never-there"})  # ignored
    assert Manifest.open(path).entries == []


def test_saves_are_atomic_no_temp_files_left(tmp_path):
    m = Manifest.open(tmp_path / "m.json")
    for i in range(20):
        m.add_netns(f"ns{i}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_entries_returns_copies(tmp_path):
    m = Manifest.open(tmp_path / "m.json")
    m.add_netns("a")
    m.entries[0]["name"] = "changed"
    assert m.netns() == ["a"]


def test_concurrent_additions_are_all_recorded(tmp_path):
    path = tmp_path / "m.json"
    m = Manifest.open(path)

    def work(k: int) -> None:
        for i in range(25):
            m.add_netns(f"t{k}-{i}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(Manifest.open(path).netns()) == 100


@pytest.mark.parametrize("text", ["{not json", '{"entries": []}', '{"version": 1}',
                                  '{"version": 1, "entries": {}}', "[]"])
def test_damaged_manifest_is_a_user_facing_error(tmp_path, text):
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(HostError, match="manifest .* is damaged"):
        Manifest.open(path)


def test_process_start_time_of_self_matches_proc_stat():
    start = process_start_time(os.getpid())
    assert isinstance(start, int) and start > 0
    # field 22 of proc(5) stat, counted independently of the implementation's split
    raw = open(f"/proc/{os.getpid()}/stat").read()
    assert int(raw.rsplit(")", 1)[1].split()[19]) == start


def test_process_start_time_handles_odd_comm_names(tmp_path):
    # comm may contain spaces and ')': the parser must split after the LAST ')'.
    exe = tmp_path / "a) b c"
    exe.symlink_to(sys.executable)
    proc = subprocess.Popen([str(exe), "-c", "import time; time.sleep(30)"])
    try:
        assert process_start_time(proc.pid) is not None
        assert process_start_time(proc.pid) >= process_start_time(os.getpid())
    finally:
        proc.kill()
        proc.wait()


def test_process_start_time_none_for_missing_and_zombie():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc_pid = proc.pid
    # wait for it to exit without reaping it: it is a zombie now
    for _ in range(500):
        state = open(f"/proc/{proc_pid}/stat").read().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            break
        threading.Event().wait(0.01)
    assert process_start_time(proc_pid) is None
    proc.wait()
    assert process_start_time(proc_pid) is None


def test_add_process_records_pid_start_time_role_and_netns(tmp_path):
    m = Manifest.open(tmp_path / "m.json")
    m.add_process(os.getpid(), "agent", netns="emt-node-1")
    (e,) = Manifest.open(tmp_path / "m.json").processes()
    assert e == {"kind": "process", "pid": os.getpid(),
                 "start_time": process_start_time(os.getpid()), "role": "agent",
                 "netns": "emt-node-1"}


def test_add_process_refuses_a_pid_that_is_not_running(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    m = Manifest.open(tmp_path / "m.json")
    with pytest.raises(HostError, match="not running"):
        m.add_process(proc.pid, "dns")
    assert m.entries == []
