"""Load and validate an emunet config file into `emunet.model.Config`.

A config is one multi-document YAML file: an emunet `Cluster` document followed by ordinary
Kubernetes manifests. Every mistake becomes a located `ConfigError` (file, line, field path,
message, hint); kinds emunet does not implement yet are kept in `Config.others` with a warning.

    from emunet.config import load_config, ConfigError
    cfg = load_config("configs/two-node.yaml")
    cfg = load_config("more.yaml", base=running_cluster_spec)   # `emunet apply -f`
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from emunet import model
from emunet.config.documents import parse_documents
from emunet.config.errors import Collector, ConfigError
from emunet.config.validate import cross_check
from emunet.config.yamlsrc import read_documents

__all__ = ["MAX_BYTES", "ConfigError", "load_config", "load_config_text"]

# The largest config read: a cluster of thousands of objects is well under it, and the API
# server's body limit is 3 MiB (emunet.api.server.MAX_BODY).
MAX_BYTES = 8 * 1024 * 1024


def _check_size(file: str, size: int) -> None:
    if size > MAX_BYTES:
        raise ConfigError(file, 0, "", f"the config is larger than {MAX_BYTES // 2 ** 20} MiB "
                          f"(emunet reads at most {MAX_BYTES} bytes)",
                          "split it into several files, or is it the right file?")


def load_config(path: str | os.PathLike[str], base: model.ClusterSpec | None = None,
                known_namespaces: Iterable[str] | None = None) -> model.Config:
    """Read and validate a config file.

    Without `base` the file must hold exactly one Cluster document. With `base` (the running
    cluster, for `emunet apply -f`) it holds only Kubernetes manifests, checked against `base`;
    `known_namespaces` are the namespaces that cluster already has (when None, namespaces the
    file does not declare are not checked, as the cluster may have them).
    """
    file = os.fspath(path)
    try:
        with open(file, "rb") as f:
            data = f.read(MAX_BYTES + 1)  # /dev/zero or a 10 GB file: read no more than this
    except OSError as e:
        raise ConfigError(file, 0, "", f"cannot read the config: {e.strerror or e}") from e
    _check_size(file, len(data))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError(file, line, "", "the file is not UTF-8 text",
                          "YAML files are UTF-8 (YAML 1.2 section 5.2)") from e
    return load_config_text(text, file, base, known_namespaces)


def load_config_text(text: str, file: str = "<config>", base: model.ClusterSpec | None = None,
                     known_namespaces: Iterable[str] | None = None) -> model.Config:
    """`load_config` for text already in memory (stdin, tests); `file` names it in errors."""
    _check_size(file, len(text))
    col = Collector(file)
    parsed = parse_documents(col, read_documents(text, file))
    spec = base
    if base is not None:
        for _, doc in parsed.clusters:
            doc.error("kind", "a Cluster document cannot be applied to a running cluster",
                      "remove it; `emunet up` reads it, `emunet apply -f` takes manifests only")
    elif not parsed.clusters and not col.errors:
        col.error(1, "", "no Cluster document",
                  "start the file with apiVersion: emunet/v1alpha1, kind: Cluster")
    elif len(parsed.clusters) > 1:
        first = parsed.clusters[0][1].line
        for _, doc in parsed.clusters[1:]:
            doc.error("kind", f"a second Cluster document (the first is on line {first})",
                      "a file describes one cluster")
    elif parsed.clusters:
        spec = parsed.clusters[0][0]
    if spec is not None and not col.errors:
        cross_check(col, parsed, spec, base is not None, known_namespaces)
    col.raise_if_any()
    assert spec is not None  # no errors means a Cluster was parsed or given
    return model.Config(
        cluster=spec,
        namespaces=tuple(o for o, _ in parsed.namespaces),
        pods=tuple(o for o, _ in parsed.pods),
        services=tuple(o for o, _ in parsed.services),
        deployments=tuple(o for o, _ in parsed.deployments),
        others=tuple(o for o, _ in parsed.others),
        network_policies=tuple(o for o, _ in parsed.policies),
        cilium_policies=tuple(o for o, _ in parsed.cilium),
        endpoint_sets=tuple(o for o, _ in parsed.endpoints),
        coredns=parsed.coredns[0][0] if parsed.coredns else None,
        warnings=col.sorted_warnings(),
        source=file,
    )
