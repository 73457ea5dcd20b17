"""Conntrack.to_json (the agent's snapshot text, emunet.agent.ctstore) is exactly the JSON of
to_records, whatever the connections' state, names and deadlines."""

from __future__ import annotations

import json

import pytest

from emunet.datapath.conntrack import Conn, Conntrack


def _table() -> Conntrack:
    ct = Conntrack()
    for i in range(200):
        port = (i + 1000).to_bytes(2, "big")
        ct.add(Conn(6 if i % 3 else 17, (bytes([10, 42, 1, 3]), bytes([10, 43, 0, 9]), port,
                                         b"\x1b\x58"),
                    (bytes([10, 42, 0, 7]), bytes([10, 42, 1, 3]), b"\x1b\x58", port),
                    'ns/"odd\\name"/é' if i % 2 else "", (bytes([10, 42, 0, 7]), 7000)
                    if i % 5 else None), 0.0, i % 17)
    return ct


@pytest.mark.parametrize("now", [0.0, 1.2345, 29.99999, 1e6])
def test_to_json_is_the_json_of_to_records(now):
    ct = _table()
    for c in ct.conns()[::7]:
        c.replied = True
    for c in ct.conns()[::11]:
        c.closing = True
    for _ in range(2):  # the second time from the cached constant parts
        assert ct.to_json(now) == json.dumps({"version": 1, "conns": ct.to_records(now)},
                                             separators=(",", ":"))
    fresh = Conntrack()
    assert fresh.from_records(json.loads(ct.to_json(0.0))["conns"], 0.0) == len(ct)
    # the agent's snapshots (emunet.agent.ctstore) leave closing connections out
    live = ct.to_json(now, closing=False)
    assert live == json.dumps({"version": 1, "conns": ct.to_records(now, closing=False)},
                              separators=(",", ":"))
    n_live = sum(not c.closing for c in ct.conns())
    assert 0 < n_live < len(ct.conns()) and len(json.loads(live)["conns"]) == n_live
