"""The IR as data: deterministic JSON (the `mesh.ir.json` document), YAML, plain data, and IR
objects rebuilt from data (what a second process of a sharded compile sends)."""

from __future__ import annotations

from dataclasses import fields, is_dataclass

from compiler.core.nodes import Node
from compiler.ir import model

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    N = TypeVar("N", bound=Node)
    # JSON data to a field's value
    Converter = Callable[[Any], object]


def ir_json(program: model.Program) -> bytes:
    """Deterministic JSON: field order as declared in compiler/ir/model.py, the same bytes for the
    same input. orjson serialises the IR dataclasses directly in C: byte-identical to
    `json.dumps(to_data(program), indent=2, ensure_ascii=False)` and about six times faster,
    which matters for the 10,000-service compile."""
    import orjson

    return orjson.dumps(program, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def ir_yaml(program: model.Program) -> str:
    import yaml  # imported here: only `--ir-format yaml` pays for it

    return yaml.safe_dump(to_data(program), sort_keys=False, allow_unicode=True, width=120)


def to_data(value: object) -> object:
    """JSON-ready data: dataclasses to dicts (field order kept), tuples to lists."""
    if is_dataclass(value):
        return {f.name: to_data(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple):
        return [to_data(v) for v in value]
    return value


def from_data(cls: type[N], data: dict[str, Any]) -> N:
    """The IR object of class `cls` (Program, Service, ...) of its JSON data: the inverse of
    `to_data`. A sharded compile receives the other process's services as JSON."""
    return _build(cls, data)


def _converter(hint: object) -> Converter:
    """A function that turns JSON data into a value of the annotated type."""
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = _converter(members[0])
        return lambda v: None if v is None else inner(v)
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _converter(args[0])
            return lambda v: tuple(item(x) for x in v)
        items = [_converter(a) for a in args]
        return lambda v: tuple(conv(x) for conv, x in zip(items, v))
    if isinstance(hint, type) and issubclass(hint, Node):
        return lambda v: _build(hint, v)
    if hint is float:
        return float
    return lambda v: v


def _build(cls: type[N], data: dict[str, Any]) -> N:
    build = _GENERATED.get(cls)
    if build is None:
        build = _generate(cls)
    return build(data)  # type: ignore[return-value]


# One namespace for every generated builder: they call each other by name at run time (so that a
# recursive type, a condition tree, needs no ordering), and the rare converters they call.
_NAMESPACE: dict[str, Any] = {}
_NAMES: dict[type, str] = {}
_GENERATED: dict[type, Callable[[dict[str, Any]], object]] = {}


def _generate(cls: type) -> Callable[[dict[str, Any]], object]:
    """A builder of `cls` from its data, compiled for the class: one call of the class with each
    field converted inline (`tuple([b_Route_3(x0) for x0 in d['routes']])`), several times faster
    than converting field by field through closures (`_converter`). It converts exactly as
    `_converter` does; the rare cases (a fixed-length tuple) call `_converter`'s own function."""
    import typing

    name = _NAMES[cls] = f"b_{cls.__name__}_{len(_NAMES)}"   # named first: a recursive field calls it
    hints = typing.get_type_hints(cls, globalns=vars(model))
    _NAMESPACE[f"cls_{name}"] = cls
    args = [_inline(hints[f.name], f"d[{f.name!r}]", 0) for f in fields(cls)]
    exec(f"def {name}(d):\n    return cls_{name}({', '.join(args)})\n", _NAMESPACE)
    _GENERATED[cls] = build = _NAMESPACE[name]
    return build  # type: ignore[no-any-return]


def _inline(hint: object, value: str, depth: int) -> str:
    """An expression converting the JSON data `value` to a value of type `hint`, as `_converter(hint)`."""
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = _inline(members[0], value, depth)
        return value if inner == value else f"(None if {value} is None else {inner})"
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _inline(args[0], f"x{depth}", depth + 1)
            return f"tuple({value})" if item == f"x{depth}" else f"tuple([{item} for x{depth} in {value}])"
        converter = f"c_{len(_NAMESPACE)}"
        _NAMESPACE[converter] = _converter(hint)
        return f"{converter}({value})"
    if isinstance(hint, type) and issubclass(hint, Node):
        if hint not in _NAMES:
            _generate(hint)
        return f"{_NAMES[hint]}({value})"
    if hint is float:
        return f"float({value})"
    return value
