"""NetworkPolicy documents: API-server validation as located errors, state round trip, labels."""

from __future__ import annotations

import pytest

from emunet.config import ConfigError, load_config_text
from emunet.state import codec
from emunet.state.cluster import StateError
from emunet.state.labels import label
from tests.unit.netpol_cluster import model_yaml, state


def load(spec: str):
    text = model_yaml() + ("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                           "metadata: {name: p, namespace: x}\nspec:\n" + spec)
    return load_config_text(text, "t.yaml")


@pytest.mark.parametrize(("spec", "path", "message"), [
    ("  podSelector: {}\n  policyTypes: [Inbound]\n", "spec.policyTypes[0]",
     "must be Ingress or Egress"),
    ("  podSelector: {matchExpressions: [{key: a, operator: In}]}\n",
     "spec.podSelector.matchExpressions[0]", "must be non-empty when operator is In"),
    ("  podSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}\n",
     "spec.podSelector.matchExpressions[0].values", "must be empty when operator is Exists"),
    ("  podSelector: {matchExpressions: [{key: a, operator: Has}]}\n",
     "spec.podSelector.matchExpressions[0].operator", "must be one of In, NotIn"),
    ("  podSelector: {}\n  ingress: [{from: [{}]}]\n", "spec.ingress[0].from[0]",
     "must specify a peer"),
    ("  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]\n",
     "spec.ingress[0].from[0]", "may not specify both ipBlock and a selector"),
    ("  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}"
     "]}]\n", "spec.egress[0].to[0].ipBlock.except[0]", "must be a strict subset"),
    ("  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/33}}]}]\n",
     "spec.egress[0].to[0].ipBlock.cidr", "is not a valid CIDR"),
    ("  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 'fd00::/8', except: [10.0.0.0/8]}}"
     "]}]\n", "spec.egress[0].to[0].ipBlock.except[0]", "must be a strict subset"),
    ("  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 'fd00::/8', except: ['fd00::/8']}}"
     "]}]\n", "spec.egress[0].to[0].ipBlock.except[0]", "must be a strict subset"),
    ("  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 'fd00::/129'}}]}]\n",
     "spec.egress[0].to[0].ipBlock.cidr", "is not a valid CIDR"),
    ("  podSelector: {}\n  ingress: [{ports: [{port: 90, endPort: 80}]}]\n",
     "spec.ingress[0].ports[0].endPort", "greater than or equal to port"),
    ("  podSelector: {}\n  ingress: [{ports: [{port: http, endPort: 80}]}]\n",
     "spec.ingress[0].ports[0].endPort", "numeric port"),
    ("  podSelector: {}\n  ingress: [{ports: [{endPort: 80}]}]\n",
     "spec.ingress[0].ports[0].endPort", "endPort needs port"),
    ("  podSelector: {}\n  ingress: [{ports: [{port: '80'}]}]\n",
     "spec.ingress[0].ports[0].port", "quoted number"),
    ("  podSelector: {}\n  ingress: [{ports: [{port: 80, protocol: ICMP}]}]\n",
     "spec.ingress[0].ports[0].protocol", "must be one of TCP, UDP, SCTP"),
    ("  podSelector: {}\n  ingres: []\n", "spec.ingres", "unknown field \"ingres\""),
])
def test_invalid_policies_are_located_errors(spec, path, message):
    with pytest.raises(ConfigError) as info:
        load(spec)
    err = info.value
    assert err.path == path and message in err.message, err
    assert err.line > 0 and err.file == "t.yaml"


def test_ipv6_ip_blocks_load_with_their_excepts():
    cfg = load("  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: '2001:cafe:42::/56', "
               "except: ['2001:cafe:42:2::/64']}}, {ipBlock: {cidr: 10.0.0.0/8}}]}]\n")
    (pol,) = cfg.network_policies
    blocks = [peer.ip_block for peer in pol.egress[0].peers]
    assert [(b.cidr, b.except_) for b in blocks] == [
        ("2001:cafe:42::/56", ("2001:cafe:42:2::/64",)), ("10.0.0.0/8", ())]


def test_wrong_api_version_is_an_error():
    text = model_yaml() + ("---\napiVersion: extensions/v1beta1\nkind: NetworkPolicy\n"
                           "metadata: {name: p, namespace: x}\nspec: {podSelector: {}}\n")
    with pytest.raises(ConfigError, match="networking.k8s.io/v1"):
        load_config_text(text, "t.yaml")


def test_policy_survives_the_state_file():
    st = state("""apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [a]}]}
  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}, {namespaceSelector: {}}],
             ports: [{port: 80, endPort: 90}, {port: serve-81-udp, protocol: UDP}]}]
""")
    again = codec.from_json(codec.to_json(st))
    assert again.policies == st.policies and again.policies[("x", "p")].loc.line > 0


def test_label_semantics_follow_kubectl():
    st = state()
    assert label(st, "pod", "a", "x", ["color=blue"]) == "pod/a labeled"
    assert st.pods[("x", "a")].pod.labels == {"pod": "a", "color": "blue"}
    with pytest.raises(StateError, match="--overwrite is false"):
        label(st, "pod", "a", "x", ["color=red"])
    assert label(st, "po", "a", "x", ["color=red"], overwrite=True) == "pod/a labeled"
    assert label(st, "pod", "a", "x", ["color-"]) == "pod/a labeled"
    assert label(st, "pod", "a", "x", ["color-"]) == "pod/a not labeled"
    assert label(st, "ns", "y", None, ["team=red"]) == "namespace/y labeled"
    assert st.namespaces["y"].labels["team"] == "red"
    for bad in (["kubernetes.io/metadata.name=q"], ["bad key=1"], ["a"], ["k=v", "k-"]):
        with pytest.raises(StateError):
            label(st, "namespace", "y", None, bad)
    with pytest.raises(StateError, match="not found"):
        label(st, "pod", "nope", "x", ["a=b"])
    assert st.pods[("x", "a")].pod.labels == {"pod": "a"}  # failed calls changed nothing
