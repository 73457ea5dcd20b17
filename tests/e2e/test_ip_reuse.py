"""Issue 15 §2: when a pod goes away, every node scrubs its conntrack entries, so a new pod
with other labels that host-local IPAM hands the same address cannot ride the old pod's
5-tuple past a NetworkPolicy (before the scrub it got the policy-protected pod's replies).
Two mechanisms stop it (emunet.datapath.ctscrub: the stale-IP scrub, and policing tracked flows
again when the policy's peers change); the test fails with both turned off."""

from __future__ import annotations

import pytest

from tests.e2e.cluster import ROOT, Cluster
from tests.waiting import wait_for

CONFIG = str(ROOT / "tests" / "e2e" / "configs" / "ipreuse.yaml")
UDP_FROM_4242 = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 4242))  # the same 5-tuple each time
s.settimeout(2)
s.sendto(b"hostname", (sys.argv[1], 80))
try:
    s.recv(200)
    print("reply")
except TimeoutError:
    print("timeout")
"""


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    return module_clusters(CONFIG, "eir")


def _pod(name: str, role: str) -> str:
    return (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: ipr, labels: "
            f"{{role: {role}}}}}\nspec:\n  nodeName: node-2\n  containers:\n"
            f"    - {{name: c, image: busybox, command: [sleep, '100000']}}\n---\n")


def _ip(c: Cluster, name: str) -> str:
    return next(p["status"]["podIP"] for p in c.get("pods") if p["metadata"]["name"] == name)


def test_a_new_pod_on_a_reused_ip_gets_none_of_the_old_pods_flows(cluster):
    c = cluster
    guarded = _ip(c, "guarded")
    friend, fillers, stranger = (c.tmp / f"{n}.yaml" for n in ("friend", "fillers", "stranger"))
    friend.write_text(_pod("friend", "friend"))
    # node-2's /29 holds five pods (.2-.6); four fillers leave only the friend's address
    fillers.write_text("".join(_pod(f"filler-{i}", "filler") for i in range(4)))
    stranger.write_text(_pod("stranger", "stranger"))
    c.emunet("apply", "-f", str(friend))
    ip = _ip(c, "friend")
    # the friend's flow: admitted by the policy, tracked by both agents (across the tunnel)
    assert c.exec("ipr", "friend", "python3", "-c", UDP_FROM_4242, guarded).stdout == "reply\n"
    c.emunet("apply", "-f", str(fillers))
    c.emunet("delete", "-f", str(friend))
    # its address is free once it has terminated (its grace period), as host-local IPAM frees
    # it when the sandbox goes
    wait_for(lambda: all(p["metadata"]["name"] != "friend" for p in c.get("pods")), 20,
             "the friend pod gone")
    c.emunet("apply", "-f", str(stranger))
    assert _ip(c, "stranger") == ip  # host-local IPAM wrapped to the only free address
    out = c.exec("ipr", "stranger", "python3", "-c", UDP_FROM_4242, guarded).stdout
    assert out == "timeout\n", "the old pod's UDP flow let a pod the policy denies through"
