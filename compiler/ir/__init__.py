"""The IR: the one contract between the front end and every backend (model.py), its self-check
(check.py), its serialisation (serialize.py) and the names decided before it (names.py)."""

from compiler.ir.model import *  # noqa: F403 - `ir.Route` reads as the IR's Route
from compiler.ir.model import SCHEMA_VERSION  # noqa: F401
from compiler.ir.serialize import from_data, to_data  # noqa: F401
