"""Read a multi-document YAML file into plain containers that remember their line numbers.

PyYAML's composer gives a node tree with marks; this module turns it into `LDict`/`LList`
(dict/list subclasses carrying the 1-based line of every key and item) with scalars built by
PyYAML's safe constructor, so later checks can say *where* a value was written. YAML mistakes
(syntax, duplicate keys, which YAML 1.2 forbids and Kubernetes' strict decoding rejects,
non-scalar keys, unsafe tags, recursive aliases, alias bombs) become located errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from emunet.config.errors import ConfigError

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAX_NODES = 200_000  # expanded nodes per file: stops "billion laughs" alias bombs
_NULL_TAG = "tag:yaml.org,2002:null"


class LDict(dict):
    """A YAML mapping: `line` of the mapping, `key_lines[key]` the line of each key,
    `block_lines[key]` the first content line of a value written as a block scalar (`|`, `>`:
    its text's line N is on file line block_lines[key] + N - 1, e.g. a ConfigMap's Corefile)."""

    line: int = 0
    key_lines: dict[str, int]
    block_lines: dict[str, int]


class LList(list):
    """A YAML sequence: `line` of the sequence, `item_lines[i]` the line of item i."""

    line: int = 0
    item_lines: list[int]


@dataclass(frozen=True)
class Document:
    index: int  # 0-based position among the file's documents
    line: int  # first line of the document's content
    value: Any


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class _Builder:
    def __init__(self, loader: Any, file: str) -> None:
        self.loader = loader
        self.file = file
        self.count = 0
        self.active: set[int] = set()

    def fail(self, line: int, message: str, hint: str = "") -> ConfigError:
        return ConfigError(self.file, line, "", message, hint)

    def build(self, node: yaml.Node) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:
            raise self.fail(_line(node), "the document expands to too many values",
                            "aliases that repeat aliases multiply; write the values out")
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.loader.construct_object(node, deep=True)
            except yaml.YAMLError as e:
                raise self.fail(_line(node), f"cannot read this value: {_problem(e)}",
                                "Kubernetes manifests use plain YAML without custom tags") from e
        if id(node) in self.active:
            raise self.fail(_line(node), "an alias refers to the collection that contains it",
                            "recursive YAML cannot be turned into an object")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return self._seq(node)
            return self._map(node)
        finally:
            self.active.discard(id(node))

    def _seq(self, node: yaml.SequenceNode) -> LList:
        out = LList()
        out.line = _line(node)
        out.item_lines = []
        for item in node.value:
            out.append(self.build(item))
            out.item_lines.append(_line(item))
        return out

    def _map(self, node: yaml.MappingNode) -> LDict:
        try:
            self.loader.flatten_mapping(node)  # YAML merge keys (<<), as Kubernetes accepts
        except yaml.YAMLError as e:
            raise self.fail(_line(node), f"bad merge key: {_problem(e)}") from e
        out = LDict()
        out.line = _line(node)
        out.key_lines = {}
        out.block_lines = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                raise self.fail(_line(knode), "a mapping key must be a plain name",
                                "field names are strings, not lists or mappings")
            key = str(knode.value)
            if key in out.key_lines:
                raise self.fail(_line(knode), f"duplicate key {key!r} (first on line "
                                f"{out.key_lines[key]})", "keep one of them")
            out.key_lines[key] = _line(knode)
            if isinstance(vnode, yaml.ScalarNode) and vnode.style in ("|", ">"):
                out.block_lines[key] = _line(vnode) + 1  # the indicator's line, then the text
            out[key] = self.build(vnode)
        return out


def _problem(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.MarkedYAMLError):
        return " ".join(p for p in (e.context, e.problem) if p) or "invalid YAML"
    return str(e).splitlines()[0] if str(e) else "invalid YAML"


def _is_empty(node: yaml.Node | None) -> bool:
    return node is None or (isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG)


def read_documents(text: str, file: str) -> list[Document]:
    """Parse every document of `text`; empty documents (a stray `---`) are skipped, as kubectl
    does. Raises ConfigError for anything that is not well-formed YAML."""
    loader = _Loader(text)
    docs: list[Document] = []
    builder = _Builder(loader, file)
    index = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            if not _is_empty(node):
                docs.append(Document(index, _line(node), builder.build(node)))
            index += 1
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise ConfigError(file, line, "", f"YAML syntax error: {_problem(e)}",
                          "check indentation and quoting around this line") from e
    except yaml.reader.ReaderError as e:  # a NUL or other control character: its position
        pos = e.position
        line, col = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
        ch = e.character if isinstance(e.character, int) else ord(e.character or "\0")
        raise ConfigError(file, line, "", f"column {col}: character #x{ch:04x} is not allowed "
                          "in YAML (YAML 1.1 section 5.1: printable characters only)",
                          "remove it; a binary file is not a config") from e
    except yaml.YAMLError as e:
        raise ConfigError(file, 0, "", f"YAML error: {_problem(e)}") from e
    except RecursionError as e:
        raise ConfigError(file, 0, "", "the YAML is nested too deeply") from e
    finally:
        loader.dispose()
    return docs
