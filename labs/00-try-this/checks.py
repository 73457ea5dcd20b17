"""Lab 0 checks: a Ready pod app=hello, a Service hello with a ready endpoint, DNS answers."""

from __future__ import annotations

NS = "try-this"


def hello_pod_ready(ctx) -> str | None:
    pods = [p for p in ctx.state().pods.values()
            if p.pod.namespace == NS and p.pod.labels.get("app") == "hello"]
    if not pods:
        return f"no pod labelled app=hello in namespace {NS}"
    if not any(p.pod.container_ports() for p in pods):
        return "the app=hello pod declares no containerPort, so it serves nothing"
    if not any(p.ready for p in pods):
        return "the app=hello pod is not Ready yet"
    return None


def hello_service_has_endpoints(ctx) -> str | None:
    st = ctx.state()
    svc = st.services.get((NS, "hello"))
    if svc is None:
        return f"no Service named hello in namespace {NS}"
    if svc.service.type != "ClusterIP" or svc.cluster_ip is None:
        return "Service hello is not a ClusterIP Service with a cluster IP"
    eps = [e for port in st.endpoints((NS, "hello")).values() for e in port if e.ready]
    if not eps:
        return "Service hello has no ready endpoints (see `kubectl get endpoints -n try-this`)"
    return None


def hello_cluster_ip(ctx) -> str | None:
    svc = ctx.state().services.get((NS, "hello"))
    return svc.cluster_ip if svc else None


def client_resolves_hello(ctx) -> str | None:
    want = hello_cluster_ip(ctx)
    got = ctx.resolve(NS, "client", f"hello.{NS}.svc.cluster.local")
    if got is None or got != want:
        return f"DNS from the client pod does not answer hello's ClusterIP (got {got})"
    return None
