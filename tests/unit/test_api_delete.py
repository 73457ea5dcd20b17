"""DELETE's options (issue 14): gracePeriodSeconds from the query or the body (the body wins),
the pod's grace by the registry's rules, propagationPolicy checked as upstream words it, and
Orphan keeping a Deployment's pods as pods of their own; the grace a terminating pod gets
(Controllers.terminate against a fake supervisor: no root)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from emunet.api import deleteopts
from emunet.cluster import controllers as ctl
from emunet.cluster.apply import delete_object
from emunet.config import load_config_text
from emunet.state.deploy import owned_pods
from emunet.state.plan import plan

CONFIG = """\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {name: d}
spec:
  nodes: [{name: n1}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]
"""


@pytest.fixture
async def options():
    """`options(query, body)`: what deleteopts reads from a real request (or its APIError)."""
    async def handler(request: web.Request) -> web.Response:
        try:
            o = await deleteopts.of(request)
        except deleteopts.status.APIError as e:
            return web.json_response({"code": e.code, "message": e.message})
        return web.json_response([o.grace, o.propagation])

    app = web.Application()
    app.router.add_delete("/p", handler)
    async with TestClient(TestServer(app)) as client:
        async def call(query: str = "", body: object = None):
            r = await client.delete(f"/p{query}", data=None if body is None
                                    else json.dumps(body))
            got = await r.json()
            return deleteopts.DeleteOptions(*got) if isinstance(got, list) else got
        yield call


async def test_query_and_body_and_the_body_wins(options):
    assert await options() == deleteopts.DeleteOptions(None, None)
    assert await options("?gracePeriodSeconds=5&propagationPolicy=Orphan") == \
        deleteopts.DeleteOptions(5, "Orphan")
    # kubectl delete --grace-period=0 --force
    body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
            "propagationPolicy": "Background"}
    assert await options("?gracePeriodSeconds=5", body) == \
        deleteopts.DeleteOptions(0, "Background")
    assert (await options(body={"orphanDependents": True})).propagation == "Orphan"


async def test_bad_options_are_statuses_naming_the_field(options):
    e = await options(body={"propagationPolicy": "Sideways"})
    assert e["code"] == 422
    assert 'propagationPolicy: Unsupported value: "Sideways"' in e["message"], e
    e = await options(body={"gracePeriodSeconds": "soon"})
    assert e["code"] == 422 and "gracePeriodSeconds" in e["message"]
    assert (await options("?gracePeriodSeconds=x"))["code"] == 400


def test_a_pods_grace_by_the_registrys_rules():
    running = {"status": {"phase": "Running"}}
    opts = deleteopts.DeleteOptions
    assert deleteopts.pod_grace(opts(), running, None) is None  # emunet's own
    assert deleteopts.pod_grace(opts(7), running, None) == 7
    assert deleteopts.pod_grace(opts(-3), running, None) == 1
    written = {"spec": {"terminationGracePeriodSeconds": 4}}
    assert deleteopts.pod_grace(opts(), running, written) == 4
    assert deleteopts.pod_grace(opts(0), running, written) == 0
    assert deleteopts.pod_grace(opts(9), {"status": {"phase": "Succeeded"}}, None) == 0


def test_orphan_keeps_the_pods_without_an_owner():
    st = plan(load_config_text(CONFIG, "d.yaml"))
    d = st.deployments[("default", "web")]
    pods = [p.key for p in owned_pods(st, d)]
    assert len(pods) == 2
    changes = delete_object(st, "deployment", "web", "default", orphan=True)
    assert [c.message for c in changes] == ["deployment.apps/web deleted"]
    assert ("default", "web") not in st.deployments
    assert all(k in st.pods and st.pods[k].pod.owner is None for k in pods)
    st = plan(load_config_text(CONFIG, "d.yaml"))  # the default cascades
    changes = delete_object(st, "deployment", "web", "default")
    assert sum(c.removed_pod is not None for c in changes) == 2


class _Sup:
    """What Controllers.terminate and its stop use of the supervisor."""

    def __init__(self, st) -> None:
        self.state, self.lock, self.stopped = st, asyncio.Lock(), {}
        self.workloads, self.manifest = self, None

    def publish(self) -> None:
        pass

    async def wait_loaded(self) -> None:
        pass

    async def stop(self, key, grace=None) -> None:
        self.stopped[key] = (grace, time.monotonic())


async def test_terminate_with_grace_zero_stops_at_once_and_none_after_emunets_grace(
        monkeypatch):
    monkeypatch.setattr(ctl.netlink, "remove_pod", lambda ps, manifest: None)
    st = plan(load_config_text(CONFIG, "d.yaml"))
    a, b = (p.key for p in owned_pods(st, st.deployments[("default", "web")]))
    sup = _Sup(st)
    c = ctl.Controllers(sup)  # type: ignore[arg-type]
    t0 = time.monotonic()
    c.terminate([a], grace=0)
    c.terminate([b])
    assert st.pods[a].terminating and not st.pods[a].ready
    await asyncio.wait_for(asyncio.gather(*c.tasks), 5)
    assert sup.stopped[a][0] == 0 and sup.stopped[a][1] - t0 < ctl.GRACE / 2
    assert sup.stopped[b][0] is None and sup.stopped[b][1] - t0 >= ctl.GRACE
    assert a not in st.pods and b not in st.pods
    c.terminate([], grace=100)  # nothing to do; a large grace is capped when used
    assert ctl.MAX_GRACE == 30.0
