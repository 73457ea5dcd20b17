"""Writes through the Kubernetes API in-process (no root): the OpenAPI v3 stub kubectl apply
needs, create/update/patch/delete/scale answered as the API server does (201, 409, 404, 422
with field paths, 400 for a strict unknown field, 413), all carried out by a stand-in for the
supervisor that runs the real apply (emunet.cluster.apply), so validation is the CLI's."""

from __future__ import annotations

import copy
import json
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from emunet import control
from emunet.api import stored
from emunet.api.server import MAX_BODY, make_app
from emunet.api.view import WRITTEN, View
from emunet.cluster.apply import apply_objects, delete_object
from emunet.config import ConfigError
from emunet.state import codec
from emunet.state.cluster import StateError
from tests.unit.test_api import state

LAST = "kubectl.kubernetes.io/last-applied-configuration"
SMP = {"Content-Type": "application/strategic-merge-patch+json"}
MERGE = {"Content-Type": "application/merge-patch+json"}
APPLY = {"Content-Type": "application/apply-patch+yaml"}
NS = "blog-website"


class FakeSupervisor:
    """The control ops writes use, on the view's state, as the supervisor runs them."""

    def __init__(self, view: View) -> None:
        self.view, self.ops = view, []

    def __call__(self, op: str, timeout: float = 60, **kw):
        self.ops.append(op)
        self.last = kw
        st = self.view.state
        try:
            if op == "apply_objects":
                changes = apply_objects(st, kw["objects"])
            elif op == "delete":
                changes = delete_object(st, kw["kind"], kw["name"], kw["namespace"],
                                        orphan=kw.get("propagation") == "Orphan")
            elif op == "scale":
                d = st.deployments[(kw["namespace"], kw["name"])]
                st.deployments[d.key] = type(d)(**{**d.__dict__, "replicas": kw["replicas"]})
                changes = []
            else:
                raise control.ControlError(f"unknown request {op!r}")
        except (StateError, ConfigError) as e:  # as the supervisor answers, then the client
            reply = control.input_error(e)
            raise control.ControlError(reply["error"], "input", reply["errors"]) from None
        st.stamp(time.time())
        self.view.refresh(st)
        return {"ok": True, "changes": [c.message for c in changes]}


@pytest.fixture
async def api(monkeypatch):
    view = View(None, state=state())
    sup = FakeSupervisor(view)
    monkeypatch.setattr(control, "request", sup)
    async with TestClient(TestServer(make_app(view))) as c:
        c.view, c.sup = view, sup  # type: ignore[attr-defined]
        yield c


def pod(name: str, **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": labels or {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                                     "imagePullPolicy": "Always",
                                     "ports": [{"containerPort": 80}]}]}}


async def test_openapi_v3_stub_advertises_field_validation(api):
    idx = await (await api.get("/openapi/v3")).json()
    assert {"api/v1", "apis/apps/v1", "apis/networking.k8s.io/v1", "apis/cilium.io/v2"} <= set(
        idx["paths"])
    url = idx["paths"]["api/v1"]["serverRelativeURL"]
    doc = await (await api.get(url)).json()
    op = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert op["x-kubernetes-group-version-kind"] == {"group": "", "version": "v1",
                                                     "kind": "Pod"}
    assert "fieldValidation" in {p["name"] for p in op["parameters"]}
    assert "/api/v1/namespaces/{name}" in doc["paths"]  # cluster-scoped
    assert (await api.get("/openapi/v3/apis/nope/v1")).status == 404
    assert (await api.get("/openapi/v2")).status == 404


async def test_create_keeps_the_last_applied_annotation_and_then_conflicts(api):
    body = pod("web")
    body["metadata"]["annotations"] = {LAST: json.dumps(pod("web"))}
    r = await api.post(f"/api/v1/namespaces/{NS}/pods?fieldManager=kubectl-client-side-apply"
                       "&fieldValidation=Strict", json=body)
    assert r.status == 201, await r.text()
    got = await (await api.get(f"/api/v1/namespaces/{NS}/pods/web")).json()
    assert got["metadata"]["annotations"][LAST] == json.dumps(pod("web"))
    assert got["spec"]["containers"][0]["imagePullPolicy"] == "Always"  # as written
    assert got["spec"]["nodeName"] and got["status"]["podIP"]  # as derived
    again = await api.post(f"/api/v1/namespaces/{NS}/pods", json=pod("web"))
    assert again.status == 409 and (await again.json())["reason"] == "AlreadyExists"


async def test_bad_object_is_422_with_the_field_path_and_changes_nothing(api):
    before = codec.to_dict(api.view.state)
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad", "namespace": NS},
           "spec": {"selector": {"app": "x"}, "ports": [{"port": 80, "targetPort": 70000}]}}
    r = await api.post(f"/api/v1/namespaces/{NS}/services", json=svc)
    st = await r.json()
    assert r.status == 422 and st["reason"] == "Invalid", st
    assert st["message"].startswith('Service "bad" is invalid: spec.ports[0].targetPort: '
                                    'Invalid value: '), st["message"]
    assert st["details"]["causes"][0]["field"] == "spec.ports[0].targetPort"
    assert "<request>" not in st["message"]
    assert codec.to_dict(api.view.state) == before


async def test_unknown_field_is_a_strict_decoding_error(api):
    body = pod("strict")
    body["spec"]["bogus"] = 1
    r = await api.post(f"/api/v1/namespaces/{NS}/pods?fieldValidation=Strict", json=body)
    st = await r.json()
    assert r.status == 400 and "strict decoding error" in st["message"]
    assert 'unknown field "spec.bogus"' in st["message"]


async def test_missing_namespace_malformed_json_wrong_kind_and_huge_body(api):
    r = await api.post("/api/v1/namespaces/nope/pods", json={**pod("x"), "metadata": {
        "name": "x", "namespace": "nope"}})
    assert r.status == 404 and (await r.json())["message"] == 'namespaces "nope" not found'
    r = await api.post(f"/api/v1/namespaces/{NS}/pods", data=b"{not json")
    assert r.status == 400 and (await r.json())["kind"] == "Status"
    r = await api.post(f"/api/v1/namespaces/{NS}/pods", json={**pod("x"), "kind": "Service"})
    assert r.status == 400
    r = await api.post(f"/api/v1/namespaces/{NS}/pods", data=b"x" * (MAX_BODY + 1))
    assert r.status == 413 and (await r.json())["reason"] == "RequestEntityTooLarge"
    r = await api.patch(f"/api/v1/namespaces/{NS}/pods/monospaced-test", data=b"{}",
                        headers={"Content-Type": "text/plain"})
    assert r.status == 415
    r = await api.post("/api/v1/nodes", json={"metadata": {"name": "n"}})
    assert r.status == 405
    assert api.sup.ops == []  # none of these reached the supervisor


async def test_strategic_merge_patch_of_labels_and_an_unchanged_apply(api):
    url = f"/api/v1/namespaces/{NS}/pods/monospaced-test"
    r = await api.patch(url, json={"metadata": {"labels": {"tier": "web"}}}, headers=SMP)
    assert r.status == 200, await r.text()
    labels = (await r.json())["metadata"]["labels"]
    assert labels == {"app": "monospaced", "tier": "web"}
    assert api.view.state.pods[(NS, "monospaced-test")].pod.labels["tier"] == "web"
    r = await api.patch(url, json={"metadata": {"labels": {"tier": None}}}, headers=MERGE)
    assert "tier" not in (await r.json())["metadata"]["labels"]


async def test_patch_that_changes_a_pod_spec_is_invalid(api):
    url = f"/api/v1/namespaces/{NS}/pods/monospaced-test"
    patch = {"spec": {"containers": [{"name": "monospaced", "image": "other"}]}}
    r = await api.patch(url, json=patch, headers=SMP)
    st = await r.json()
    assert r.status == 422 and "pod updates may not change fields" in st["message"]


async def test_deployment_update_scale_and_delete(api):
    dep = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "namespace": NS},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}
    url = f"/apis/apps/v1/namespaces/{NS}/deployments"
    assert (await api.post(url, json=dep)).status == 201
    r = await api.patch(f"{url}/web/scale", json={"spec": {"replicas": 4}}, headers=MERGE)
    sc = await r.json()
    assert r.status == 200 and sc["kind"] == "Scale" and sc["spec"]["replicas"] == 4
    assert api.view.state.deployments[(NS, "web")].replicas == 4
    r = await api.patch(f"{url}/web/scale", json={"spec": {"replicas": -1}}, headers=MERGE)
    assert r.status == 422 and "spec.replicas" in (await r.json())["message"]
    # a label patch keeps the scaled replicas (it starts from the live object)
    r = await api.patch(f"{url}/web", json={"metadata": {"labels": {"a": "b"}}},
                        headers=MERGE)
    assert (await r.json())["spec"]["replicas"] == 4
    r = await api.delete(f"{url}/web", json={"propagationPolicy": "Background"})
    assert r.status == 200
    assert (await api.get(f"{url}/web")).status == 404
    assert (await api.delete(f"{url}/web")).status == 404


async def test_delete_passes_the_grace_and_the_policy_to_the_supervisor(api):
    url = f"/api/v1/namespaces/{NS}/pods"
    assert (await api.post(url, json=pod("g"))).status == 201
    r = await api.delete(f"{url}/g", json={"kind": "DeleteOptions", "apiVersion": "v1",
                                           "gracePeriodSeconds": 0})  # --grace-period=0 --force
    assert r.status == 200 and api.sup.last["grace"] == 0
    r = await api.delete(f"{url}/monospaced-test")
    assert r.status == 200 and api.sup.last["grace"] is None  # emunet's own termination
    r = await api.delete(f"{url}/intruder", json={"propagationPolicy": "Nope"})
    assert r.status == 422 and (await api.get(f"{url}/intruder")).status == 200
    dep = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "o", "namespace": NS},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "o"}},
                    "template": {"metadata": {"labels": {"app": "o"}},
                                 "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}
    deps = f"/apis/apps/v1/namespaces/{NS}/deployments"
    assert (await api.post(deps, json=dep)).status == 201
    r = await api.delete(f"{deps}/o?propagationPolicy=Orphan")
    assert r.status == 200 and api.sup.last["propagation"] == "Orphan"
    assert "grace" not in api.sup.last


async def test_server_side_apply_creates_then_updates(api):
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ssa", "namespace": NS},
           "spec": {"selector": {"app": "monospaced"}, "ports": [{"port": 80,
                                                                   "targetPort": 3000}]}}
    url = f"/api/v1/namespaces/{NS}/services/ssa?fieldManager=kubectl&force=false"
    r = await api.patch(url, data=json.dumps(svc), headers=APPLY)
    assert r.status == 201, await r.text()
    ip = (await r.json())["spec"]["clusterIP"]
    svc["spec"]["ports"].append({"name": "b", "port": 81, "targetPort": 3000})
    svc["spec"]["ports"][0]["name"] = "a"
    yaml_body = json.dumps(svc)  # JSON is YAML
    r = await api.patch(url, data=yaml_body, headers=APPLY)
    got = await r.json()
    assert r.status == 200 and [p["port"] for p in got["spec"]["ports"]] == [80, 81]
    assert got["spec"]["clusterIP"] == ip


async def test_delete_refused_is_forbidden_and_namespace_delete_cascades(api):
    r = await api.delete("/api/v1/namespaces/kube-system/services/kube-dns")
    assert r.status == 403
    r = await api.delete(f"/api/v1/namespaces/{NS}")
    assert r.status == 200
    assert not [k for k in api.view.state.pods if k[0] == NS]
    # taken with the namespace: its own DELETE is a 200 once (kubectl delete -f), then 404
    svc = f"/api/v1/namespaces/{NS}/services/monospaced"
    assert (await api.get(svc)).status == 404
    assert (await api.delete(svc)).status == 200
    assert (await api.delete(svc)).status == 404


async def test_every_served_object_reapplies_unchanged_from_its_body(api):
    """What a patch starts from (stored.body of the live object) is a manifest the loader
    accepts and that changes nothing: the round trip every kubectl label/patch relies on."""
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "rt"},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "rt"}},
                    "strategy": {"type": "RollingUpdate",
                                 "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                    "template": {"metadata": {"labels": {"app": "rt"}}, "spec": {
                        "containers": [{"name": "c", "image": "nginx",
                                        "readinessProbe": {"httpGet": {"port": 80}}}]}}}}
    cnp = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
           "metadata": {"name": "rt"},
           "spec": {"endpointSelector": {"matchLabels": {"app": "rt"}}, "ingress": [{
               "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]}}
    assert (await api.post(f"/apis/apps/v1/namespaces/{NS}/deployments", json=dep)).status \
        == 201
    r = await api.post(f"/apis/cilium.io/v2/namespaces/{NS}/ciliumnetworkpolicies", json=cnp)
    assert r.status == 201, await r.text()
    for name, extra in (("np", {"type": "NodePort"}), ("headless", {"clusterIP": "None"})):
        svc = {"metadata": {"name": name}, "spec": {"selector": {"app": "rt"}, "ports": [
            {"port": 80, "targetPort": 80}], **extra}}
        assert (await api.post(f"/api/v1/namespaces/{NS}/services", json=svc)).status == 201
    st = api.view.state
    assert api.view.objs["deployments"] and api.view.objs["ciliumnetworkpolicies"]
    for plural, kind in WRITTEN.items():
        for key, obj in api.view.objs.get(plural, {}).items():
            if key == ("default", "kubernetes") or "kube-system" in key:
                continue  # emunet's own (the loader refuses writes to kube-dns: a 422)
            if plural in ("endpoints", "endpointslices"):
                continue  # the controller's (a user's Endpoints: tests/unit/test_endpoints.py)
            b = stored.body(st, obj)
            changes = apply_objects(st, [copy.deepcopy(b)])
            assert all(c.message.endswith("unchanged") for c in changes), (kind, changes)


def test_the_supervisors_input_error_carries_the_field_paths():
    from emunet.config import load_config_text
    try:
        load_config_text('{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "A"}}',
                         "<request>", base=state().cluster)
    except ConfigError as e:
        reply = control.input_error(e)
    assert reply["kind"] == "input" and reply["errors"][0]["path"] == "metadata.name"
    assert control.input_error(StateError("no"))["errors"] == []


async def test_dry_run_answers_the_object_and_changes_nothing(api):
    before = codec.to_dict(api.view.state)
    r = await api.post(f"/api/v1/namespaces/{NS}/pods?dryRun=All", json=pod("dry"))
    got = await r.json()
    assert r.status == 201 and got["metadata"]["uid"] and got["status"]["podIP"], got
    url = f"/api/v1/namespaces/{NS}/pods/monospaced-test?dryRun=All"
    r = await api.patch(url, json={"metadata": {"labels": {"x": "y"}}}, headers=SMP)
    assert (await r.json())["metadata"]["labels"]["x"] == "y"
    bad = pod("dry")
    bad["spec"]["containers"][0]["ports"][0]["containerPort"] = 0
    r = await api.post(f"/api/v1/namespaces/{NS}/pods?dryRun=All", json=bad)
    assert r.status == 422 and "containerPort" in (await r.json())["message"]
    assert (await api.delete(url)).status == 200
    r = await api.post(f"/api/v1/namespaces/{NS}/pods?dryRun=Some", json=pod("dry"))
    assert r.status == 400
    assert codec.to_dict(api.view.state) == before and api.sup.ops == []


async def test_json_patch_and_a_stale_resource_version(api):
    url = f"/api/v1/namespaces/{NS}/pods/monospaced-test"
    ops = [{"op": "add", "path": "/metadata/labels/tier", "value": "web"}]
    r = await api.patch(url, json=ops, headers={"Content-Type": "application/json-patch+json"})
    assert r.status == 200 and (await r.json())["metadata"]["labels"]["tier"] == "web"
    live = await (await api.get(url)).json()
    stale = copy.deepcopy(live)
    stale["metadata"]["resourceVersion"] = "1"
    r = await api.put(url, json=stale)
    assert r.status == 409 and (await r.json())["reason"] == "Conflict"
    r = await api.put(url, json=live)
    assert r.status == 200, await r.text()
    r = await api.patch(url, json={"metadata": {"resourceVersion": "1", "labels": {}}},
                        headers=MERGE)
    assert r.status == 409


async def test_a_file_applied_by_the_cli_supersedes_the_written_body(api, tmp_path):
    from emunet.cluster.apply import apply_config
    dep = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "cli", "namespace": NS},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "cli"}},
                    "template": {"metadata": {"labels": {"app": "cli"}}, "spec": {
                        "containers": [{"name": "c", "image": "nginx",
                                        "ports": [{"containerPort": 8080}]}]}}}}
    assert (await api.post(f"/apis/apps/v1/namespaces/{NS}/deployments", json=dep)).status \
        == 201
    del dep["spec"]["template"]["spec"]["containers"][0]["ports"]
    f = tmp_path / "d.yaml"
    f.write_text(json.dumps(dep))
    st = api.view.state
    apply_config(st, str(f))
    st.stamp(time.time())
    api.view.refresh(st)
    got = await (await api.get(f"/apis/apps/v1/namespaces/{NS}/deployments/cli")).json()
    assert "ports" not in got["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("body", [
    [], "x", 1, None, {"metadata": []}, {"metadata": {"name": 5}}, {"kind": ["Pod"]},
    {"metadata": {"name": "g", "labels": ["a"]}, "spec": {"containers": "c"}},
    {"metadata": {"name": "g", "annotations": {"k": 1}}, "spec": {"containers": [{}]}},
    {"metadata": {"name": "g"}, "spec": {"containers": [{"name": "c", "image": "i",
                                                       "ports": [{"containerPort": "x"}]}]}},
    {"metadata": {"name": "g" * 300}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
])
async def test_garbage_bodies_are_client_errors(api, body):
    before = codec.to_dict(api.view.state)
    r = await api.post(f"/api/v1/namespaces/{NS}/pods", data=json.dumps(body))
    st = await r.json()
    assert 400 <= r.status < 500 and st["kind"] == "Status", (r.status, st)
    assert codec.to_dict(api.view.state) == before


@pytest.mark.parametrize("ctype,patch", [
    (SMP["Content-Type"], {"metadata": []}), (SMP["Content-Type"], {"spec": "x"}),
    (SMP["Content-Type"], {"spec": {"containers": {"name": "x"}}}),
    (SMP["Content-Type"], {"$patch": "frob"}),
    (MERGE["Content-Type"], {"metadata": {"name": "other"}}),
    (MERGE["Content-Type"], []), ("application/json-patch+json", [{"op": "add"}]),
    ("application/json-patch+json", [{"op": "move", "from": "/nope", "path": "/a"}]),
    (APPLY["Content-Type"], {"apiVersion": "v2"}),
])
async def test_garbage_patches_are_client_errors(api, ctype, patch):
    before = codec.to_dict(api.view.state)
    r = await api.patch(f"/api/v1/namespaces/{NS}/pods/monospaced-test",
                        data=json.dumps(patch), headers={"Content-Type": ctype})
    st = await r.json()
    assert 400 <= r.status < 500 and st["kind"] == "Status", (r.status, st)
    assert codec.to_dict(api.view.state) == before


@pytest.mark.parametrize("body", [{"spec": []}, {"spec": {"replicas": "3"}}, {"spec": None},
                                  {"spec": {"replicas": True}}])
async def test_garbage_scales_are_client_errors(api, body):
    url = f"/apis/apps/v1/namespaces/{NS}/deployments"
    dep = {"metadata": {"name": "s"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": "s"}},
        "template": {"metadata": {"labels": {"app": "s"}},
                     "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}
    assert (await api.post(url, json=dep)).status == 201
    for method in (api.put, api.patch):
        r = await method(f"{url}/s/scale", data=json.dumps(body), headers=MERGE)
        assert 400 <= r.status < 500 and (await r.json())["kind"] == "Status"
    assert api.view.state.deployments[(NS, "s")].replicas == 1


async def test_kubectl_edit_of_the_coredns_configmap_reaches_the_responders_settings(api):
    """kube-system/coredns as kubectl edits it (a merge patch of data.Corefile): validated by
    the same Corefile parser as a file (422 naming the Corefile line), kept, and what the DNS
    responder runs (ClusterState.coredns); other ConfigMaps and deleting it are refused."""
    url = "/api/v1/namespaces/kube-system/configmaps/coredns"
    live = await (await api.get(url)).json()
    assert "pods insecure" in live["data"]["Corefile"]  # k3s's default
    new = live["data"]["Corefile"].replace("pods insecure", "pods verified\n      ttl 7")
    r = await api.patch(url, data=json.dumps({"data": {"Corefile": new}}), headers=MERGE)
    assert r.status == 200, await r.text()
    assert (await r.json())["data"]["Corefile"] == new
    st = api.view.state
    assert (st.coredns.pods, st.coredns.ttl) == ("verified", 7)
    bad = new.replace("ttl 7", "ttl 99999")
    r = await api.patch(url, data=json.dumps({"data": {"Corefile": bad}}), headers=MERGE)
    assert r.status == 422
    cause = (await r.json())["details"]["causes"][0]
    assert cause["field"] == "data.Corefile" and "Corefile line 7" in cause["message"]
    assert "range [0, 3600]" in cause["message"] and api.view.state.coredns.ttl == 7
    assert (await api.delete(url)).status == 403
    r = await api.post("/api/v1/namespaces/default/configmaps", data=json.dumps(
        {"metadata": {"name": "x"}, "data": {}}))
    assert r.status == 403


async def test_deletecollection_deletes_what_the_selectors_select(api):
    """DELETE on a collection (the Python client's delete_collection_namespaced_pod): what the
    label and field selectors select in the namespace, one by one with the same options,
    answered with the list of what went; Services have no deletecollection upstream."""
    url = f"/api/v1/namespaces/{NS}/pods"
    for name, tier in (("c1", "cache"), ("c2", "cache"), ("w1", "web")):
        assert (await api.post(url, json=pod(name, tier=tier))).status == 201
    r = await api.delete(f"{url}?labelSelector=tier%3Dcache&dryRun=All")
    assert r.status == 200 and [p["metadata"]["name"] for p in (await r.json())["items"]] \
        == ["c1", "c2"]
    assert (await api.get(f"{url}/c1")).status == 200  # a dry run deletes nothing
    r = await api.delete(f"{url}?labelSelector=tier%3Dcache",
                         json={"kind": "DeleteOptions", "gracePeriodSeconds": 0})
    got = await r.json()
    assert r.status == 200 and got["kind"] == "PodList" and api.sup.last["grace"] == 0
    assert [p["metadata"]["name"] for p in got["items"]] == ["c1", "c2"]
    for name, code in (("c1", 404), ("c2", 404), ("w1", 200)):
        assert (await api.get(f"{url}/{name}")).status == code
    r = await api.delete(f"{url}?fieldSelector=metadata.name%3Dw1")
    assert [p["metadata"]["name"] for p in (await r.json())["items"]] == ["w1"]
    r = await api.delete(f"/api/v1/namespaces/{NS}/services")
    assert r.status == 405
    r = await api.delete(f"{url}?labelSelector=tier+in+(a")
    assert r.status == 400
