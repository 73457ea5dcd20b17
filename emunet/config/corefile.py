"""Read a Corefile (CoreDNS's configuration, the kube-system/coredns ConfigMap) into model.CoreDNS.

Two steps. `parse` is the syntax alone, as CoreDNS's Caddyfile lexer reads it (coredns/caddy
caddyfile: tokens split on white space, `#` comments, double quotes with `\\"`, a `{` ending a
line opens a block and `}` closes it): server blocks (`.:53 { ... }`, keys before the brace,
and top-level `import` lines), each a list of directives with arguments and nested blocks, every
one with its Corefile line. `settings` then takes the server block for `.` on port 53 (the one
emunet's responder is) and reads what emunet honours: the kubernetes plugin's zones, `pods`,
`ttl`, `fallthrough`, `endpoint_pod_names`, `ignore empty_service`, and `forward . TO...`,
validated as plugin/kubernetes/setup.go and plugin/forward/setup.go do. Plugins emunet does
not run are accepted with a warning (those that change no answer here: silently). Mistakes
are `Problem`s with the Corefile line; emunet.config.documents places them in the file.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from emunet.model.coredns import POD_MODES, RESOLV_CONF, CoreDNS

MAX_TTL = 3600  # plugin/kubernetes setup.go: "ttl must be in range [0, 3600]"
MAX_UPSTREAMS = 15  # plugin/forward setup.go: "more than 15 TOs configured"
# Plugins that change no answer emunet gives (or describe what it does anyway): no warning.
QUIET = frozenset({"errors", "health", "ready", "prometheus", "loop", "reload", "import", "log",
                   "debug", "bind"})
# The kubernetes plugin's other properties (setup.go ParseStanza): valid, not honoured.
K8S_IGNORED = frozenset({"endpoint", "tls", "kubeconfig", "namespaces", "labels",
                         "namespace_labels", "noendpoints", "multicluster", "startup_timeout",
                         "apiserver_qps", "apiserver_burst", "apiserver_max_inflight"})
# plugin/forward setup.go's options: valid, not honoured (emunet asks over the client's
# transport, in order, with a fixed timeout)
FORWARD_IGNORED = frozenset({"except", "force_tcp", "prefer_udp", "expire", "max_fails", "tls",
                             "tls_servername", "policy", "health_check", "max_concurrent",
                             "next", "failfast_all_unhealthy_upstreams", "max_idle_conns"})


class Problem(Exception):
    """A mistake at a Corefile line (1-based)."""

    def __init__(self, line: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.line, self.message, self.hint = line, message, hint


@dataclass
class Directive:
    name: str
    args: list[str]
    line: int
    block: list[Directive] | None = None  # the `{ ... }` after it, if any


@dataclass
class ServerBlock:
    keys: list[str]  # e.g. [".:53"]
    line: int
    directives: list[Directive] = field(default_factory=list)


def _tokens(text: str) -> list[tuple[str, int, bool]]:
    """(token, line, quoted): the Caddyfile lexer."""
    out: list[tuple[str, int, bool]] = []
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c == '"':
            start, buf, i = line, [], i + 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n and text[i + 1] == '"':
                    i += 1
                line += text[i] == "\n"
                buf.append(text[i])
                i += 1
            if i >= n:
                raise Problem(start, "unterminated quoted string", 'close it with "')
            out.append(("".join(buf), start, True))
            i += 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] != '"':
                j += 1
            out.append((text[i:j], line, False))
            i = j
    return out


def parse(text: str) -> list[ServerBlock]:
    """The server blocks of a Corefile (raises Problem)."""
    toks = _tokens(text)
    blocks: list[ServerBlock] = []
    pos = 0
    while pos < len(toks):
        tok, line, quoted = toks[pos]
        if tok == "import" and not quoted:  # a top-level import (k3s: custom/*.server)
            pos = _line_end(toks, pos)
            continue
        keys = []
        while pos < len(toks) and toks[pos][1] == line and toks[pos][0] != "{":
            if toks[pos][0] == "}" and not toks[pos][2]:
                raise Problem(toks[pos][1], "unexpected '}'", "no block is open here")
            keys.append(toks[pos][0])
            pos += 1
        if pos >= len(toks) or toks[pos][0] != "{" or toks[pos][2]:
            raise Problem(line, f"server block {' '.join(keys)} has no '{{'",
                          "write the zones, then { on the same line, e.g. .:53 {")
        sb = ServerBlock(keys, line)
        sb.directives, pos = _block(toks, pos + 1, line)
        blocks.append(sb)
    return blocks


def _line_end(toks: list[tuple[str, int, bool]], pos: int) -> int:
    line = toks[pos][1]
    while pos < len(toks) and toks[pos][1] == line:
        pos += 1
    return pos


def _block(toks: list[tuple[str, int, bool]], pos: int, opened: int
           ) -> tuple[list[Directive], int]:
    """Directives up to the matching '}' (pos just after the '{')."""
    out: list[Directive] = []
    while pos < len(toks):
        tok, line, quoted = toks[pos]
        if tok == "}" and not quoted:
            return out, pos + 1
        if tok == "{" and not quoted:
            raise Problem(line, "'{' without a directive", "a block follows a directive's name")
        d = Directive(tok, [], line)
        pos += 1
        while pos < len(toks) and toks[pos][1] == line:
            t, _, q = toks[pos]
            if t in ("{", "}") and not q:
                break
            d.args.append(t)
            pos += 1
        if pos < len(toks) and toks[pos][0] == "{" and not toks[pos][2] \
                and toks[pos][1] == line:
            d.block, pos = _block(toks, pos + 1, line)
        out.append(d)
    raise Problem(opened, "this block is never closed", "add the matching '}'")


def _zone(name: str) -> str:
    return name.lower().rstrip(".") if name != "." else "."


def _key_zone_port(key: str) -> tuple[str, str]:
    """`dns://.:53` -> (".", "53"); no port is CoreDNS's default, 53."""
    if "://" in key:
        scheme, key = key.split("://", 1)
        if scheme != "dns":
            return _zone(key), f"{scheme}://"
    zone, _, port = key.rpartition(":") if ":" in key else (key, "", "53")
    return _zone(zone or "."), port or "53"


def settings(text: str, warn: Callable[[int, str], None]) -> CoreDNS:
    """The CoreDNS settings emunet honours, from a Corefile (raises Problem)."""
    blocks = parse(text)
    ours = [b for b in blocks if (".", "53") in map(_key_zone_port, b.keys)]
    if not ours:
        raise Problem(blocks[0].line if blocks else 1, "no server block for . on port 53",
                      "emunet's responder serves the root zone on port 53, as k3s's "
                      "Corefile does: .:53 { ... }")
    if len(ours) > 1:
        raise Problem(ours[1].line, f"a second server block for .:53 (the first is on line "
                      f"{ours[0].line})", "CoreDNS refuses two blocks for one zone and port")
    for b in blocks:
        if b is not ours[0]:
            warn(b.line, f"server block {' '.join(b.keys)} ignored: emunet's responder "
                 "serves the .:53 block only")
    k8s: CoreDNS | None = None
    upstreams: tuple[str, ...] = ()
    seen: dict[str, int] = {}
    for d in ours[0].directives:
        if d.name in seen and d.name in ("kubernetes", "forward"):
            raise Problem(d.line, f"plugin {d.name} used twice in one server block (first on "
                          f"line {seen[d.name]})", "CoreDNS allows it once per server block")
        seen.setdefault(d.name, d.line)
        if d.name == "kubernetes":
            k8s = _kubernetes(d, warn)
        elif d.name == "forward":
            upstreams = _forward(d, warn)
        elif d.name not in QUIET:
            warn(d.line, f"Corefile plugin {d.name!r} ignored: emunet's responder does not "
                 "run it (it honours kubernetes and forward)")
    if k8s is None:
        return CoreDNS(kubernetes=False, forward=upstreams)
    return CoreDNS(kubernetes=True, zones=k8s.zones, pods=k8s.pods, ttl=k8s.ttl,
                   fallthrough=k8s.fallthrough, endpoint_pod_names=k8s.endpoint_pod_names,
                   ignore_empty_service=k8s.ignore_empty_service, forward=upstreams)


def _kubernetes(d: Directive, warn: Callable[[int, str], None]) -> CoreDNS:
    zones = tuple(_zone(z) for z in d.args) or (".",)
    primary = [z for z in zones if not z.endswith(("in-addr.arpa", "ip6.arpa"))]
    if not primary:  # setup.go: "non-reverse zone name must be used"
        raise Problem(d.line, "kubernetes: a non-reverse zone name must be used",
                      "name the cluster domain first: kubernetes cluster.local in-addr.arpa")
    if primary[0] == ".":
        raise Problem(d.line, "kubernetes: emunet needs a zone for the cluster's names, not "
                      "the root", "name the cluster domain: kubernetes cluster.local ...")
    pods, ttl, fall = "disabled", 5, None
    epn = ignore_empty = False
    for p in d.block or ():
        args = p.args
        if p.name == "pods":
            if len(args) != 1:
                raise Problem(p.line, "kubernetes: pods takes one argument",
                              "pods disabled|verified|insecure")
            if args[0] not in POD_MODES:
                raise Problem(p.line, f"kubernetes: wrong value for pods: {args[0]!r}",
                              "must be one of: disabled, verified, insecure")
            pods = args[0]
        elif p.name == "ttl":
            if len(args) != 1 or not args[0].lstrip("-").isdigit():
                raise Problem(p.line, f"kubernetes: ttl needs one number, got "
                              f"{' '.join(args) or 'none'}", "e.g. ttl 30 (seconds)")
            ttl = int(args[0])
            if not 0 <= ttl <= MAX_TTL:
                raise Problem(p.line, f"kubernetes: ttl must be in range [0, {MAX_TTL}]: {ttl}")
        elif p.name == "fallthrough":
            fall = tuple(_zone(z) for z in args)
        elif p.name == "endpoint_pod_names":
            if args:
                raise Problem(p.line, "kubernetes: endpoint_pod_names takes no argument")
            epn = True
        elif p.name == "ignore":
            if not args or args[0] != "empty_service":
                raise Problem(p.line, "kubernetes: unable to parse ignore value: "
                              f"{' '.join(args)!r}", "the one value is: ignore empty_service")
            ignore_empty = True
        elif p.name in K8S_IGNORED:
            warn(p.line, f"kubernetes: {p.name} ignored: emunet's responder reads the "
                 "cluster's state, not the API server")
        else:
            raise Problem(p.line, f"kubernetes: unknown property {p.name!r}",
                          "see https://coredns.io/plugins/kubernetes/")
    return CoreDNS(zones=zones, pods=pods, ttl=ttl, fallthrough=fall, endpoint_pod_names=epn,
                   ignore_empty_service=ignore_empty)


def _forward(d: Directive, warn: Callable[[int, str], None]) -> tuple[str, ...]:
    if len(d.args) < 2:
        raise Problem(d.line, "forward needs a zone and at least one upstream",
                      "e.g. forward . /etc/resolv.conf, or forward . 192.0.2.53")
    if _zone(d.args[0]) != ".":
        warn(d.line, f"forward {d.args[0]} ignored: emunet forwards the root zone only")
        return ()
    tos = d.args[1:]
    if len(tos) > MAX_UPSTREAMS:
        raise Problem(d.line, f"forward: more than {MAX_UPSTREAMS} upstreams configured")
    out = []
    for to in tos:
        out.append(_upstream(d.line, to))
    for p in d.block or ():
        if p.name not in FORWARD_IGNORED:
            raise Problem(p.line, f"forward: unknown property {p.name!r}",
                          "see https://coredns.io/plugins/forward/")
        warn(p.line, f"forward: {p.name} ignored by emunet's responder")
    return tuple(out)


def _upstream(line: int, to: str) -> str:
    if to.startswith("/"):
        if to != RESOLV_CONF:
            raise Problem(line, f"forward: emunet reads no file {to!r}",
                          f"use {RESOLV_CONF} (the node's resolvers: the Cluster's "
                          "spec.dns.upstreams) or addresses")
        return to
    if "://" in to:
        scheme, to = to.split("://", 1)
        if scheme != "dns":
            raise Problem(line, f"forward: {scheme}:// upstreams are not supported",
                          "emunet forwards over plain DNS (UDP/TCP): dns://IP or IP")
    host, port = to, ""
    if to.count(":") == 1:
        host, port = to.split(":")
    elif to.startswith("[") and "]:" in to:
        host, port = to[1:].split("]:")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise Problem(line, f"forward: {to!r} is not an IP address",
                      "upstreams are IP or IP:port (CoreDNS resolves no names here)") from None
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise Problem(line, f"forward: bad port in {to!r}")
    return f"{host}:{port}" if port and ":" not in host else host
