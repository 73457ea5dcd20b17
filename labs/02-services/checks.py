"""Lab 2 checks: a second Service port 8080 -> 3000; the endpoint behind port 80."""

from __future__ import annotations

from emunet.state.cluster import resolve_target_port

KEY = ("blog-website", "monospaced")


def has_port_8080(ctx) -> str | None:
    st = ctx.state()
    svc = st.services.get(KEY)
    if svc is None:
        return "Service blog-website/monospaced is gone: apply it again"
    ports = {sp.port: sp for sp in svc.service.ports}
    if 8080 not in ports:
        return "Service monospaced has no port 8080 (ports: " \
               f"{', '.join(str(p) for p in sorted(ports))})"
    pod = st.pods.get(("blog-website", "monospaced-test"))
    if pod is not None and resolve_target_port(pod.pod, ports[8080].target_port, "TCP") != 3000:
        return "port 8080 does not forward to the pod's containerPort"
    return None


def port80_endpoints(ctx) -> set[str]:
    st = ctx.state()
    if KEY not in st.services:
        return set()
    eps = st.endpoints(KEY)
    return {f"{e.ip}:{e.port}" for i, sp in enumerate(st.services[KEY].service.ports)
            if sp.port == 80 for e in eps.get(i, [])}
