"""emunet.config.cilium: CiliumNetworkPolicy documents to policies, and located errors."""

from __future__ import annotations

import json

import pytest

from emunet.config import ConfigError, load_config_text
from emunet.config.cilium import from_manifest
from emunet.model import cilium as cnp

HEAD = """\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata:
  name: l7
spec:
  nodes:
    - name: n1
---
apiVersion: v1
kind: Namespace
metadata:
  name: web
---
"""

STORY_CNP = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: api-only
  namespace: web
spec:
  endpointSelector:
    matchLabels:
      app: server
  ingress:
    - fromEndpoints:
        - matchLabels:
            k8s:app: frontend-client
      toPorts:
        - ports:
            - port: "3000"
              protocol: TCP
          rules:
            http:
              - method: GET
                path: "/api/.*"
"""


def _policy(body: str) -> cnp.CiliumPolicy:
    cfg = load_config_text(HEAD + body, "t.yaml")
    (m,) = [o for o in cfg.others if o.kind == "CiliumNetworkPolicy"]
    assert not any("CiliumNetworkPolicy" in w for w in cfg.warnings)  # enforced: no warning
    (p,) = cfg.cilium_policies
    # the same policy from the plain-JSON manifest, and through the state file's codec
    assert from_manifest(m) == p
    assert cnp.from_dict(json.loads(json.dumps(cnp.to_dict(p)))) == p
    return p


def _error(body: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load_config_text(HEAD + body, "t.yaml")
    return e.value


def test_story_policy_parses_with_namespace_injected() -> None:
    p = _policy(STORY_CNP)
    assert p.key == "web/api-only" and p.egress is None
    assert p.endpoint_selector.matches({"app": "server", cnp.NS_LABEL: "web"})
    assert not p.endpoint_selector.matches({"app": "server", cnp.NS_LABEL: "other"})
    (rule,) = p.ingress
    (peer,) = rule.peers
    # k8s: prefix stripped; the peer is limited to the policy's namespace
    assert peer.matches({"app": "frontend-client", cnp.NS_LABEL: "web"})
    assert not peer.matches({"app": "frontend-client", cnp.NS_LABEL: "x"})
    (pr,) = rule.to_ports
    assert pr.ports == (cnp.PortProtocol(3000, "TCP"),)
    assert pr.http == (cnp.HTTPRule(method="GET", path="/api/.*"),)


def test_peer_naming_a_namespace_crosses_namespaces() -> None:
    p = _policy(STORY_CNP.replace("k8s:app: frontend-client",
                                  "k8s:io.kubernetes.pod.namespace: shop"))
    (peer,) = p.ingress[0].peers
    assert peer.matches({cnp.NS_LABEL: "shop"}) and not peer.matches({cnp.NS_LABEL: "web"})


def test_empty_rule_and_empty_selector() -> None:
    body = STORY_CNP.split("  ingress:")[0] + "  ingress:\n    - {}\n"
    (rule,) = _policy(body).ingress
    assert rule.empty
    body = STORY_CNP.split("  ingress:")[0] + "  ingress:\n    - fromEndpoints: [{}]\n"
    (rule,) = _policy(body).ingress
    assert rule.peers[0].matches({cnp.NS_LABEL: "web", "any": "thing"})
    assert not rule.peers[0].matches({cnp.NS_LABEL: "kube-system"})


@pytest.mark.parametrize("old, new, line, path, words", [
    ('port: "3000"', "port: 3000", 16,
     "spec.ingress[0].toPorts[0].ports[0].port", "must be a string"),
    ('path: "/api/.*"', 'path: "/api/(?=x)"', 21,
     "spec.ingress[0].toPorts[0].rules.http[0].path", "not an RE2"),
    ('path: "/api/.*"', 'path: "(a)\\\\1"', 21,
     "spec.ingress[0].toPorts[0].rules.http[0].path", "not an RE2"),
    ("protocol: TCP", "protocol: UDP", 15, "spec.ingress[0].toPorts[0].ports",
     "need protocol TCP"),
    ("protocol: TCP", "protocol: tcp", 17, "spec.ingress[0].toPorts[0].ports[0].protocol",
     "must be one of"),
    ("    - fromEndpoints:", "    - fromCIDR: [10.0.0.0/8]\n      fromEndpoints:", 11,
     "spec.ingress[0].fromCIDR", "not supported"),
    ("k8s:app: frontend-client", "reserved:host: ''", 13,
     "spec.ingress[0].fromEndpoints[0].matchLabels.reserved:host", "label source"),
    ("          rules:", "          rules:\n            dns: []", 19,
     "spec.ingress[0].toPorts[0].rules.dns", "not supported"),
    ("  ingress:", "  egressDeny: []\n  ingress:", 10, "spec.egressDeny", "not supported"),
    ("      app: server", "      k8s:io.kubernetes.pod.namespace: other", 7,
     "spec.endpointSelector", "outside namespace web"),
    ("          rules:", "          rulez:", 18, "spec.ingress[0].toPorts[0].rulez",
     'unknown field "rulez"'),
])
def test_located_errors(old: str, new: str, line: int, path: str, words: str) -> None:
    assert STORY_CNP.count(old) == 1
    e = _error(STORY_CNP.replace(old, new))
    first = e.errors[0]
    assert (first.line - HEAD.count("\n"), first.path) == (line, path), str(e)
    assert words in first.message, first.message


def test_egress_http_rules_refused() -> None:
    body = STORY_CNP.replace("ingress:", "egress:").replace("fromEndpoints", "toEndpoints")
    e = _error(body)
    assert e.path == "spec.egress[0].toPorts[0].rules.http" and "egress" in e.message


def test_proxy_port_range_is_reserved() -> None:
    pod = """\
apiVersion: v1
kind: Pod
metadata:
  name: s
  namespace: web
spec:
  containers:
    - name: c
      image: x
      ports:
        - containerPort: 15001
"""
    e = _error(pod)
    assert e.path == "spec.containers[0].ports[0].containerPort" and "reserved" in e.message
    assert e.line - HEAD.count("\n") == 11
