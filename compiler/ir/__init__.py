"""The IR: the one contract between the front end and every backend (model.py), its self-check
(check.py), its serialisation (serialize.py) and the names decided before it (names.py)."""

from compiler.ir.model import *  # noqa: F403 - `ir.Route` reads as the IR's Route
from compiler.ir.model import SCHEMA_VERSION as SCHEMA_VERSION
from compiler.ir.serialize import from_data as from_data
from compiler.ir.serialize import to_data as to_data
