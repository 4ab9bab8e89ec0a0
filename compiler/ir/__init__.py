"""The IR: the one contract between the front end and every backend (model.py, with the
conditions and locations in conditions.py), its self-check (check.py), its serialisation
(serialize.py) and the names decided before it (names.py).

`ir.Route` reads as the IR's Route. Only conditions.py is loaded with the package: the checks of
`meshc check` reason with it, and the rest (about twenty dataclasses, serialisation) loads on the
first use of any other name, which only lowering, the backends and the tests make.
"""

from compiler.ir.conditions import *  # noqa: F403

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from compiler.ir.model import *  # noqa: F403
    from compiler.ir.model import RETRY_ON as RETRY_ON
    from compiler.ir.model import SCHEMA_VERSION as SCHEMA_VERSION
    from compiler.ir.serialize import from_data as from_data
    from compiler.ir.serialize import to_data as to_data


_SUBMODULES = frozenset({"check", "conditions", "model", "names", "scope", "serialize"})


def __getattr__(name: str) -> object:
    """The rest of the IR, loaded on first use and kept in this module's namespace."""
    if name.startswith("__") or name in _SUBMODULES:   # a submodule is the import system's to load
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    model, serialize = import_module("compiler.ir.model"), import_module("compiler.ir.serialize")
    found = globals()
    found.update((n, getattr(model, n)) for n in model.__all__)
    found["from_data"], found["to_data"] = serialize.from_data, serialize.to_data
    if name in found:
        return found[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
