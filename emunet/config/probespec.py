"""A container's readinessProbe / livenessProbe / startupProbe (core/v1 Probe) to `model.Probe`.

Validation follows the API server (pkg/apis/core/validation validateProbe/validateHandler):
exactly one handler, positive periods and thresholds, successThreshold 1 for liveness and
startup probes; the
defaults are the API server's (period 10s, timeout 1s, success 1, failure 3).
"""

from __future__ import annotations

from emunet import model
from emunet.config import names
from emunet.config.fields import Obj

PROBE_FIELDS = ("exec", "httpGet", "tcpSocket", "initialDelaySeconds", "periodSeconds",
                "timeoutSeconds", "successThreshold", "failureThreshold")
PROBE_IGNORED = ("terminationGracePeriodSeconds",)
HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")


def parse_probe(c: Obj, key: str) -> model.Probe | None:
    p = c.map(key)
    if p is None:
        return None
    p.check_fields(PROBE_FIELDS, (*PROBE_IGNORED, "grpc"), what=key)
    handlers = [h for h in HANDLERS if p.has(h)]
    if len(handlers) != 1:
        p.error(None, f"a probe needs exactly one handler, got {len(handlers)}"
                + (f" ({', '.join(handlers)})" if handlers else ""),
                "use one of exec, httpGet, tcpSocket")
        return None
    kind = handlers[0]
    if kind == "grpc":
        p.error("grpc", "grpc probes are not supported", "use httpGet, tcpSocket or exec")
        return None
    ints = {}
    for field, lo, default in (("initialDelaySeconds", 0, 0), ("periodSeconds", 1, 10),
                               ("timeoutSeconds", 1, 1), ("successThreshold", 1, 1),
                               ("failureThreshold", 1, 3)):
        v = p.int(field, lo=lo, hi=2**31 - 1)
        ints[field] = default if v is None else v
    if key in ("livenessProbe", "startupProbe") and ints["successThreshold"] != 1:
        p.error("successThreshold", f"must be 1 for a {key}",
                "the API server allows no other value; one success is enough")
    port: int | str | None = None
    path, scheme, command = "/", "HTTP", ()
    h = p.map(kind)
    if h is None:
        return None
    if kind == "exec":
        h.check_fields(("command",), what="exec")
        command = h.str_list("command")
        if not command:
            h.error("command", "an exec probe needs a command", 'e.g. command: ["cat", "/tmp/ok"]')
    else:
        known = ("port", "path", "scheme") if kind == "httpGet" else ("port",)
        h.check_fields(known, ("host", "httpHeaders"), what=kind)
        port = _port(h)
        if kind == "httpGet":
            path = h.str("path") or "/"
            scheme = h.str("scheme", choices=("HTTP", "HTTPS")) or "HTTP"
            if scheme == "HTTPS":
                h.error("scheme", "HTTPS probes are not supported", "use scheme: HTTP")
    return model.Probe(kind=kind, port=port, path=path, scheme=scheme, command=command,
                       initial_delay=ints["initialDelaySeconds"], period=ints["periodSeconds"],
                       timeout=ints["timeoutSeconds"],
                       success_threshold=ints["successThreshold"],
                       failure_threshold=ints["failureThreshold"])


def _port(h: Obj) -> int | str | None:
    v = h.raw("port")
    if v is None:
        h.str("port", required=True)
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        return h.int("port", lo=1, hi=65535)
    if isinstance(v, str):
        bad = names.port_name(v)
        if bad:
            h.error("port", f"port name {v!r} {bad}", "use a number or a containerPort name")
            return None
        return v
    h.error("port", f"must be 1-65535 or a port name, got {v!r}")
    return None
