"""apps/v1 Deployment documents to `model.Deployment`.

The pod template reuses the Pod spec parser (`kube.parse_pod_spec`). Rules follow the API
server (pkg/apis/apps/validation): spec.selector is required and must select the template's
labels; replicas >= 0; maxSurge/maxUnavailable are IntOrString (a number or "N%"), not both 0,
and a Recreate strategy takes no rollingUpdate block.
"""

from __future__ import annotations

import re

from emunet import model
from emunet.config import kube, names
from emunet.config.fields import Obj

SPEC_FIELDS = ("replicas", "selector", "template", "strategy")
SPEC_IGNORED = ("minReadySeconds", "revisionHistoryLimit", "progressDeadlineSeconds", "paused")
TEMPLATE_META = ("labels", "annotations", "name", "namespace")
_PERCENT = re.compile(r"[0-9]+%")


def parse_deployment(doc: Obj) -> model.Deployment | None:
    doc.check_fields(kube.TOP_FIELDS, kube.TOP_IGNORED, what="Deployment")
    errors_before = len(doc.col.errors)
    name, namespace, labels = kube.parse_metadata(doc, True, names.dns1123_subdomain)
    spec = doc.map("spec", required=True)
    if spec is None:
        return None
    spec.check_fields(SPEC_FIELDS, SPEC_IGNORED, what="Deployment spec")
    replicas = spec.int("replicas", lo=0, hi=2**31 - 1)
    selector = _selector(spec)
    template = spec.map("template", required=True)
    tlabels: dict[str, str] = {}
    fields: dict = {}
    if template is not None:
        template.check_fields(("metadata", "spec"), what="pod template")
        meta = template.map("metadata")
        if meta is not None:
            meta.check_fields(TEMPLATE_META, kube.META_IGNORED, what="template metadata")
            tlabels = meta.str_map("labels", names.label_key, names.label_value) or {}
            meta.str_map("annotations", names.label_key)
        pspec = template.map("spec", required=True)
        if pspec is not None:
            fields = kube.parse_pod_spec(pspec)
            if fields.get("node_name"):
                pspec.error("nodeName", "nodeName in a Deployment template pins every replica "
                            "to one node", "leave it out: emunet spreads replicas over nodes")
            if fields.get("restart_policy", "Always") != "Always":
                # apps validation: a ReplicaSet's pods are always restarted
                pspec.error("restartPolicy", f'Unsupported value: "{fields["restart_policy"]}"'
                            ': supported values: "Always"',
                            "a Deployment's pods run forever; use a Pod for Never/OnFailure")
    if selector is not None and template is not None and not selector:
        spec.error("selector", "empty selector", "add matchLabels matching the template labels")
    elif selector and template is not None and any(tlabels.get(k) != v
                                                   for k, v in selector.items()):
        sel = ",".join(f"{k}={v}" for k, v in selector.items())
        line = template.line_of("metadata")
        doc.col.error(line, template.sub("metadata.labels"),
                      f"`selector` does not match template `labels` (selector {sel})",
                      "give the template every label of spec.selector.matchLabels")
    strategy, surge, unavailable = _strategy(spec)
    if len(doc.col.errors) > errors_before or name is None or selector is None:
        return None
    template_pod = model.Pod(namespace="", name="", labels=tlabels, **fields)
    return model.Deployment(
        namespace=namespace, name=name, replicas=1 if replicas is None else replicas,
        selector=selector, template=template_pod, strategy=strategy, max_surge=surge,
        max_unavailable=unavailable, labels=labels, loc=kube.loc(doc))


def _selector(spec: Obj) -> dict[str, str] | None:
    sel = spec.map("selector", required=True)
    if sel is None:
        return None
    sel.check_fields(("matchLabels",), ("matchExpressions",), what="selector")
    if sel.has("matchExpressions"):
        sel.error("matchExpressions", "matchExpressions are not supported",
                  "use matchLabels")
    return sel.str_map("matchLabels", names.label_key, names.label_value) or {}


def _strategy(spec: Obj) -> tuple[str, int | str, int | str]:
    st = spec.map("strategy")
    if st is None:
        return "RollingUpdate", "25%", "25%"
    st.check_fields(("type", "rollingUpdate"), what="strategy")
    kind = st.str("type", choices=("RollingUpdate", "Recreate")) or "RollingUpdate"
    ru = st.map("rollingUpdate")
    if ru is None:
        return kind, "25%", "25%"
    if kind == "Recreate":
        st.error("rollingUpdate", "may not be specified when strategy type is 'Recreate'")
    ru.check_fields(("maxSurge", "maxUnavailable"), what="rollingUpdate")
    surge = _int_or_percent(ru, "maxSurge")
    unavailable = _int_or_percent(ru, "maxUnavailable")
    if _is_zero(surge) and _is_zero(unavailable):
        ru.error("maxUnavailable", "may not be 0 when maxSurge is 0",
                 "a rollout could never make progress")
    return kind, surge, unavailable


def _int_or_percent(o: Obj, key: str) -> int | str:
    v = o.raw(key)
    if v is None:
        return "25%"
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if isinstance(v, str) and _PERCENT.fullmatch(v):
        if int(v[:-1]) > 100 and key == "maxUnavailable":
            o.error(key, f"must not be greater than 100%, got {v}")
        return v
    o.error(key, f"must be a non-negative integer or a percentage like \"25%\", got {v!r}")
    return "25%"


def _is_zero(v: int | str) -> bool:
    return v == 0 or v == "0%"
