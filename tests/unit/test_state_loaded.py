"""emunet.state.loaded: the generation each reader of the state file reports, and the
supervisor's bounded wait for all of them (what `apply`, `delete`, `label` and `link` wait on
before they answer). Pure: files in a temporary dir, an asyncio loop."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time

from emunet.state import codec, loaded
from tests.unit.dns_cluster import cluster
from tests.unit.dns_loopback import free_port
from tests.waiting import wait_for


def test_report_and_read_back(tmp_path):
    assert loaded.generation(tmp_path, "agent-node-1") is None  # never reported
    loaded.report(tmp_path, "agent-node-1", 7)
    assert loaded.generation(tmp_path, "agent-node-1") == 7
    loaded.report(tmp_path, "agent-node-1", 8)  # replaced, not appended
    assert loaded.generation(tmp_path, "agent-node-1") == 8
    p = loaded.path(tmp_path, "agent-node-1")
    assert p.name == "loaded-agent-node-1" and stat.S_IMODE(p.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["loaded-agent-node-1"]  # no temp file left
    p.write_text("garbage")
    assert loaded.generation(tmp_path, "agent-node-1") is None


def test_behind_names_the_readers_without_the_generation(tmp_path):
    loaded.report(tmp_path, "agent-node-1", 5)
    loaded.report(tmp_path, "dns", 4)
    roles = ["agent-node-1", "dns", "l7proxy-node-1"]  # the proxy never reported
    assert loaded.behind(tmp_path, roles, 4) == ["l7proxy-node-1"]
    assert loaded.behind(tmp_path, roles, 5) == ["dns", "l7proxy-node-1"]
    assert loaded.behind(tmp_path, roles, 3) == ["l7proxy-node-1"]  # a later state counts


def test_the_generation_is_part_of_the_state_file():
    st = cluster()
    assert st.generation == 0  # as `up` writes it
    st.generation = 12
    assert codec.from_json(codec.to_json(st)).generation == 12
    doc = codec.to_dict(st)
    del doc["generation"]  # a state file written before generations existed
    assert codec.from_dict(doc).generation == 0


async def test_wait_returns_as_soon_as_every_reader_caught_up(tmp_path):
    for role in ("agent-node-1", "dns"):
        loaded.report(tmp_path, role, 1)

    async def reload_later() -> None:
        await asyncio.sleep(0.05)
        loaded.report(tmp_path, "agent-node-1", 2)
        await asyncio.sleep(0.05)
        loaded.report(tmp_path, "dns", 2)

    t0 = time.monotonic()
    task = asyncio.ensure_future(reload_later())
    late = await loaded.wait(tmp_path, 2, lambda: ["agent-node-1", "dns"], timeout=5.0)
    await task
    assert late == [] and time.monotonic() - t0 < 2.0  # not the timeout


async def test_wait_is_bounded_and_names_who_is_late(tmp_path):
    loaded.report(tmp_path, "agent-node-1", 3)
    t0 = time.monotonic()
    late = await loaded.wait(tmp_path, 3, lambda: ["agent-node-1", "agent-node-2"], 0.2)
    assert late == ["agent-node-2"] and 0.2 <= time.monotonic() - t0 < 2.0


async def test_a_reader_that_is_gone_is_not_waited_for(tmp_path):
    running = ["agent-node-1", "agent-node-2"]  # agent-node-2 never reports: it died

    async def dies() -> None:
        await asyncio.sleep(0.05)
        running.remove("agent-node-2")

    loaded.report(tmp_path, "agent-node-1", 9)
    task = asyncio.ensure_future(dies())
    assert await loaded.wait(tmp_path, 9, lambda: list(running), timeout=5.0) == []
    await task


def test_dns_server_reports_each_state_it_loads_without_a_query(tmp_path):
    """The responder as the supervisor runs it: it reports the state it started with, and
    after SIGHUP the new one, soon, with no query to trigger its reload."""
    state = tmp_path / "state.json"
    st = cluster()
    st.generation = 4
    state.write_text(codec.to_json(st))
    proc = subprocess.Popen(
        [sys.executable, "-m", "emunet.dns.server", "--state", str(state),
         "--listen", "127.0.0.1", "--port", str(free_port())],
        stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        wait_for(lambda: loaded.generation(tmp_path, "dns") == 4, 10,
                 "the responder to report the state it started with")
        st.generation = 5
        state.write_text(codec.to_json(st))
        proc.send_signal(signal.SIGHUP)  # as the supervisor's publish does
        t0 = time.monotonic()
        wait_for(lambda: loaded.generation(tmp_path, "dns") == 5, 5,
                 "the responder to report the state it reloaded")
        print(f"\nDNS responder reported the reloaded state after "
              f"{(time.monotonic() - t0) * 1000:.0f} ms")
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0, proc.stderr.read() if proc.stderr else ""
