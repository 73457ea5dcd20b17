"""DNS in `emunet observe`, as a user sees it: a pod's nslookup, then its query and answer as
Hubble `l7.dns` flows with the pod's identity. One two-node story cluster for the module."""

from __future__ import annotations

import json

import pytest

from tests.e2e.cluster import ROOT, Cluster
from tests.waiting import wait_for

NS = "blog-website"
NAME = "monospaced.blog-website.svc.cluster.local."
HUBBLE_DNS = {"query", "ips", "ttl", "cnames", "observation_source", "rcode", "qtypes",
              "rrtypes"}  # cilium/cilium api/v1/flow/flow.proto, message DNS


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    return module_clusters(ROOT / "configs" / "two-node.yaml", "emd")


def observe(c: Cluster, *args: str) -> list[dict]:
    p = c.emunet("observe", "--last", "500", "-o", "json", *args)
    return [json.loads(line)["flow"] for line in p.stdout.splitlines() if line.strip()]


def test_nslookup_shows_query_and_answer_with_pod_identity(cluster):
    cluster.exec(NS, "frontend-client", "nslookup", "monospaced")
    svc_ip = next(s["spec"]["clusterIP"] for s in cluster.get("services")
                  if s["metadata"]["name"] == "monospaced")
    def answered() -> list[dict] | None:  # the responder writes its events every 100 ms
        flows = [f for f in observe(cluster, "--protocol", "dns")
                 if f["l7"]["dns"]["query"] == NAME]
        return flows if any(f["l7"]["type"] == "RESPONSE" and "A" in f["l7"]["dns"]["qtypes"]
                            for f in flows) else None
    flows = wait_for(answered, 20, f"the flow of the A answer for {NAME}")
    req = next(f for f in flows if f["l7"]["type"] == "REQUEST" and
               f["l7"]["dns"]["qtypes"] == ["A"])
    resp = next(f for f in flows if f["l7"]["type"] == "RESPONSE" and
                f["l7"]["dns"]["qtypes"] == ["A"])
    assert req["Type"] == "L7" and req["event_type"]["type"] == 129
    assert (req["source"]["namespace"], req["source"]["pod_name"]) == (NS, "frontend-client")
    assert "k8s:app=frontend-client" in req["source"]["labels"]
    assert req["destination"]["pod_name"].startswith("coredns")
    assert req["l4"]["UDP"]["destination_port"] == 53 and not req["is_reply"]
    dns = resp["l7"]["dns"]
    assert set(dns) == HUBBLE_DNS
    assert dns["ips"] == [svc_ip] and dns["rcode"] == 0 and dns["ttl"] == 5
    assert dns["rrtypes"] == ["A"] and resp["is_reply"]
    assert resp["destination"]["pod_name"] == "frontend-client" and resp["node_name"]
    assert resp["Summary"] == f'DNS Answer "{svc_ip}" TTL: 5 (Query {NAME} A)'
    # a name that does not resolve: the search-list walk's NXDOMAIN answers
    cluster.exec(NS, "frontend-client", "nslookup", "no-such-svc", check=False)
    miss = wait_for(lambda: [
        f for f in observe(cluster, "--protocol", "dns", "--to-pod", f"{NS}/frontend")
        if f["l7"]["dns"]["query"] == f"no-such-svc.{NS}.svc.cluster.local."], 20,
        "the flow of the NXDOMAIN answer")
    assert miss and miss[0]["l7"]["dns"]["rcode"] == 3 and miss[0]["l7"]["dns"]["ips"] == []
    assert "RCode: NXDOMAIN" in miss[0]["Summary"]
    # --type l7 lists DNS (and HTTP from the L7 proxy); the compact line names both ends
    l7 = observe(cluster, "--type", "l7")
    assert any(f["l7"]["dns"]["query"] == NAME for f in l7 if "dns" in f["l7"])
    line = cluster.emunet("observe", "--protocol", "dns", "--to-pod",
                          f"{NS}/frontend-client", "--last", "5").stdout
    assert f"{NS}/frontend-client:" in line and "dns-response FORWARDED" in line
