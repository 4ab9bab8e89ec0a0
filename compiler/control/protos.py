"""The backend's JSON as Envoy's protobuf types (xds-protos), through `json_format.ParseDict`.

An `Any` (`@type`) resolves only once the module defining its type has been imported (the
default descriptor pool is filled by imports): `message_class` imports every `_pb2` module of a
type's package the first time the type is asked for, so no list of modules follows the backend.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil

from google.protobuf import any_pb2, descriptor_pool, json_format, message_factory

POOL = descriptor_pool.Default()


def type_urls(node) -> set[str]:
    """Every `@type` in a JSON document."""
    found: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("@type"), str):
            found.add(node["@type"])
        for value in node.values():
            found |= type_urls(value)
    elif isinstance(node, list):
        for value in node:
            found |= type_urls(value)
    return found


def message_class(type_url: str):
    """The generated class of an `@type` (type.googleapis.com/PACKAGE.MESSAGE), after importing
    every `_pb2` module of its package (the shortest import that is sure to register it)."""
    name = type_url.rpartition("/")[2]
    try:
        return message_factory.GetMessageClass(POOL.FindMessageTypeByName(name))
    except KeyError:
        pass
    package = name
    while "." in package:
        package = package.rpartition(".")[0]
        with contextlib.suppress(ImportError):
            module = importlib.import_module(package)
            for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
                if info.name.endswith("_pb2"):
                    importlib.import_module(f"{package}.{info.name}")
            break
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(name))


def parse(doc: dict, message):
    """`doc` read into `message` strictly (unknown fields, bad enums, unknown `@type` raise
    `json_format.ParseError`), every `@type` in it resolved first."""
    for url in type_urls(doc):
        message_class(url)
    json_format.ParseDict(doc, message, ignore_unknown_fields=False)
    return message


def to_any(resource: dict) -> any_pb2.Any:
    """A resource of the backend (a dict with its `@type`) packed as the `Any` a response carries."""
    body = {k: v for k, v in resource.items() if k != "@type"}
    message = parse(body, message_class(resource["@type"])())
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed
