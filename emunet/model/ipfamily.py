"""A Service's IP families as the API server settles them on create, from the cluster's families.

kube-apiserver's `initIPFamilyFields` (pkg/registry/core/service/storage/alloc.go): the
defaulted `ipFamilyPolicy` (SingleStack; RequireDualStack for a headless Service without a
selector), the families inferred from given clusterIPs, the special case of headless without a
selector (any families, even on a single-stack cluster), RequireDualStack refused on a
single-stack cluster, a family the cluster lacks refused, and a second family appended for a
non-SingleStack Service on a dual-stack cluster. Errors carry the API server's field path and
wording. Pure; the config loader reports the errors (located), the state allocates by the
result, the API server shows it.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from emunet.model import IPV4, IPV6, Service

SINGLE, PREFER, REQUIRE = "SingleStack", "PreferDualStack", "RequireDualStack"
POLICIES = (PREFER, REQUIRE, SINGLE)  # sorted, as the API server lists supported values


@dataclass(frozen=True)
class Families:
    families: tuple[str, ...]  # () for ExternalName
    policy: str | None  # None for ExternalName
    cluster_ips: tuple[str, ...]  # the given ones, normalised: clusterIPs, else (clusterIP,)
    errors: tuple[tuple[str, str], ...] = ()  # (field path, the API server's message)


def invalid(value: object, detail: str) -> str:
    """A field.Invalid error's text: `Invalid value: "x": detail` (a list as the API
    server's JSON shows it: ["a","b"])."""
    shown = json.dumps(list(value), separators=(",", ":")) if isinstance(
        value, tuple | list) else json.dumps(value)
    return f"Invalid value: {shown}: {detail}"


def family_of(ip: str) -> str:
    return IPV6 if ":" in ip else IPV4


def other(fam: str) -> str:
    return IPV6 if fam == IPV4 else IPV4


def given_ips(svc: Service) -> tuple[str, ...]:
    """spec.clusterIPs, or [spec.clusterIP] when only that is given (the API server's
    strategy keeps the two in step)."""
    if svc.cluster_ips:
        return svc.cluster_ips
    return (svc.cluster_ip,) if svc.cluster_ip else ()


def settle(svc: Service, cluster: tuple[str, ...]) -> Families:
    """The families, policy and given clusterIPs of `svc` on a cluster of `cluster` families
    (the first the primary, --service-cluster-ip-range[0])."""
    if svc.type == "ExternalName":
        return Families((), None, ())
    ips = given_ips(svc)
    headless = bool(ips) and ips[0] == "None"
    selectorless = not svc.selector
    policy = svc.ip_family_policy
    if policy is None:
        policy = REQUIRE if headless and selectorless else SINGLE
    errors: list[tuple[str, str]] = []
    if policy == SINGLE:
        if len(ips) == 2:
            errors.append(("spec.ipFamilyPolicy", invalid(policy, "must be 'RequireDualStack' "
                           "or 'PreferDualStack' when multiple cluster IPs are specified")))
        if len(svc.ip_families) == 2:
            errors.append(("spec.ipFamilyPolicy", invalid(policy, "must be 'RequireDualStack' "
                           "or 'PreferDualStack' when multiple IP families are specified")))
    families = list(svc.ip_families)
    for i, ip in enumerate(ips):
        if ip == "None":
            break
        fam = family_of(ip)
        if i >= len(families):
            if fam not in cluster:
                errors.append((f"spec.clusterIPs[{i}]", invalid(
                    ips, f"{fam} is not configured on this cluster")))
            else:
                families.append(fam)
    if errors:
        return Families(tuple(families), policy, ips, tuple(errors))
    if headless and selectorless:
        if not families:
            families = [cluster[0]]
        if len(families) < 2 and policy != SINGLE:
            families.append(other(families[0]))
        return Families(tuple(families), policy, ips)
    if policy == REQUIRE and len(cluster) < 2:
        errors.append(("spec.ipFamilyPolicy", invalid(
            policy, "this cluster is not configured for dual-stack services")))
    for i, fam in enumerate(families):
        if fam not in cluster:
            errors.append((f"spec.ipFamilies[{i}]", invalid(fam,
                                                            "not configured on this cluster")))
    if errors:
        return Families(tuple(families), policy, ips, tuple(errors))
    if not families:
        families = [cluster[0]]
    if policy != SINGLE and len(families) == 1 and len(cluster) == 2:
        families.append(other(families[0]))
    return Families(tuple(families), policy, ips)


def check_fields(svc_ips: tuple[str, ...], cluster_ip: str | None,
                 families: tuple[str, ...]) -> list[tuple[str, str]]:
    """ValidateServiceClusterIPsRelatedFields (pkg/apis/core/validation), the parts that need
    no cluster: clusterIPs well formed, 'None' alone, at most two of different families,
    matching ipFamilies by index, clusterIPs[0] == clusterIP. (Family names and duplicates
    are checked where ipFamilies is read.)"""
    errors: list[tuple[str, str]] = []
    if cluster_ip and svc_ips and svc_ips[0] != cluster_ip:
        errors.append(("spec.clusterIPs", invalid(svc_ips, "first value must match `clusterIP`")))
    bad = False
    for i, ip in enumerate(svc_ips):
        if i == 0 and ip == "None":
            if len(svc_ips) > 1:
                bad = True
                errors.append(("spec.clusterIPs", invalid(
                    svc_ips, "'None' must be the first and only value")))
            continue
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            bad = True
            errors.append((f"spec.clusterIPs[{i}]", invalid(
                ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")))
    if len(svc_ips) > 2:
        errors.append(("spec.clusterIPs", invalid(svc_ips, "may only hold up to 2 values")))
    if bad:
        return errors
    if len(svc_ips) > 1 and len({family_of(ip) for ip in svc_ips}) != len(svc_ips):
        errors.append(("spec.clusterIPs", invalid(
            svc_ips, "may specify no more than one IP for each IP family")))
    if svc_ips and svc_ips[0] != "None":
        for i, ip in enumerate(svc_ips[:len(families)]):
            if families[i] == IPV4 and family_of(ip) == IPV6:
                errors.append((f"spec.clusterIPs[{i}]", invalid(
                    ip, f"expected an IPv4 value as indicated by `ipFamilies[{i}]`")))
            elif families[i] == IPV6 and family_of(ip) == IPV4:
                errors.append((f"spec.clusterIPs[{i}]", invalid(
                    ip, f"expected an IPv6 value as indicated by `ipFamilies[{i}]`")))
    return errors
