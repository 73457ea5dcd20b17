"""The Kubernetes API server in-process (aiohttp test client, no root): /version, discovery,
Tables with upstream's columns, Status errors, selectors, resourceVersions and watch streams,
and the exec WebSocket framing (channels, the v5 stdin close, the exit Status on channel 3)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from emunet.api import channels, podexec, selectors
from emunet.api.server import make_app
from emunet.api.view import RV_PER_GENERATION, View
from emunet.config import load_config
from emunet.state import codec
from emunet.state.plan import plan

ROOT = Path(__file__).resolve().parents[2]
TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}


def state():
    st = plan(load_config(str(ROOT / "configs" / "two-node.yaml")))
    for p in st.pods.values():
        p.ready = p.running = True
    st.stamp(time.time() - 90)
    return st


@pytest.fixture
async def api():
    view = View(None, state=state())
    async with TestClient(TestServer(make_app(view))) as c:
        c.view = view  # type: ignore[attr-defined]
        yield c


async def test_version_reports_a_websocket_capable_minor(api):
    v = await (await api.get("/version")).json()
    assert v["major"] == "1" and int(v["minor"]) >= 30 and "emunet" in v["gitVersion"]


async def test_legacy_discovery(api):
    core = await (await api.get("/api/v1")).json()
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["pods"]["shortNames"] == ["po"] and by_name["pods"]["categories"] == ["all"]
    assert {"pods/log", "pods/exec", "pods/portforward", "pods/attach"} <= set(by_name)
    assert by_name["services"]["shortNames"] == ["svc"]
    groups = await (await api.get("/apis")).json()
    names = {g["name"] for g in groups["groups"]}
    assert {"apps", "networking.k8s.io", "discovery.k8s.io", "cilium.io"} <= names
    apps = await (await api.get("/apis/apps/v1")).json()
    scale = next(r for r in apps["resources"] if r["name"] == "deployments/scale")
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    cnp = await (await api.get("/apis/cilium.io/v2")).json()
    assert cnp["resources"][0]["shortNames"][0] == "cnp"


async def test_aggregated_discovery(api):
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    r = await api.get("/apis", headers={"Accept": accept})
    assert r.headers["Content-Type"].startswith("application/json;g=apidiscovery.k8s.io;v=v2")
    doc = json.loads(await r.text())
    assert doc["kind"] == "APIGroupDiscoveryList"
    apps = next(i for i in doc["items"] if i["metadata"]["name"] == "apps")
    deploy = next(r for r in apps["versions"][0]["resources"] if r["resource"] == "deployments")
    assert deploy["scope"] == "Namespaced" and deploy["shortNames"] == ["deploy"]


async def test_aggregated_discovery_v2beta1_for_kubectl_before_1_30(api):
    # kubectl 1.27-1.29 ask for v2beta1 only; taking a v2 answer for legacy, they found no
    # resource types ("the server doesn't have a resource type pods")
    beta = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
    r = await api.get("/api", headers={"Accept": f"{beta},application/json"})
    assert r.headers["Content-Type"] == beta
    doc = json.loads(await r.text())
    assert doc["apiVersion"] == "apidiscovery.k8s.io/v2beta1" and doc["items"]
    both = f"{beta.replace('v2beta1', 'v2')},{beta},application/json"
    r = await api.get("/apis", headers={"Accept": both})
    assert json.loads(await r.text())["apiVersion"] == "apidiscovery.k8s.io/v2"
    r = await api.get("/api", headers={"Accept": "application/json"})
    assert (await r.json())["kind"] == "APIVersions"


async def test_pod_table_has_upstream_columns_and_wide_ones_at_priority_1(api):
    t = await (await api.get("/api/v1/pods", headers=TABLE)).json()
    cols = [(c["name"], c["priority"]) for c in t["columnDefinitions"]]
    assert cols == [("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0),
                    ("IP", 1), ("Node", 1), ("Nominated Node", 1), ("Readiness Gates", 1)]
    row = next(r for r in t["rows"] if r["cells"][0] == "monospaced-test")
    assert row["cells"][1:4] == ["1/1", "Running", "0"]
    assert row["cells"][4].endswith(("s", "m"))  # an age such as 90s / 1m30s
    assert row["cells"][5:7] == ["10.42.2.2", "node-2"]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["namespace"] == "blog-website"  # kubectl -A reads it


async def test_service_and_endpoints_tables(api):
    t = await (await api.get("/api/v1/namespaces/blog-website/services", headers=TABLE)).json()
    assert [c["name"] for c in t["columnDefinitions"]] == [
        "Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"]
    assert t["rows"][0]["cells"][:5] == ["monospaced", "ClusterIP", "10.43.0.11", "<none>",
                                         "80/TCP"]
    assert t["rows"][0]["cells"][6] == "app=monospaced"
    t = await (await api.get("/api/v1/namespaces/blog-website/endpoints", headers=TABLE)).json()
    assert t["rows"][0]["cells"][:2] == ["monospaced", "10.42.2.2:3000"]
    svc = await (await api.get("/api/v1/namespaces/default/services/kubernetes")).json()
    assert svc["spec"]["clusterIP"] == "10.43.0.1" and svc["spec"]["ports"][0]["port"] == 443


async def test_objects_carry_api_metadata(api):
    pod = await (await api.get("/api/v1/namespaces/blog-website/pods/monospaced-test")).json()
    md = pod["metadata"]
    assert md["uid"] and md["resourceVersion"] and md["creationTimestamp"].endswith("Z")
    assert pod["status"]["phase"] == "Running" and pod["status"]["podIP"] == "10.42.2.2"
    assert {"type": "Ready", "status": "True"}.items() <= next(
        c for c in pod["status"]["conditions"] if c["type"] == "Ready").items()
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    assert pod["status"]["hostIP"] == "192.168.1.12"
    cm = await (await api.get("/api/v1/namespaces/kube-system/configmaps/coredns")).json()
    assert "kubernetes cluster.local" in cm["data"]["Corefile"]


async def test_nodes_report_capacity_for_describe(api):
    """`kubectl describe node` prints requests as a share of allocatable: without it, it
    printed -9223372036854775808%."""
    n = await (await api.get("/api/v1/nodes/node-1")).json()
    cap = n["status"]["allocatable"]
    assert int(cap["cpu"]) >= 1 and cap["memory"].endswith("Ki") and int(cap["memory"][:-2]) > 0
    assert cap["pods"] == "253"  # 10.42.1.0/24 less network, gateway and broadcast
    assert n["status"]["capacity"] == cap


async def test_not_found_is_a_status(api):
    r = await api.get("/api/v1/namespaces/blog-website/pods/nope")
    assert r.status == 404
    body = await r.json()
    assert (body["kind"], body["reason"], body["message"]) == (
        "Status", "NotFound", 'pods "nope" not found')
    r = await api.get("/api/v2/whatever")
    assert r.status == 404 and (await r.json())["kind"] == "Status"


async def test_label_and_field_selectors(api):
    r = await api.get("/api/v1/pods", params={"labelSelector": "app=monospaced"})
    assert [p["metadata"]["name"] for p in (await r.json())["items"]] == ["monospaced-test"]
    r = await api.get("/api/v1/pods", params={"fieldSelector": "spec.nodeName=node-2"})
    assert [p["metadata"]["name"] for p in (await r.json())["items"]] == ["monospaced-test"]
    r = await api.get("/api/v1/pods", params={"labelSelector": "app in (client),role!=x"})
    assert {p["metadata"]["name"] for p in (await r.json())["items"]} <= {
        "frontend-client", "intruder"}
    r = await api.get("/api/v1/pods", params={"labelSelector": "app in (a"})
    assert r.status == 400 and (await r.json())["reason"] == "BadRequest"


def test_label_selector_syntax():
    obj = {"metadata": {"labels": {"app": "web", "tier": "fe"}}}
    for text, want in (("app=web", True), ("app==web", True), ("app!=web", False),
                       ("app in (web,db)", True), ("app notin (web)", False), ("tier", True),
                       ("!tier", False), ("app=web,tier=be", False), ("missing!=x", True)):
        assert selectors.label_selector(text)(obj) is want, text


async def test_resource_version_follows_changes_only(api):
    view: View = api.view
    before = view.objs["pods"][("blog-website", "intruder")]["metadata"]["resourceVersion"]
    st = codec.from_dict(codec.to_dict(view.state))
    st.pods[("blog-website", "monospaced-test")].ready = False
    st.stamp(time.time())
    view.refresh(st)
    assert view.rv == st.generation * RV_PER_GENERATION
    pods = view.objs["pods"]
    assert pods[("blog-website", "intruder")]["metadata"]["resourceVersion"] == before
    assert pods[("blog-website", "monospaced-test")]["metadata"]["resourceVersion"] == str(
        view.rv)


async def _watch_lines(api, params, headers, change):
    r = await api.get("/api/v1/namespaces/blog-website/pods",
                      params={"watch": "true", **params}, headers=headers)
    assert r.status == 200
    await asyncio.sleep(0.05)
    change()
    lines = []
    while len(lines) < 10:
        try:
            line = await asyncio.wait_for(r.content.readline(), 1.0)
        except TimeoutError:
            break
        if not line:
            break
        lines.append(json.loads(line))
    r.close()
    return lines


async def test_watch_from_resource_version_streams_table_events(api):
    view: View = api.view
    rv = str(view.rv)

    def delete_intruder():
        st = codec.from_dict(codec.to_dict(view.state))
        del st.pods[("blog-website", "intruder")]
        st.stamp(time.time())
        view.refresh(st)

    events = await _watch_lines(api, {"resourceVersion": rv}, TABLE, delete_intruder)
    assert [e["type"] for e in events] == ["DELETED"]
    table = events[0]["object"]
    assert table["kind"] == "Table" and table["rows"][0]["cells"][0] == "intruder"


async def test_watch_without_resource_version_starts_with_added(api):
    events = await _watch_lines(api, {"labelSelector": "app=monospaced"}, {}, lambda: None)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "monospaced-test")]


async def test_streaming_list_ends_its_initial_events_with_a_bookmark(api):
    """KEP-3157 WatchList (kubectl 1.35's rollout status, wait): sendInitialEvents=true."""
    params = {"labelSelector": "app=monospaced", "sendInitialEvents": "true",
              "resourceVersionMatch": "NotOlderThan", "allowWatchBookmarks": "true",
              "resourceVersion": "5"}
    events = await _watch_lines(api, params, {}, lambda: None)
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    bm = events[1]["object"]
    assert bm["kind"] == "Pod" and bm["metadata"]["resourceVersion"] == str(api.view.rv)
    assert bm["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_watch_from_a_too_old_resource_version_is_410(api):
    events = await _watch_lines(api, {"resourceVersion": "5"}, {}, lambda: None)
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


async def test_watch_ends_when_the_server_stops(api):
    view: View = api.view
    r = await api.get("/api/v1/pods", params={"watch": "1", "resourceVersion": str(view.rv)})
    view.close_watches()
    assert await asyncio.wait_for(r.content.read(), 2) == b""


async def test_selector_change_is_added_or_deleted_for_the_watch(api):
    view: View = api.view

    def relabel():
        st = codec.from_dict(codec.to_dict(view.state))
        ps = st.pods[("blog-website", "intruder")]
        ps.pod = dataclasses.replace(ps.pod, labels={"app": "monospaced"})
        st.stamp(time.time())
        view.refresh(st)

    events = await _watch_lines(api, {"resourceVersion": str(view.rv),
                                      "labelSelector": "app=monospaced"}, {}, relabel)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "intruder")]


async def _exec(api, monkeypatch, script: str, *, stdin: bytes | None = None,
                protocol: str = "v5.channel.k8s.io"):
    monkeypatch.setattr(podexec, "argv_for", lambda *a: (["sh", "-c", script], {"PATH": "/bin:"
                                                                             "/usr/bin"}))
    params = [("command", "x"), ("stdout", "true"), ("stderr", "true")]
    if stdin is not None:
        params.append(("stdin", "true"))
    ws = await api.ws_connect("/api/v1/namespaces/blog-website/pods/frontend-client/exec",
                              params=params, protocols=(protocol,))
    assert ws.protocol == protocol
    if stdin is not None:
        await ws.send_bytes(b"\x00" + stdin)
        await ws.send_bytes(b"\xff\x00")  # v5: close stdin
    out: dict[int, bytes] = {}
    async for msg in ws:
        out[msg.data[0]] = out.get(msg.data[0], b"") + msg.data[1:]
    return out


async def test_exec_channels_and_exit_status(api, monkeypatch):
    out = await _exec(api, monkeypatch, "echo out; echo err >&2; exit 3")
    assert out[1] == b"out\n" and out[2] == b"err\n"
    status = json.loads(out[3])
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


async def test_exec_stdin_closed_by_v5_close_frame(api, monkeypatch):
    out = await _exec(api, monkeypatch, "tr a-z A-Z", stdin=b"hello\n")
    assert out[1] == b"HELLO\n" and json.loads(out[3]) == {"metadata": {}, "status": "Success"}


async def test_exec_without_websocket_says_upgrade_required(api):
    r = await api.post("/api/v1/namespaces/blog-website/pods/frontend-client/exec",
                       params={"command": "true"})
    assert r.status == 400 and (await r.json())["message"] == "Upgrade request required"


def test_exit_status_of_a_signal_is_128_plus():
    assert channels.exit_status(-9)["details"]["causes"][0]["message"] == "137"


async def test_exec_tty_gets_the_first_resize_before_it_starts(api, monkeypatch):
    monkeypatch.setattr(podexec, "argv_for", lambda *a: (
        ["setsid", "-c", "sh", "-c", "stty size; exit 2"], {"PATH": "/bin:/usr/bin"}))
    ws = await api.ws_connect("/api/v1/namespaces/blog-website/pods/frontend-client/exec",
                              params=[("command", "sh"), ("stdin", "true"),
                                      ("stdout", "true"), ("tty", "true")],
                              protocols=("v5.channel.k8s.io",))
    await ws.send_bytes(b"\x04" + json.dumps({"Width": 100, "Height": 30}).encode())
    out: dict[int, bytes] = {}
    async for msg in ws:
        out[msg.data[0]] = out.get(msg.data[0], b"") + msg.data[1:]
    assert out[1].strip() == b"30 100"
    assert json.loads(out[3])["details"]["causes"][0]["message"] == "2"


async def test_a_pod_changed_in_place_is_rebuilt(api):
    """The view reuses unchanged pods' objects (View.pod_memo); a PodState changed in place
    (not replaced) is still seen as changed."""
    view: View = api.view
    ps = view.state.pods[("blog-website", "intruder")]
    before = view.objs["pods"][ps.key]
    ps.ready = not ps.ready
    view.state.stamp(time.time())
    view.refresh(view.state)
    after = view.objs["pods"][ps.key]
    assert after is not before and after["metadata"]["resourceVersion"] == str(view.rv)
    other = view.objs["pods"][("blog-website", "monospaced-test")]
    view.state.stamp(time.time())
    view.refresh(view.state)
    assert view.objs["pods"][("blog-website", "monospaced-test")] is other  # reused
