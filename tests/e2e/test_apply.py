"""`emunet apply` and `emunet delete` on a running cluster, checked with real clients."""

from __future__ import annotations

import pytest

from tests.e2e.cluster import ROOT, Cluster
from tests.waiting import wait_for

CONFIGS = ROOT / "tests" / "e2e" / "configs"


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    return module_clusters(CONFIGS / "apply-base.yaml", "ema")


def _curl(c: Cluster, url: str, check: bool = True):
    return c.exec("default", "client", "curl", "-sS", "--max-time", "3", url, check=check)


def test_apply_creates_namespace_pods_and_service(cluster):
    out = cluster.emunet("apply", "-f", str(CONFIGS / "apply-shop.yaml")).stdout
    assert "namespace/shop created" in out
    assert "pod/cart-1 created" in out and "service/cart created" in out
    pods = {p["metadata"]["name"]: p for p in cluster.get("pods")}
    assert pods["cart-1"]["status"]["phase"] == "Running"
    assert pods["cart-1"]["spec"]["nodeName"] == "node-2"
    eps = [e for e in cluster.get("endpoints") if e["metadata"]["name"] == "cart"][0]
    ips = {a["ip"] for s in eps["subsets"] for a in s["addresses"]}
    assert ips == {pods["cart-1"]["status"]["podIP"], pods["cart-2"]["status"]["podIP"]}
    assert eps["subsets"][0]["ports"][0]["port"] == 8080  # the named targetPort, resolved
    seen = set()
    for _ in range(20):  # random backend choice: both pods answer through the ClusterIP
        seen.add(_curl(cluster, "http://cart.shop").stdout.split()[2])
    assert seen == {"cart-1", "cart-2"}
    again = cluster.emunet("apply", "-f", str(CONFIGS / "apply-shop.yaml")).stdout
    assert "service/cart unchanged" in again and "pod/cart-1 unchanged" in again


def test_delete_pod_removes_it_from_endpoints_and_the_kernel(cluster):
    cluster.emunet("delete", "pod", "cart-2", "-n", "shop")
    # Like the kubelet, the pod leaves the endpoints first and is stopped after a short grace.
    wait_for(lambda: f"{cluster.prefix}-shop-cart-2" not in cluster.netns(), 5,
             "cart-2's namespace to be removed")
    for _ in range(10):
        assert "cart-1" in _curl(cluster, "http://cart.shop").stdout


def test_delete_service_makes_the_name_disappear(cluster):
    cluster.emunet("delete", "svc", "cart", "-n", "shop")
    wait_for(lambda: _curl(cluster, "http://cart.shop", check=False).returncode != 0, 5,
             "cart.shop to stop answering")
    p = cluster.exec("default", "client", "nslookup", "cart.shop", check=False)
    assert "NXDOMAIN" in p.stdout or p.returncode != 0


def test_delete_namespace_cascades(cluster):
    out = cluster.emunet("delete", "namespace", "shop").stdout
    assert "pod/cart-1 deleted" in out and "namespace/shop deleted" in out
    wait_for(lambda: not [n for n in cluster.netns() if "-shop-" in n], 5,
             "every namespace of shop's pods to be removed")


def test_delete_unknown_object_is_a_clear_error(cluster):
    p = cluster.emunet("delete", "pod", "nope", "-n", "default", check=False)
    assert p.returncode != 0
    assert "not found" in p.stderr and "Traceback" not in p.stderr
