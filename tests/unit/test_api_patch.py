"""The patch types in isolation: strategic merge patch (lists merged by their merge keys,
directives), JSON merge patch (RFC 7386) and the apply patch (emunet.api.patch)."""

from __future__ import annotations

import pytest

from emunet.api.patch import (
    APPLY,
    JSON_MERGE,
    STRATEGIC,
    PatchError,
    apply_patch,
    json_merge,
    json_patch,
    strategic_merge,
)

POD = {"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}},
       "spec": {"containers": [
           {"name": "web", "image": "nginx", "ports": [{"containerPort": 80},
                                                       {"containerPort": 443}],
            "env": [{"name": "X", "value": "1"}]},
           {"name": "side", "image": "busybox"}]}}


def test_containers_merge_by_name_and_their_ports_by_container_port():
    patch = {"spec": {"containers": [
        {"name": "web", "image": "nginx:2", "ports": [{"containerPort": 443, "name": "tls"},
                                                     {"containerPort": 8080}]},
        {"name": "new", "image": "alpine"}]}}
    out = strategic_merge(POD, patch)
    web, side, new = out["spec"]["containers"]
    assert web["image"] == "nginx:2" and web["env"] == [{"name": "X", "value": "1"}]
    assert web["ports"] == [{"containerPort": 80}, {"containerPort": 443, "name": "tls"},
                            {"containerPort": 8080}]
    assert side == {"name": "side", "image": "busybox"} and new["name"] == "new"
    assert POD["spec"]["containers"][0]["image"] == "nginx"  # inputs untouched


def test_service_ports_merge_by_port():
    svc = {"spec": {"ports": [{"port": 80, "targetPort": 3000}, {"port": 81}]}}
    out = strategic_merge(svc, {"spec": {"ports": [{"port": 81, "targetPort": 9}]}})
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 3000},
                                    {"port": 81, "targetPort": 9}]


def test_directives_delete_replace_order_retain_and_null():
    patch = {"metadata": {"labels": {"a": None}},
             "spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "web"}],
                      "containers": [{"name": "web", "$patch": "delete"}]}}
    out = strategic_merge(POD, patch)
    assert out["metadata"]["labels"] == {"b": "2"}
    assert [c["name"] for c in out["spec"]["containers"]] == ["side"]
    out = strategic_merge(POD, {"spec": {"$setElementOrder/containers": [
        {"name": "side"}, {"name": "web"}]}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["side", "web"]
    out = strategic_merge(POD, {"metadata": {"labels": {"$patch": "replace", "z": "9"}}})
    assert out["metadata"]["labels"] == {"z": "9"}
    out = strategic_merge(POD, {"spec": {"containers": [{"$patch": "replace"},
                                                        {"name": "only", "image": "i"}]}})
    assert out["spec"]["containers"] == [{"name": "only", "image": "i"}]
    out = strategic_merge({"s": {"type": "A", "a": 1, "b": 2}},
                          {"s": {"$retainKeys": ["type", "b"], "type": "B"}})
    assert out == {"s": {"type": "B", "b": 2}}
    out = strategic_merge({"metadata": {"finalizers": ["x"]}},
                          {"metadata": {"finalizers": ["y"]}})
    assert out["metadata"]["finalizers"] == ["x", "y"]
    out = strategic_merge({"metadata": {"finalizers": ["x", "y"]}},
                          {"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}})
    assert out["metadata"]["finalizers"] == ["y"]


def test_lists_without_a_merge_key_are_replaced():
    pol = {"spec": {"ingress": [{"from": [{"podSelector": {}}]}], "policyTypes": ["Ingress"]}}
    out = strategic_merge(pol, {"spec": {"ingress": [{"ports": [{"port": 80}]}]}})
    assert out["spec"]["ingress"] == [{"ports": [{"port": 80}]}]


def test_an_element_without_its_merge_key_is_an_error():
    with pytest.raises(PatchError, match="merge key: name"):
        strategic_merge(POD, {"spec": {"containers": [{"image": "x"}]}})


def test_json_merge_patch_rfc7386():
    assert json_merge({"a": "b", "c": {"d": "e", "f": "g"}},
                      {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert json_merge({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}  # lists replace
    out = apply_patch(POD, JSON_MERGE, {"spec": {"containers": [{"name": "x"}]}})
    assert out["spec"]["containers"] == [{"name": "x"}]


def test_apply_patch_merges_the_intended_object_strategically():
    out = apply_patch(POD, APPLY, {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "web", "image": "nginx:3"}]}})
    assert out["spec"]["containers"][0]["image"] == "nginx:3"
    assert out["metadata"]["labels"] == {"a": "1", "b": "2"}
    with pytest.raises(PatchError):
        apply_patch(POD, "application/json-patch+json", {})
    with pytest.raises(PatchError):
        apply_patch(POD, STRATEGIC, {"$patch": "delete"})


def test_json_patch_rfc6902():
    doc = {"a": {"b": [1, 2]}, "c": "d"}
    out = json_patch(doc, [{"op": "add", "path": "/a/b/1", "value": 9},
                           {"op": "add", "path": "/a/b/-", "value": 3},
                           {"op": "replace", "path": "/c", "value": "e"},
                           {"op": "copy", "from": "/c", "path": "/f"},
                           {"op": "move", "from": "/f", "path": "/g~1h"},
                           {"op": "test", "path": "/a/b/0", "value": 1},
                           {"op": "remove", "path": "/a/b/0"}])
    assert out == {"a": {"b": [9, 2, 3]}, "c": "e", "g/h": "e"}
    assert doc == {"a": {"b": [1, 2]}, "c": "d"}
    for bad in ([{"op": "remove", "path": "/nope"}], [{"op": "test", "path": "/c",
                                                      "value": "x"}],
                [{"op": "frob", "path": "/c"}], {"op": "add"}, [{"op": "add", "path": ""}]):
        with pytest.raises(PatchError):
            json_patch(doc, bad)
