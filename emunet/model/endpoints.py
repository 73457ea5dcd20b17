"""Endpoints and EndpointSlices a user wrote (or the API server's own `kubernetes` Endpoints).

A Service without a selector takes its backends from these, as in Kubernetes: the Endpoints
object of the Service's name (which the EndpointSlice mirroring controller copies into slices)
and every EndpointSlice labelled `kubernetes.io/service-name: <service>`. Both kinds become one
`EndpointSet` of groups (an Endpoints subset, or a whole slice): addresses x ports. The JSON
form for state.json is `to_dict` / `from_dict`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from emunet.model import Loc

SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # discovery.k8s.io/v1 LabelServiceName
ENDPOINTS, SLICE = "Endpoints", "EndpointSlice"


@dataclass(frozen=True)
class EndpointAddress:
    ip: str
    # Endpoints: addresses (True) or notReadyAddresses (False); a slice: conditions.ready,
    # where an absent value means ready (discovery/v1 EndpointConditions: "nil ... as true")
    ready: bool = True
    hostname: str | None = None  # DNS: <hostname>.<service>.<ns>.svc.<zone>
    node_name: str | None = None
    target: tuple[str, str] | None = None  # targetRef of kind Pod: (namespace, name)


@dataclass(frozen=True)
class EndpointPort:
    port: int | None  # None: a slice port without a number ("all ports"; not balanced to)
    protocol: str = "TCP"
    name: str = ""  # matched against the Service port's name ("" for an unnamed port)


@dataclass(frozen=True)
class EndpointGroup:
    """An Endpoints subset or an EndpointSlice: every address serves every port."""

    addresses: tuple[EndpointAddress, ...] = ()
    ports: tuple[EndpointPort, ...] = ()


@dataclass(frozen=True)
class EndpointSet:
    kind: str  # ENDPOINTS | SLICE
    namespace: str
    name: str
    service: str  # the Service it feeds: an Endpoints' own name, a slice's service-name label
    groups: tuple[EndpointGroup, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    address_type: str = "IPv4"  # a slice's addressType (IPv6/FQDN slices are not balanced to)
    loc: Loc | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)


def to_dict(s: EndpointSet) -> dict[str, Any]:
    return dataclasses.asdict(s)


def from_dict(d: dict[str, Any]) -> EndpointSet:
    groups = tuple(
        EndpointGroup(
            addresses=tuple(EndpointAddress(**{**a, "target": tuple(a["target"])
                                               if a.get("target") else None})
                            for a in g["addresses"]),
            ports=tuple(EndpointPort(**p) for p in g["ports"]))
        for g in d["groups"])
    return EndpointSet(**{**d, "groups": groups,
                          "loc": Loc(**d["loc"]) if d.get("loc") else None})
