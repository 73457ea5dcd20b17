"""Events outlive the supervisor that recorded them (emunet.cluster.events): saved to the run
dir at most once a second when changed, read back whole by the next one."""

from __future__ import annotations

from emunet.cluster.events import EventLog


def test_saved_events_are_loaded_back_with_counts_and_times(tmp_path):
    path = tmp_path / "events.json"
    log = EventLog()
    log.record(100.0, "web", "Pod", "a", "Scheduled", "to node-1")
    log.record(101.0, "web", "Pod", "a", "Unhealthy", "probe failed", "Warning")
    log.record(102.0, "web", "Pod", "a", "Unhealthy", "probe failed", "Warning")
    log.maybe_save(path, 102.0)
    again = EventLog()
    assert again.load(path) == 2
    assert again.list() == log.list()
    assert again.list()[1]["count"] == 2 and again.list()[1]["first"] == 101.0


def test_saves_only_when_changed_and_at_most_once_a_second(tmp_path):
    path = tmp_path / "events.json"
    log = EventLog()
    log.maybe_save(path, 10.0)
    assert not path.exists()  # nothing recorded: nothing to write
    log.record(10.0, "web", "Pod", "a", "Scheduled", "x")
    log.maybe_save(path, 10.0)
    log.record(10.2, "web", "Pod", "b", "Scheduled", "y")
    log.maybe_save(path, 10.5)  # within the second: the burst waits
    assert EventLog().load(path) == 1
    log.maybe_save(path, 11.1)
    assert EventLog().load(path) == 2


def test_an_unreadable_file_is_no_reason_not_to_start(tmp_path):
    path = tmp_path / "events.json"
    assert EventLog().load(path) == 0  # none saved
    path.write_text("{not json")
    assert EventLog().load(path) == 0
    path.write_text('[{"namespace": "x"}]')  # fields missing
    assert EventLog().load(path) == 0
