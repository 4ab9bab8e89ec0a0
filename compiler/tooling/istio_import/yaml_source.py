"""Safe, located YAML reading for `meshc import istio`.

Kubernetes YAML comes from people and from `kubectl get -o yaml`, and an importer must survive
whatever it is given. This module turns a file into plain values (dict, list, str, int, float,
bool, None) and a location for every key and value (`Located.where(path)`: a Span of the file,
so diagnostics print `file:line:column` like every other meshc diagnostic). It is safe:

- Nothing is constructed from tags: the text is only *composed* (PyYAML's node graph, with the
  marks of every node), and a node whose tag is not one of YAML's plain types (`!!python/object`,
  any `!custom` tag) is refused. Plain values are built here from the nodes.
- The size of a file is limited (MAX_BYTES), and so is its structure before anything is built:
  an event pass (PyYAML's parser, libyaml's when installed, is a state machine, not recursion) bounds the nesting depth
  (MAX_DEPTH) and the number of nodes (MAX_NODES); then the size of every aliased subtree is
  counted once, so that aliases that expand exponentially (the "billion laughs" bomb: 399 bytes
  that safe loading alone happily expands to 52 MB when walked) are refused from their counts,
  without expanding anything (MAX_EXPANDED).
- Malformed YAML is a located error, never an exception.

Every refusal is a `YamlError` with a span (or a path for file-level problems) and a code from
compiler/core/codes.py (E1001 malformed, E1002 refused as hostile).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from compiler.core.source import SourceFile, Span

MAX_BYTES = 16 * 1024 * 1024      # one YAML file; a whole cluster's `kubectl get -o yaml` fits
MAX_BYTES_TEXT = "16 MiB"
MAX_DEPTH = 64                    # nested mappings and sequences (Istio objects need about 12)
MAX_NODES = 200_000               # nodes written in one file (an Istio object has a few hundred)
MAX_EXPANDED = 200_000            # nodes of one file once every alias is expanded

_PLAIN_TAGS = {
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:timestamp",
}


class YamlError(Exception):
    def __init__(self, code: str, message: str, span: Span | None, hint: str | None = None):
        super().__init__(message)
        self.code, self.message, self.span, self.hint = code, message, span, hint


Path = tuple  # keys (str) and indices (int) from the document's root


@dataclass
class Document:
    """One YAML document: its plain value, and the spans of its keys and values by path."""
    value: object
    source: SourceFile
    spans: dict[Path, tuple[Span, Span | None]] = field(default_factory=dict)  # path -> (value span, key span)

    def where(self, path: Path) -> Span:
        """The span of the key at `path` (for a mapping entry), else of the value; the nearest
        enclosing one when `path` is not in the document."""
        while path not in self.spans and path:
            path = path[:-1]
        value, key = self.spans.get(path, (Span(self.source, 0, 0), None))
        return key or value

    def value_span(self, path: Path) -> Span:
        while path not in self.spans and path:
            path = path[:-1]
        return self.spans.get(path, (Span(self.source, 0, 0), None))[0]


def read_yaml(path: str, text: str | None = None) -> tuple[SourceFile, list[Document]]:
    """The documents of a YAML file (or of `text`, as if read from `path`). Raises YamlError."""
    if text is None:
        text = _read(path)
    source = SourceFile(path, text)
    import yaml

    # libyaml's parser when PyYAML has it (same events, nodes and character marks, ten times
    # faster on large or hostile files); the pure-Python one otherwise
    loader_class = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader
    _bound_events(source, text, loader_class)
    loader = loader_class(text)
    docs: list[Document] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                docs.append(_build(node, source))
    except yaml.MarkedYAMLError as err:
        raise _located(err, source) from None
    except yaml.YAMLError as err:
        raise YamlError("E1001", f"malformed YAML: {err}", Span(source, 0, 0)) from None
    finally:
        loader.dispose()
    return source, docs


def _read(path: str) -> str:
    from compiler.core.source import UnusableSource, read_source_bytes

    try:
        data = read_source_bytes(path)
    except UnusableSource as err:
        raise YamlError("E1002", f"`{path}` is {err.reason}", None) from None
    if len(data) > MAX_BYTES:
        raise YamlError("E1002", f"`{path}` is larger than {MAX_BYTES_TEXT}, the limit for one YAML file", None,
                        "split the objects into several files") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise YamlError("E1001", f"`{path}` is not UTF-8 (byte {err.start})", None) from None
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _span(source: SourceFile, node_or_event) -> Span:
    return Span(source, node_or_event.start_mark.index, max(node_or_event.start_mark.index,
                                                            node_or_event.end_mark.index))


def _located(err, source: SourceFile) -> YamlError:
    mark = err.problem_mark or err.context_mark
    offset = mark.index if mark is not None else 0
    what = err.problem or err.context or "malformed YAML"
    context = f" ({err.context})" if err.context and err.problem else ""
    return YamlError("E1001", f"malformed YAML: {what}{context}", Span(source, offset, offset))


def _bound_events(source: SourceFile, text: str, loader_class) -> None:
    """Depth, node count and tags from the event stream, before any node graph is composed.

    Then the aliases: each anchored node's size (itself and every node under it, its own aliases
    expanded) is computed as the events go by, so an alias costs its target's size. The expanded
    total is the size of what a walk of the documents would visit."""
    import yaml

    events = yaml.parse(text, Loader=loader_class)
    depth = nodes = 0
    # one frame per open collection: [size so far, anchor]; sizes of anchors already closed
    stack: list[list] = []
    anchors: dict[str, int] = {}
    expanded = 0
    try:
        for event in events:
            event = cast(Any, event)
            kind = type(event)
            if kind in (yaml.MappingStartEvent, yaml.SequenceStartEvent, yaml.ScalarEvent):
                nodes += 1
                tag = event.tag
                if tag is not None and tag not in ("!", *_PLAIN_TAGS):
                    raise YamlError("E1002", f"tag `{tag}` is refused: YAML is read as plain data, and a tag "
                                    "could construct objects", _span(source, event),
                                    "remove the tag: Kubernetes objects are plain maps, lists and scalars")
                if nodes > MAX_NODES:
                    raise YamlError("E1002", f"more than {MAX_NODES:,} YAML nodes in one file", _span(source, event))
            if kind in (yaml.MappingStartEvent, yaml.SequenceStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise YamlError("E1002", f"YAML nested more than {MAX_DEPTH} levels deep", _span(source, event),
                                    "an Istio object needs about a dozen levels")
                stack.append([1, event.anchor])
            elif kind in (yaml.MappingEndEvent, yaml.SequenceEndEvent):
                depth -= 1
                size, anchor = stack.pop()
                if anchor is not None:
                    anchors[anchor] = size
                _grow(stack, size)
            elif kind is yaml.ScalarEvent:
                if event.anchor is not None:
                    anchors[event.anchor] = 1
                _grow(stack, 1)
            elif kind is yaml.AliasEvent:
                size = anchors.get(event.anchor, 1)
                expanded += size
                if expanded > MAX_EXPANDED or size > MAX_EXPANDED:
                    raise YamlError("E1002", f"aliases expand to more than {MAX_EXPANDED:,} YAML nodes",
                                    _span(source, event), "a YAML alias bomb, or far more data than any object has")
                _grow(stack, size)
            elif kind is yaml.DocumentEndEvent:
                anchors.clear()
    except yaml.MarkedYAMLError as err:
        raise _located(err, source) from None
    except yaml.YAMLError as err:
        raise YamlError("E1001", f"malformed YAML: {err}", Span(source, 0, 0)) from None
    if nodes + expanded > MAX_EXPANDED:
        raise YamlError("E1002", f"aliases expand to more than {MAX_EXPANDED:,} YAML nodes", Span(source, 0, 0))


def _grow(stack: list[list], size: int) -> None:
    if stack:
        stack[-1][0] += size


def _build(root, source: SourceFile) -> Document:
    """Plain values from a composed node graph, iteratively; every path gets its spans."""
    import yaml

    doc = Document(None, source)
    spans = doc.spans
    result: list = [None]
    # (node, path, container, key in container, key span)
    work: list = [(root, (), result, 0, None)]
    while work:
        node, path, container, slot, key_span = work.pop()
        spans[path] = (_span(source, node), key_span)
        if isinstance(node, yaml.MappingNode):
            value: dict = {}
            container[slot] = value
            for key_node, value_node in reversed(node.value):
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    raise YamlError("E1001", "a mapping key must be a plain scalar (no merge keys, lists or maps "
                                    "as keys)", _span(source, key_node))
                key = key_node.value
                if key in value:
                    raise YamlError("E1001", f"key `{key}` appears twice in one mapping", _span(source, key_node),
                                    "Kubernetes would keep only one of them")
                value[key] = None
                work.append((value_node, path + (key,), value, key, _span(source, key_node)))
        elif isinstance(node, yaml.SequenceNode):
            items: list = [None] * len(node.value)
            container[slot] = items
            for i in range(len(node.value) - 1, -1, -1):
                work.append((node.value[i], path + (i,), items, i, None))
        else:
            container[slot] = _scalar(node, source)
    doc.value = result[0]
    return doc


def _scalar(node, source: SourceFile):
    tag, text = node.tag, node.value
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool":
        return text.lower() in ("yes", "true", "on", "y")
    if tag == "tag:yaml.org,2002:int":
        digits = text.replace("_", "")
        try:
            if digits.lstrip("+-").startswith("0x"):
                return int(digits, 16)
            if digits.lstrip("+-").startswith("0o"):
                return int(digits.replace("0o", ""), 8)
            if digits.lstrip("+-").startswith("0b"):
                return int(digits.replace("0b", ""), 2)
            if len(digits.lstrip("+-")) > 1 and digits.lstrip("+-").startswith("0") and ":" not in digits:
                return int(digits, 8)
            return int(digits)
        except ValueError:
            return text
    if tag == "tag:yaml.org,2002:float":
        try:
            return float(text.replace("_", "").replace(".inf", "inf").replace(".Inf", "inf").replace(".INF", "inf")
                         .replace(".nan", "nan").replace(".NaN", "nan").replace(".NAN", "nan"))
        except ValueError:
            return text
    return text     # str, timestamps (kept as written), and the `!` non-specific tag
