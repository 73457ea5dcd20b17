"""Every Kubernetes manifest emunet ships (configs/, labs/, tests/) is valid Kubernetes: checked
offline against the upstream OpenAPI-derived JSON schemas that kubernetes-validate bundles, in
strict mode (an unknown field is an error, as `kubectl apply` with strict field validation
makes it), so a user who outgrows emunet applies the same files to k3s unchanged.

Skipped by apiVersion: emunet's own `kind: Cluster` (emunet/v1alpha1), which no API server knows.
CiliumNetworkPolicy: kubernetes-validate carries no Cilium CRD schemas, so only the parts of a
CNP that are Kubernetes types are checked strictly (metadata as ObjectMeta, endpointSelector and
from/toEndpoints as LabelSelector); the rest of its spec is emunet's own loader's to check.
YAML embedded in Python test files (f-strings, templates, deliberate mistakes) is out of scope.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml
from kubernetes_validate.utils import schema_contents

from emunet.api.objects import VERSION

ROOT = Path(__file__).resolve().parents[2]
SEARCHED = ("configs", "labs", "tests")
# The Kubernetes version whose schemas apply: the one emunet's API server reports in /version
# (what kubectl believes it talks to), e.g. "v1.32.0-emunet" -> "1.32.0".
K8S_VERSION = VERSION.lstrip("v").split("-")[0]
EMUNET_API = "emunet/v1alpha1"
CILIUM_API = "cilium.io/v2"

# YAML under SEARCHED that holds no Kubernetes manifests, reviewed one by one. Each entry must
# still match something (test_every_exclusion_matches), so the list cannot silently go stale.
NOT_MANIFESTS = {
    # the broken-config corpus: each file carries one deliberate mistake (tests/configs/make_bad.py)
    "tests/configs/bad/*.yaml": "deliberately broken configs",
    "labs/*/lab.yaml": "a lab's definition (tasks, checks, hints), read by emunet.labs",
    "tests/labs/solutions/*/solution.yaml": "a lab's reference solution steps, replayed by e2e",
}


def _excluded() -> set[Path]:
    return {p for pattern in NOT_MANIFESTS for p in ROOT.glob(pattern)}


def _manifest_files() -> list[Path]:
    skip = _excluded()
    found = {p for d in SEARCHED for ext in ("yaml", "yml") for p in (ROOT / d).rglob(f"*.{ext}")}
    return sorted(found - skip)


MANIFESTS = _manifest_files()


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network while validating: every connect and name lookup fails loudly."""

    def refuse(*_a: Any, **_k: Any) -> None:
        raise AssertionError("manifest validation tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _strict(doc: dict) -> None:
    """kubernetes-validate in strict mode against K8S_VERSION's schemas; raises on any error."""
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def _k8s_type(schema_file: str) -> jsonschema.Draft202012Validator:
    """A strict validator for one Kubernetes type (not a top-level kind) from the bundled set,
    resolving its references into the same version's _definitions.json."""
    base = f"kubernetes-json-schema/v{K8S_VERSION}-local-strict"
    schema = schema_contents(f"{base}/{schema_file}", K8S_VERSION)
    defs = schema_contents(f"{base}/_definitions.json", K8S_VERSION)
    registry: referencing.Registry = referencing.Resource.from_contents(defs) @ (
        referencing.Resource.from_contents(schema) @ referencing.Registry()
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _cnp_selectors(spec: dict) -> Iterator[tuple[str, Any]]:
    """(path, selector) of every Kubernetes LabelSelector in a CiliumNetworkPolicy spec."""
    for key in ("endpointSelector", "nodeSelector"):
        if key in spec:
            yield f"spec.{key}", spec[key]
    for direction, peers in (
        ("ingress", "fromEndpoints"),
        ("ingressDeny", "fromEndpoints"),
        ("egress", "toEndpoints"),
        ("egressDeny", "toEndpoints"),
    ):
        for i, rule in enumerate(spec.get(direction) or []):
            for j, sel in enumerate((rule or {}).get(peers) or []):
                yield f"spec.{direction}[{i}].{peers}[{j}]", sel


def _check_cnp(doc: dict) -> list[str]:
    """What is wrong with a CiliumNetworkPolicy's Kubernetes-typed parts (empty when valid)."""
    meta, selector = _k8s_type("objectmeta-meta-v1.json"), _k8s_type("labelselector-meta-v1.json")
    wrong = [f"metadata: {e.message}" for e in meta.iter_errors(doc.get("metadata"))]
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return [*wrong, "spec: not a mapping"]
    for path, sel in _cnp_selectors(spec):
        wrong += [f"{path}: {e.message}" for e in selector.iter_errors(sel)]
    return wrong


def _why_invalid(doc: Any) -> str | None:
    """None if `doc` is a valid Kubernetes object (or emunet's Cluster), else the reason."""
    if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
        return "not a Kubernetes object (no apiVersion/kind)"
    if doc["apiVersion"] == EMUNET_API:
        return None if doc["kind"] == "Cluster" else f"unknown emunet kind {doc['kind']}"
    if doc["apiVersion"] == CILIUM_API:
        return "; ".join(_check_cnp(doc)) or None
    try:
        _strict(doc)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.absolute_path)
        return f"{path or '<top>'}: {e.message}"
    except kubernetes_validate.SchemaNotFoundError as e:
        return e.message
    return None


def test_the_corpus_is_found():
    # the story's configs, every lab's start config, the e2e configs: a glob that finds
    # nothing would make the parametrized test below vacuous
    assert len(MANIFESTS) >= 25
    names = {p.relative_to(ROOT).as_posix() for p in MANIFESTS}
    assert {"configs/two-node.yaml", "labs/07-cilium-l7/start.yaml"} <= names
    assert not any(n.startswith("tests/configs/bad/") for n in names)


def test_every_exclusion_matches():
    for pattern, why in NOT_MANIFESTS.items():
        assert list(ROOT.glob(pattern)), f"{pattern} ({why}) matches nothing: drop it"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shipped_manifest_is_valid_kubernetes(path: Path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} holds no documents"
    wrong = {}
    for i, doc in enumerate(docs):
        if why := _why_invalid(doc):
            name = (doc.get("metadata") or {}).get("name") if isinstance(doc, dict) else None
            wrong[f"document {i} ({name})"] = why
    assert not wrong, f"{path.relative_to(ROOT)}: {wrong}"


@pytest.mark.parametrize(
    ("bad", "expect"),
    [
        ("port-as-string.yaml", "'80' is not of type 'integer'"),
        ("label-value-number.yaml", "is not of type 'string'"),
        ("container-no-name.yaml", "'name' is a required property"),
        ("wrong-apiversion.yaml", "Couldn't find schema for kind Pod with api version apps/v1"),
    ],
)
def test_the_check_rejects_what_kubernetes_rejects(bad: str, expect: str):
    """The same check on bad-corpus files Kubernetes would refuse too: it is not a no-op."""
    docs = yaml.safe_load_all((ROOT / "tests/configs/bad" / bad).read_text())
    reasons = [why for d in docs if d and (why := _why_invalid(d))]
    assert any(expect in r for r in reasons), reasons


def test_strict_mode_rejects_an_unknown_field():
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "web", "image": "nginx", "imagePullPolcy": "Always"}]},
    }
    assert "'imagePullPolcy' was unexpected" in (_why_invalid(pod) or "")


def test_a_cilium_policy_with_a_malformed_selector_is_rejected():
    cnp = {
        "apiVersion": CILIUM_API,
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "p", "namespace": "x", "lables": {}},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"fromEndpoints": [{"matchLabel": {"app": "web"}}]}],
        },
    }
    why = _why_invalid(cnp) or ""
    assert "metadata: " in why and "'lables' was unexpected" in why
    assert "spec.ingress[0].fromEndpoints[0]: " in why and "'matchLabel' was unexpected" in why
