"""The Corefile parser (emunet.config.corefile) and the kube-system/coredns ConfigMap in a config:
syntax as CoreDNS's Caddyfile lexer reads it, the settings emunet honours, located errors."""

from __future__ import annotations

import pytest

from emunet.cluster.apply import apply_objects, delete_object
from emunet.config import ConfigError, load_config_text
from emunet.config.corefile import Problem, parse, settings
from emunet.model import ClusterSpec
from emunet.model.coredns import RESOLV_CONF, CoreDNS, k3s_corefile, k3s_default
from emunet.state import codec
from emunet.state.cluster import StateError
from emunet.state.plan import plan

CLUSTER = """\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {name: c}
spec:
  nodes: [{name: node-1}]
"""


def configmap(corefile: str) -> str:
    body = "".join(f"    {line}\n" if line else "\n" for line in corefile.splitlines())
    return ("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: coredns\n"
            "  namespace: kube-system\ndata:\n  Corefile: |\n" + body)


def quiet(text: str) -> CoreDNS:
    warnings: list[tuple[int, str]] = []
    out = settings(text, lambda n, m: warnings.append((n, m)))
    assert not warnings, warnings
    return out


def test_syntax_blocks_directives_args_nested_blocks_comments_quotes():
    blocks = parse('# top\n.:53 {\n  errors # trailing\n  kubernetes cluster.local {\n'
                   '    pods "verified"\n  }\n}\nexample.org:53 dns://x.test {\n  whoami\n}\n'
                   'import /etc/coredns/custom/*.server\n')
    assert [b.keys for b in blocks] == [[".:53"], ["example.org:53", "dns://x.test"]]
    errors, k8s = blocks[0].directives
    assert (errors.name, errors.args, errors.line, errors.block) == ("errors", [], 3, None)
    assert (k8s.name, k8s.args, k8s.line) == ("kubernetes", ["cluster.local"], 4)
    assert [(p.name, p.args, p.line) for p in k8s.block] == [("pods", ["verified"], 5)]


@pytest.mark.parametrize("text,line,words", [
    (".:53 {\n  errors\n", 1, "never closed"),
    (".:53\n  errors\n}\n", 1, "has no '{'"),
    ("}\n", 1, "unexpected '}'"),
    ('.:53 {\n  forward . "1.2.3.4\n}\n', 2, "unterminated"),
    (".:53 {\n  { errors }\n}\n", 2, "without a directive"),
])
def test_syntax_errors_name_their_line(text, line, words):
    with pytest.raises(Problem) as e:
        parse(text)
    assert e.value.line == line and words in e.value.message


def test_k3s_default_corefile_parses_to_k3s_default():
    for spec in (ClusterSpec(), ClusterSpec(dns_ttl=30, dns_upstreams=("192.0.2.53",))):
        warned: list[str] = []
        assert settings(k3s_corefile(spec), lambda n, m, w=warned: w.append(m)) == k3s_default(
            spec)
        # what emunet does not run of it: NodeHosts, the answer cache, record shuffling
        assert [m.split("'")[1] for m in warned] == ["hosts", "cache", "loadbalance"]
    assert k3s_default(ClusterSpec()).forward == (RESOLV_CONF,)


def test_honoured_settings():
    c = quiet(".:53 {\n kubernetes cluster.local in-addr.arpa {\n  pods verified\n  ttl 7\n"
              "  fallthrough\n  endpoint_pod_names\n  ignore empty_service\n }\n"
              " forward . 192.0.2.1 dns://192.0.2.2:5353 /etc/resolv.conf\n}\n")
    assert c == CoreDNS(kubernetes=True, zones=("cluster.local", "in-addr.arpa"),
                        pods="verified", ttl=7, fallthrough=(), endpoint_pod_names=True,
                        ignore_empty_service=True,
                        forward=("192.0.2.1", "192.0.2.2:5353", RESOLV_CONF))
    assert c.falls_through("cluster.local")
    # CoreDNS's defaults when a directive is absent (setup.go, kubernetes.go New)
    c = quiet("dns://.:53 {\n  kubernetes Cluster.Local.\n}\n")
    assert (c.pods, c.ttl, c.fallthrough, c.forward, c.zones) == (
        "disabled", 5, None, (), ("cluster.local",))
    assert not quiet(".:53 {\n  forward . 192.0.2.1\n}\n").kubernetes


@pytest.mark.parametrize("directive,words", [
    ("pods maybe", "wrong value for pods"),
    ("pods", "pods takes one argument"),
    ("ttl 3601", "range [0, 3600]"),
    ("ttl soon", "ttl needs one number"),
    ("ignore everything", "unable to parse ignore value"),
    ("endpoint_pod_names yes", "takes no argument"),
    ("podz insecure", "unknown property 'podz'"),
])
def test_bad_kubernetes_properties_are_errors_at_their_line(directive, words):
    with pytest.raises(Problem) as e:
        settings(f".:53 {{\n  kubernetes cluster.local {{\n    {directive}\n  }}\n}}\n",
                 lambda *_: None)
    assert e.value.line == 3 and words in e.value.message


@pytest.mark.parametrize("text,line,words", [
    ("example.org {\n  whoami\n}\n", 1, "no server block for . on port 53"),
    (".:53 {\n}\n.:53 {\n}\n", 3, "a second server block"),
    (".:53 {\n  kubernetes in-addr.arpa\n}\n", 2, "non-reverse zone"),
    (".:53 {\n  kubernetes\n}\n", 2, "not the root"),
    (".:53 {\n  forward .\n}\n", 2, "at least one upstream"),
    (".:53 {\n  forward . tls://192.0.2.1\n}\n", 2, "tls:// upstreams"),
    (".:53 {\n  forward . dns.example.com\n}\n", 2, "not an IP address"),
    (".:53 {\n  forward . /etc/hosts\n}\n", 2, "reads no file"),
    (".:53 {\n  forward . 192.0.2.1:99999\n}\n", 2, "bad port"),
    (".:53 {\n  forward . 192.0.2.1 {\n    bogus\n  }\n}\n", 3, "unknown property"),
    (".:53 {\n  forward . 192.0.2.1\n  forward . 192.0.2.2\n}\n", 3, "used twice"),
])
def test_bad_server_blocks_and_forward_are_errors(text, line, words):
    with pytest.raises(Problem) as e:
        settings(text, lambda *_: None)
    assert e.value.line == line and words in e.value.message, e.value.message


def test_plugins_emunet_does_not_run_are_warned_about_and_ignored():
    warnings: list[tuple[int, str]] = []
    c = settings(".:53 {\n  errors\n  cache 30\n  kubernetes cluster.local {\n"
                 "    namespaces a b\n  }\n  forward . 192.0.2.1 {\n    force_tcp\n  }\n"
                 "  rewrite name a b\n}\nexample.org {\n  forward . 192.0.2.9\n}\n",
                 lambda n, m: warnings.append((n, m)))
    assert c.forward == ("192.0.2.1",)
    warnings.sort()
    assert [n for n, _ in warnings] == [3, 5, 8, 10, 12]
    assert "'cache' ignored" in warnings[0][1] and "example.org" in warnings[4][1]


def test_a_configmap_in_the_config_file_with_located_errors_and_warnings():
    cfg = load_config_text(CLUSTER + configmap(
        ".:53 {\n  kubernetes cluster.local {\n    ttl 7\n  }\n  cache 30\n}"), "c.yaml")
    assert cfg.coredns.ttl == 7 and cfg.coredns.pods == "disabled"
    # the Corefile's line 5 is file line 18: data.Corefile's text starts on line 14
    assert cfg.warnings == ("c.yaml:18: data.Corefile: Corefile line 5: Corefile plugin "
                            "'cache' ignored: emunet's responder does not run it (it honours "
                            "kubernetes and forward)",)
    assert not any("not used yet" in w for w in cfg.warnings)
    with pytest.raises(ConfigError) as e:
        load_config_text(CLUSTER + configmap(
            ".:53 {\n  kubernetes cluster.local {\n    pods maybe\n  }\n}"), "c.yaml")
    assert str(e.value).startswith("c.yaml:16: data.Corefile: Corefile line 3: kubernetes: "
                                   "wrong value for pods: 'maybe'")
    # another ConfigMap is kept and warned about, as before
    other = configmap(".:53 {\n}").replace("name: coredns", "name: other")
    assert "not used yet" in load_config_text(CLUSTER + other, "c.yaml").warnings[0]


def test_the_state_carries_the_settings_and_apply_replaces_them():
    st = plan(load_config_text(CLUSTER, "c.yaml"))
    assert st.coredns is None  # k3s's default
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": ".:53 {\n kubernetes cluster.local {\n  ttl 9\n }\n}\n"}}
    changes = apply_objects(st, [body])
    assert [c.message for c in changes] == ["configmap/coredns configured"]
    assert st.coredns.ttl == 9
    assert codec.from_json(codec.to_json(st)).coredns == st.coredns
    assert [c.message for c in apply_objects(st, [body])] == ["configmap/coredns unchanged"]
    bad = {**body, "data": {"Corefile": ".:53 {\n kubernetes cluster.local {\n  ttl x\n }\n}"}}
    with pytest.raises(ConfigError) as e:
        apply_objects(st, [bad])
    assert "Corefile line 3: kubernetes: ttl needs one number" in str(e.value)
    assert st.coredns.ttl == 9  # all or nothing
    with pytest.raises(StateError):
        delete_object(st, "configmap", "coredns", "kube-system")
