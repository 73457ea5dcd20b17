"""emunet.l7.listeners: the listeners a state needs per node, and the file a proxy publishes
(what `emunet up` waits on before it returns)."""

from __future__ import annotations

from emunet.l7 import listeners
from tests.unit.pipeline_pair import l7_state, make_state, pod


def test_expected_listeners_follow_the_cnp(tmp_path):
    st = l7_state("node-2")
    web = pod(st, "web-0")
    assert listeners.expected(st) == {"node-2": {(web.ip, 15001)}}
    assert listeners.expected(make_state()) == {}  # no CiliumNetworkPolicy: nothing to wait on


def test_publish_and_read_back(tmp_path):
    assert listeners.open_on(tmp_path, "node-2") == set()  # the proxy has not said yet
    listeners.publish(tmp_path, "node-2", {("10.42.2.2", 15001)}, missing=False)
    assert listeners.open_on(tmp_path, "node-2") == {("10.42.2.2", 15001)}
    assert listeners.open_on(tmp_path, "node-1") == set()
    listeners.path(tmp_path, "node-2").write_text("{half")  # never raises on a bad file
    assert listeners.open_on(tmp_path, "node-2") == set()
