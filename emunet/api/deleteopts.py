"""A DELETE's meta/v1 DeleteOptions: `gracePeriodSeconds` and `propagationPolicy`, from the query
(`?gracePeriodSeconds=0&propagationPolicy=Orphan`, the Python client's and curl's form) and the
body (kubectl sends a DeleteOptions object; the body wins, as upstream decodes it last).

The grace period of a pod (k8s.io/kubernetes pkg/registry/core/pod/strategy.go
CheckGracefulDelete): the one asked for, else the pod's `terminationGracePeriodSeconds` as
written, else emunet's own short termination (None: out of the endpoints for a second, then
SIGTERM and SIGKILL two seconds later, as `emunet delete` does; upstream's default is 30 s);
a terminated pod goes at once; a negative one is 1. `kubectl delete --grace-period=0 --force`
sends 0: the processes are killed at once. `orphanDependents` (deprecated) is Orphan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from emunet.api import status

POLICIES = ("Foreground", "Background", "Orphan")


@dataclass(frozen=True)
class DeleteOptions:
    grace: int | None = None
    propagation: str | None = None


def _invalid(field: str, message: str) -> status.APIError:
    return status.invalid("DeleteOptions", "", [{"reason": "FieldValueInvalid", "field": field,
                                                 "message": message}])


async def of(request: web.Request) -> DeleteOptions:
    opts: dict[str, Any] = {}
    q = request.query
    if "gracePeriodSeconds" in q:
        try:
            opts["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
        except ValueError:
            raise status.bad_request(f"invalid gracePeriodSeconds "
                                     f"{q['gracePeriodSeconds']!r}") from None
    for name in ("propagationPolicy", "orphanDependents"):
        if name in q:
            opts[name] = q[name] if name == "propagationPolicy" else q[name] in ("true", "1")
    raw = await request.read()
    if raw.strip():
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise status.bad_request(f"the body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise status.bad_request("the body must be a DeleteOptions object")
        opts.update({k: v for k, v in body.items() if v is not None})
    grace = opts.get("gracePeriodSeconds")
    if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool)):
        raise _invalid("gracePeriodSeconds", f"Invalid value: {json.dumps(grace)}: must be an "
                       "integer")
    policy = opts.get("propagationPolicy")
    if policy is not None and policy not in POLICIES:
        raise _invalid("propagationPolicy", f'Unsupported value: {json.dumps(policy)}: '
                       f'supported values: "Foreground", "Background", "Orphan"')
    if opts.get("orphanDependents") is True:
        if policy is not None:
            raise _invalid("propagationPolicy", "Invalid value: "
                           f"{json.dumps(policy)}: orphanDependents and deletionPropagation "
                           "cannot be both set")
        policy = "Orphan"
    return DeleteOptions(grace, policy)


def pod_grace(opts: DeleteOptions, live: dict[str, Any], written: dict[str, Any] | None
              ) -> int | None:
    """The grace period a pod is deleted with (see the module doc)."""
    if live.get("status", {}).get("phase") in ("Succeeded", "Failed"):
        return 0
    grace = opts.grace
    if grace is None and written is not None:
        grace = (written.get("spec") or {}).get("terminationGracePeriodSeconds")
        grace = grace if isinstance(grace, int) and not isinstance(grace, bool) else None
    if grace is not None and grace < 0:
        return 1
    return grace
