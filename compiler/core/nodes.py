"""The base of every AST and IR class: frozen, slotted dataclasses whose equality, hash and
repr come from here rather than being generated per class.

`@dataclass` compiles six small functions per frozen class; with eq and repr shared here it
compiles three. Over the 50-odd AST and IR classes that is ~25 ms of every `meshc check`.
Equality and hashing follow the dataclass rules: fields with `compare=False` (the spans) are
left out, and only instances of the same class compare equal.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from dataclasses import Field
    from typing import Any, ClassVar, TypeVar, dataclass_transform

_COMPARED: dict[type, tuple[str, ...]] = {}
_SHOWN: dict[type, tuple[str, ...]] = {}


def _compared(cls: type) -> tuple[str, ...]:
    names = _COMPARED.get(cls)
    if names is None:
        names = _COMPARED[cls] = tuple(f.name for f in fields(cls) if f.compare)
    return names


class Node:
    __slots__ = ()
    if TYPE_CHECKING:  # what @node gives every subclass, so that `dataclasses.fields()` takes a node
        __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        for name in _compared(self.__class__):  # noqa: SIM110 - all() over a generator is ~60% slower here
            if getattr(self, name) != getattr(other, name):
                return False
        return True

    def __hash__(self) -> int:
        return hash((self.__class__.__name__,) + tuple(getattr(self, n) for n in _compared(self.__class__)))

    def __repr__(self) -> str:
        cls = self.__class__
        shown = _SHOWN.get(cls)
        if shown is None:
            shown = _SHOWN[cls] = tuple(f.name for f in fields(cls) if f.repr)
        return f"{cls.__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in shown)})"


if TYPE_CHECKING:
    _C = TypeVar("_C", bound=type)

    @dataclass_transform(frozen_default=True, field_specifiers=(field,))
    def node(cls: _C) -> _C:
        """`@dataclass(frozen=True, slots=True)` with equality, hash and repr from :class:`Node`:
        to a type checker, a frozen dataclass."""
else:
    def node(cls):
        """`@dataclass(frozen=True, slots=True)` with equality, hash and repr from :class:`Node`,
        and an `__init__` of our own (_fast_init)."""
        cls = dataclass(frozen=True, slots=True, eq=False, repr=False, init=False)(cls)
        _fast_init(cls)
        return cls


class _Missing:
    __slots__ = ()


_NO_VALUE = _Missing()


def _fast_init(cls: type) -> None:
    """The `__init__` of a frozen node: the one dataclass writes sets each field through
    `object.__setattr__(self, name, value)` (a global, an attribute and a call by name per field);
    this one calls each slot's own setter, bound once. About a third faster per node, and the
    parser and the lowering make hundreds of thousands of them. Same parameters, defaults and
    default factories; compiled instead of dataclass's (`init=False`), so `meshc check` starts
    no slower."""
    params, body = [], []
    env: dict[str, object] = {"_NO_VALUE": _NO_VALUE}
    for f in fields(cls):
        name = f.name
        env[f"_set_{name}"] = getattr(cls, name).__set__   # the slot's member descriptor
        if f.default is not MISSING:
            env[f"_d_{name}"] = f.default
            params.append(f"{name}=_d_{name}")
            body.append(f"    _set_{name}(self, {name})")
        elif f.default_factory is not MISSING:
            env[f"_f_{name}"] = f.default_factory
            params.append(f"{name}=_NO_VALUE")
            body.append(f"    _set_{name}(self, _f_{name}() if {name} is _NO_VALUE else {name})")
        else:
            params.append(name)
            body.append(f"    _set_{name}(self, {name})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    source = f"def __init__(self, {', '.join(params)}):\n" + ("\n".join(body) or "    pass") + "\n"
    exec(source, env)
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"  # type: ignore[attr-defined]
    cls.__init__ = init  # type: ignore[misc]
