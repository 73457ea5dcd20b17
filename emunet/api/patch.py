"""The three patch types the API server accepts, applied to a plain JSON object.

- JSON merge patch (RFC 7386, `application/merge-patch+json`): maps merge, `null` deletes,
  anything else (lists included) replaces. `kubectl label` and `kubectl scale` send it.
- Strategic merge patch (`application/strategic-merge-patch+json`, apimachinery
  pkg/util/strategicpatch/patch.go): as merge patch, but lists whose field has
  `patchStrategy: merge` merge element by element on their `patchMergeKey`
  (k8s.io/api/core/v1/types.go: containers, env, volumes by `name`, container ports by
  `containerPort`, Service ports by `port`, volumeMounts by `mountPath`), with the directives
  `$patch: replace|delete|merge`, `$setElementOrder/<field>`, `$retainKeys` and
  `$deleteFromPrimitiveList/<field>`. `kubectl apply` (client side) sends it for built-in kinds.
- JSON patch (RFC 6902, `application/json-patch+json`): a list of operations on JSON
  pointers (`kubectl patch --type=json`).
- Apply patch (`application/apply-patch+yaml`, server-side apply): the full intended object.
  Without managedFields (research section 12: not needed by kubectl) it is merged into the live
  object strategically, so fields other managers set (a `kubectl label`) stay; a field the
  applier stops sending is not removed (see docs/status.md).
"""

from __future__ import annotations

import copy
from typing import Any

# patchMergeKey of the list fields with patchStrategy "merge" (k8s.io/api/core/v1/types.go,
# apps/v1/types.go); `ports` depends on where it is (container or Service).
MERGE_KEYS: dict[str, str] = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "env": "name", "volumes": "name", "volumeMounts": "mountPath",
    "volumeDevices": "devicePath", "imagePullSecrets": "name", "hostAliases": "ip",
    "conditions": "type", "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}
# primitive lists with patchStrategy "merge" (a set, not replaced): metadata.finalizers
PRIMITIVE_MERGE = {"finalizers"}

JSON_MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"


class PatchError(ValueError):
    """A patch that cannot be applied (wrong shape, unknown directive): a 400 or 422."""


def merge_key(path: tuple[str, ...], field: str) -> str | None:
    if field == "ports":
        # containers[].ports merge on containerPort; ServiceSpec.ports on port
        return "containerPort" if any(p in MERGE_KEYS and p.endswith("ontainers")
                                      for p in path) else "port"
    return MERGE_KEYS.get(field)


def json_merge(target: Any, patch: Any) -> Any:
    """RFC 7386 MergePatch(target, patch)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = json_merge(out.get(k), v)
    return out


def strategic_merge(target: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    """Apply a strategic merge patch to `target` (neither is changed)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise PatchError(f"unknown patch directive {directive!r}")
    out = copy.deepcopy(target)
    retain = patch.get("$retainKeys")
    orders: dict[str, list[Any]] = {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys"):
            continue
        if k.startswith("$setElementOrder/"):
            orders[k.split("/", 1)[1]] = v if isinstance(v, list) else []
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(out.get(field), list) and isinstance(v, list):
                out[field] = [x for x in out[field] if x not in v]
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            merged = strategic_merge(out.get(k), v, (*path, k))
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        elif isinstance(v, list):
            out[k] = _merge_list(out.get(k), v, (*path, k), k)
        else:
            out[k] = v
    for field, order in orders.items():
        if isinstance(out.get(field), list):
            out[field] = _ordered(out[field], order, merge_key(path, field))
    if isinstance(retain, list):
        keep = set(retain)
        out = {k: v for k, v in out.items() if k in keep}
    return out


def _merge_list(target: Any, patch: list[Any], path: tuple[str, ...], field: str) -> list[Any]:
    key = merge_key(path[:-1], field)
    if not isinstance(target, list):
        target = []
    if any(isinstance(e, dict) and e.get("$patch") == "replace" for e in patch):
        return [copy.deepcopy(e) for e in patch if not (isinstance(e, dict) and "$patch" in e)]
    if field in PRIMITIVE_MERGE:
        return [*target, *[e for e in patch if e not in target]]
    if key is None:  # no merge strategy: the list is replaced (atomic)
        return [copy.deepcopy(e) for e in patch
                if not (isinstance(e, dict) and e.get("$patch") == "delete")]
    out = [copy.deepcopy(e) for e in target]
    for elem in patch:
        if not isinstance(elem, dict) or key not in elem:
            raise PatchError(f"{'.'.join(path)}: map: {elem!r} does not contain declared "
                             f"merge key: {key}")
        idx = next((i for i, e in enumerate(out)
                    if isinstance(e, dict) and e.get(key) == elem[key]), None)
        if elem.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
            continue
        if idx is None:
            out.append(strategic_merge({}, elem, path))
        else:
            out[idx] = strategic_merge(out[idx], elem, path)
    return out


def _ordered(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """`$setElementOrder`: the elements in the order given, the others after them."""
    if key is None:
        return items
    rank = {o.get(key): i for i, o in enumerate(order) if isinstance(o, dict)}
    return sorted(items, key=lambda e: rank.get(e.get(key) if isinstance(e, dict) else None,
                                                len(rank)))


def _pointer(path: Any) -> list[str]:
    """RFC 6901: "/a/b~1c" -> ["a", "b/c"]."""
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _walk(doc: Any, parts: list[str]) -> tuple[Any, str]:
    """The container of the pointer's last part, and that part."""
    if not parts:
        raise PatchError("the whole document cannot be the target")
    cur = doc
    for p in parts[:-1]:
        cur = _child(cur, p)
    return cur, parts[-1]


def _child(cur: Any, p: str) -> Any:
    if isinstance(cur, dict) and p in cur:
        return cur[p]
    if isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
        return cur[int(p)]
    raise PatchError(f"path element {p!r} not found")


def json_patch(target: dict[str, Any], ops: Any) -> dict[str, Any]:
    """RFC 6902 JSON patch (`kubectl patch --type=json`): add, remove, replace, move, copy,
    test, in order; any failure fails the whole patch."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch is a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid JSON patch operation {op!r}")
        kind, parts = op["op"], _pointer(op["path"])
        if kind in ("move", "copy"):
            src, key = _walk(doc, _pointer(op.get("from")))
            value = copy.deepcopy(_child(src, key))
            if kind == "move":
                del src[int(key) if isinstance(src, list) else key]
            kind, op = "add", {**op, "value": value}
        if kind == "test":
            parent, key = _walk(doc, parts)
            if _child(parent, key) != op.get("value"):
                raise PatchError(f"test failed at {op['path']}")
            continue
        parent, key = _walk(doc, parts)
        if kind == "remove" or kind == "replace":
            _child(parent, key)  # must exist
        if isinstance(parent, list):
            if kind == "add":
                if key == "-":
                    parent.append(copy.deepcopy(op.get("value")))
                elif key.isdigit() and int(key) <= len(parent):
                    parent.insert(int(key), copy.deepcopy(op.get("value")))
                else:
                    raise PatchError(f"index {key!r} out of range")
            elif kind == "remove":
                del parent[int(key)]
            elif kind == "replace":
                parent[int(key)] = copy.deepcopy(op.get("value"))
            else:
                raise PatchError(f"unknown JSON patch op {kind!r}")
        elif isinstance(parent, dict):
            if kind in ("add", "replace"):
                parent[key] = copy.deepcopy(op.get("value"))
            elif kind == "remove":
                del parent[key]
            else:
                raise PatchError(f"unknown JSON patch op {kind!r}")
        else:
            raise PatchError(f"{op['path']}: not an object or a list")
    return doc


def apply_patch(live: dict[str, Any], content_type: str, patch: Any) -> dict[str, Any]:
    """The object after `patch` of `content_type` (one of the types above)."""
    if content_type == JSON_PATCH:
        return json_patch(live, patch)
    if not isinstance(patch, dict):
        raise PatchError("the patch must be a JSON object")
    if content_type == JSON_MERGE:
        out = json_merge(live, patch)
    elif content_type in (STRATEGIC, APPLY):
        out = strategic_merge(live, patch)
    else:
        raise PatchError(f"unsupported patch type {content_type!r}")
    if not isinstance(out, dict):
        raise PatchError("the patch deleted the whole object")
    return out
