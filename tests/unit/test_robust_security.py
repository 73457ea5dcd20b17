"""Security rules that need no root: pods cannot redirect traffic with ARP; who workloads run as."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from scapy.layers.l2 import ARP, Ether

from emunet.config import ConfigError, load_config_text
from emunet.datapath import Send
from emunet.host.sandbox import run_as
from emunet.model import Container
from tests.unit.pipeline_pair import datapath, make_state, pod

GW = "10.42.1.1"
ST = make_state()
DP = datapath(ST, "node-1")
C, OTHER = pod(ST, "client"), pod(ST, "other")


@settings(max_examples=150, deadline=None)
@given(hs.sampled_from([2, 1, 3, 4]), hs.sampled_from([GW, C.ip, OTHER.ip, "10.42.2.2"]),
       hs.sampled_from(["ff:ff:ff:ff:ff:ff", "0a:58:0a:2a:01:01", C.mac]))
def test_arp_from_a_pod_never_reaches_another_pod(op, claimed, dst):
    """Replies, gratuitous ARP and spoofed claims: the agent answers ARP itself and forwards
    no ARP frame, so no pod can poison another's neighbour table (e.g. claim the gateway)."""
    f = Ether(src=OTHER.mac, dst=dst) / ARP(op=op, hwsrc=OTHER.mac, psrc=claimed, hwdst=dst,
                                        pdst=claimed if op != 1 else GW)
    for a in DP.process(bytes(f), OTHER.host_ifname, 1.0):
        assert not (isinstance(a, Send) and a.port != OTHER.host_ifname), a
        if isinstance(a, Send):  # only an answer to the asker itself, naming the real owner
            assert op == 1 and ARP(a.frame[14:]).hwsrc == "0a:58:0a:2a:01:01"


def test_run_as_defaults_to_nobody_and_honours_security_context():
    assert run_as(Container("c")) == ["setpriv", "--reuid=65534", "--regid=65534",
                                      "--clear-groups", "--"]
    assert run_as(Container("c", run_as_user=1000))[1:3] == ["--reuid=1000", "--regid=65534"]
    assert run_as(Container("c", run_as_user=0)) == []
    assert run_as(Container("c", run_as_user=0, run_as_group=5))[1:3] == ["--reuid=0",
                                                                         "--regid=5"]


POD = """\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {name: t}
spec: {nodes: [{name: n1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  securityContext: {runAsUser: 7, runAsGroup: 8, fsGroup: 9}
  containers:
  - {name: a, image: x, securityContext: {runAsUser: 1}}
  - {name: b, image: x}
"""


def test_security_context_parsing():
    a, b = load_config_text(POD).pods[0].containers
    assert (a.run_as_user, a.run_as_group, b.run_as_user, b.run_as_group) == (1, 8, 7, 8)
    with pytest.raises(ConfigError, match=r"securityContext.runAsUser: must be 0-"):
        load_config_text(POD.replace("runAsUser: 7", "runAsUser: -1"))
    with pytest.raises(ConfigError, match=r'unknown field "runAsUsr"'):
        load_config_text(POD.replace("runAsUser: 1}", "runAsUsr: 1}"))
