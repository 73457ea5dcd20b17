"""The OpenAPI v3 stub `kubectl apply` needs (research section 4, "apply").

kubectl downloads `/openapi/v3` before an apply; with no OpenAPI at all it refuses to apply
(`failed to download openapi`). It then asks whether the server validates fields itself:
cli-runtime's `queryParamVerifierV3.HasSupport` (resource/query_param_verifier_v3.go) looks for
a PATCH operation carrying the kind's `x-kubernetes-group-version-kind` and a `fieldValidation`
parameter. Given that, kubectl sends `fieldValidation=Strict` and leaves validation to us (the
config loader's strict field checks). No schemas are served: `kubectl explain` needs real ones.
`/openapi/v2` stays 404, which kubectl tolerates on a re-apply.
"""

from __future__ import annotations

from typing import Any

from emunet.api.objects import VERSION
from emunet.api.resources import RESOURCES, Resource

HASH = "emunet-stub-1"  # the documents never change while the server runs


def _prefix(r: Resource) -> str:
    return f"api/{r.version}" if not r.group else f"apis/{r.group}/{r.version}"


def index() -> dict[str, Any]:
    """`/openapi/v3`: one entry per group-version."""
    return {"paths": {p: {"serverRelativeURL": f"/openapi/v3/{p}?hash={HASH}"}
                      for p in sorted({_prefix(r) for r in RESOURCES})}}


def _operation(r: Resource, verb: str) -> dict[str, Any]:
    params = [{"name": n, "in": "query", "schema": {"type": "string"}}
              for n in ("dryRun", "fieldManager", "fieldValidation")]
    return {"operationId": f"{verb}{r.kind}", "parameters": params,
            "x-kubernetes-action": verb,
            "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version,
                                                "kind": r.kind}}


def document(prefix: str) -> dict[str, Any] | None:
    """`/openapi/v3/<api/v1 | apis/G/V>`: the object paths of the group-version with their
    write operations (None: no such group-version)."""
    rs = [r for r in RESOURCES if _prefix(r) == prefix]
    if not rs:
        return None
    paths: dict[str, Any] = {}
    for r in rs:
        if "patch" not in r.verbs:
            continue
        base = f"/{prefix}/namespaces/{{namespace}}" if r.namespaced else f"/{prefix}"
        paths[f"{base}/{r.plural}"] = {"post": _operation(r, "post")}
        paths[f"{base}/{r.plural}/{{name}}"] = {"patch": _operation(r, "patch"),
                                                "put": _operation(r, "put")}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": VERSION},
            "components": {"schemas": {}}, "paths": paths}
