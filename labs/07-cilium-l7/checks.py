"""Lab 7 checks: a denied HTTP request and the hop that drops intruder, from the recorded flows.

The flows are the ones `emunet observe` prints: the node agents' records and the L7 proxy's
HTTP decisions, turned into Hubble flows by `emunet.observe.hubble`. An answer passes when it
names something the cluster really recorded, so any denied request the learner made counts.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from emunet import naming
from emunet.observe import flowlog, hubble

NS = "blog-website"


def _flows(ctx) -> list[dict]:
    d = hubble.Directory(ctx.state())
    return [f for rec in flowlog.read_all(naming.run_dir()) for f in hubble.flows(rec, d)]


def _tokens(text: str) -> list[str]:
    return [t.strip("'\"").lower() for t in re.split(r"[\s,;]+", text) if t.strip("'\"")]


def denied_requests(ctx) -> set[tuple[str, str, str]]:
    """(method, path, status) of every HTTP request the L7 proxy denied."""
    out = set()
    for f in _flows(ctx):
        http = f.get("l7", {}).get("http")
        if f.get("Type") != "L7" or not http or f.get("verdict") != "DROPPED":
            continue
        url = urlsplit(http.get("url", ""))
        path = url.path + (f"?{url.query}" if url.query else "")
        out.add((http.get("method", "").lower(), path.lower(), str(http.get("code", ""))))
    return out


def denied_request_answer(ctx) -> str | None:
    seen = denied_requests(ctx)
    if not seen:
        return "no HTTP request has been denied yet: apply the policy (task 1), then curl a " \
               "path it does not allow"
    given = ctx.answer() or ""
    if tuple(_tokens(given)) not in seen:
        return f"{given!r} is not a denied request the proxy recorded (METHOD PATH STATUS)"
    return None


def intruder_drops(ctx) -> set[tuple[str, str]]:
    """(node, policy) for every policy drop of a flow from intruder; policy with and without
    its namespace."""
    out = set()
    for f in _flows(ctx):
        src = f.get("source", {})
        if f.get("verdict") != "DROPPED" or f.get("drop_reason_desc") != "POLICY_DENIED" \
                or (src.get("namespace"), src.get("pod_name")) != (NS, "intruder"):
            continue
        for key, refs in f.items():
            if key.endswith("_denied_by"):
                for r in refs:
                    for name in (r["name"], f"{r['namespace']}/{r['name']}"):
                        out.add((f.get("node_name", "").lower(), name.lower()))
    return out


def drop_hop_answer(ctx) -> str | None:
    seen = intruder_drops(ctx)
    if not seen:
        return "no packet from intruder has been dropped by a policy yet: apply the policy " \
               "(task 1), then trace from intruder"
    words = set(_tokens(ctx.answer() or ""))
    if not any(node in words and policy in words for node, policy in seen):
        nodes = {n for n, _ in seen}
        if not words & nodes:
            return "that is not the node where intruder's packets are dropped"
        return "that is not the policy that drops intruder's packets"
    return None
