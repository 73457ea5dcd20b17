"""Which object a request means: the parsed resource URL, and a pod's container by kubelet's
rules (the only one, or the one named; several and none named is a 400, as the API says)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emunet.api import resources, status
from emunet.api.resources import Resource
from emunet.api.view import View


@dataclass
class Target:
    """A parsed resource URL: `[namespaces/NS/]PLURAL[/NAME[/SUB]]` of one group-version."""

    res: Resource
    namespace: str | None
    name: str | None
    sub: str | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace or ("default" if self.res.namespaced else ""), self.name or "")


def parse(group: str, version: str, rest: list[str]) -> Target:
    ns = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        ns, rest = rest[1], rest[2:]
    if not rest:
        raise status.no_route()
    res = resources.BY_PATH.get((group, version, rest[0]))
    if res is None or len(rest) > 3:
        raise status.no_route()
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if ns is not None and not res.namespaced:
        raise status.no_route()
    return Target(res, ns, name, sub)


def pod_of(view: View, t: Target) -> dict[str, Any]:
    obj = view.objs.get("pods", {}).get(t.key)
    if obj is None:
        raise status.not_found("pods", t.name or "")
    return obj


def container_of(pod: dict[str, Any], wanted: str | None) -> str:
    names = [c["name"] for c in pod["spec"]["containers"]]
    name = pod["metadata"]["name"]
    if wanted is None:
        if len(names) == 1:
            return names[0]
        raise status.bad_request(f"a container name must be specified for pod {name}, choose "
                                 f"one of: [{' '.join(names)}]")
    if wanted not in names:
        raise status.bad_request(f"container {wanted} is not valid for pod {name}")
    return wanted
