"""Reading a config file: JSON -> `Config`, with every problem located in the file.

`load(path)` is what the proxy runs (at start and on reload): pydantic in strict JSON mode
(runtime_proxy/config/model.py), then the checks a schema cannot express (destinations that exist,
regexes that RE2 compiles, split totals). `check_with_schema(path)` is what
`--check-config FILE` runs: the committed JSON Schema (runtime_proxy/config/schema.json, Draft
2020-12) through `jsonschema`, then the same extra checks, so outside tools and the proxy agree.

Messages are one line each: `FILE:LINE:COL: invalid JSON: ...` for syntax errors,
`FILE: unsupported schema_version 2; this proxy reads 1` for another version, and
`$.services[0].routes[2].timeout_ms: REASON` (a JSON path) for everything else.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from runtime_proxy.config.model import SCHEMA_VERSION, Config

if TYPE_CHECKING:
    from jsonschema import ValidationError

SCHEMA_PATH = Path(__file__).with_name("schema.json")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ConfigError(Exception):
    """A config that cannot be used. `str(err)` is the whole located message; `errors` holds its
    lines (JSON path: reason)."""

    def __init__(self, message: str, errors: list[str] | None = None, path: str | None = None):
        super().__init__(message)
        self.message = message
        self.errors = errors or [message]
        self.path = path


def json_path(loc: Iterable[str | int]) -> str:
    """`('services', 0, 'routes', 2, 'timeout_ms')` -> `$.services[0].routes[2].timeout_ms`."""
    out = ["$"]
    for part in loc:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENT.fullmatch(str(part)):
            out.append(f".{part}")
        else:
            out.append("[" + orjson.dumps(str(part)).decode() + "]")
    return "".join(out)


# ---- reading ------------------------------------------------------------------------------------

def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as err:
        raise ConfigError(f"{os.fspath(path)}: cannot read the config: {err.strerror or err}",
                          path=os.fspath(path)) from None


def _parse(path: str | os.PathLike[str], raw: bytes) -> dict[str, Any]:
    """The JSON data of the file, with the schema_version checked first (its own message, so that
    a config for another proxy version does not drown in field errors)."""
    name = os.fspath(path)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise ConfigError(f"{name}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}", path=name) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: invalid config: $: the config must be a JSON object", path=name)
    if "schema_version" not in data:
        raise ConfigError(f"{name}: missing schema_version; this proxy reads {SCHEMA_VERSION}", path=name)
    version = data["schema_version"]
    if version != SCHEMA_VERSION or isinstance(version, bool) or not isinstance(version, int):
        shown = orjson.dumps(version).decode()
        raise ConfigError(f"{name}: unsupported schema_version {shown}; this proxy reads {SCHEMA_VERSION}",
                          path=name)
    return data


def _fail(name: str, errors: list[str]) -> NoReturn:
    noun = "error" if len(errors) == 1 else "errors"
    message = f"{name}: invalid config ({len(errors)} {noun}):\n" + "\n".join(f"  {e}" for e in errors)
    raise ConfigError(message, errors, path=name)


def load(path: str | os.PathLike[str]) -> Config:
    """The validated config of the file at `path`; ConfigError with a located message otherwise."""
    name = os.fspath(path)
    raw = _read(path)
    data = _parse(path, raw)
    from pydantic import ValidationError

    try:
        config = Config.model_validate_json(raw, strict=True)
    except ValidationError as err:
        _fail(name, [f"{json_path(e['loc'])}: {e['msg']}" for e in err.errors(include_url=False)])
    errors = semantic_errors(data)
    if errors:
        _fail(name, errors)
    return config


# ---- the checks a schema cannot express -------------------------------------------------------

def semantic_errors(data: dict[str, Any]) -> list[str]:
    """Located errors of a config that is valid against the schema: a `to`, `split` or `mirror`
    naming no subset of the config, a split whose `total_weight` is not the sum of its weights,
    a regex that RE2 rejects, a subset `cluster` name used twice."""
    errors: list[str] = []
    services = data.get("services") or []
    subsets: dict[str | None, set[str | None]] = {}     # None: a name left out (the schema refuses it)
    clusters: dict[str, str] = {}
    for i, s in enumerate(services):
        if not isinstance(s, dict):
            continue
        subsets[s.get("name")] = {sub.get("name") for sub in s.get("subsets") or [] if isinstance(sub, dict)}
        for j, sub in enumerate(s.get("subsets") or []):
            if isinstance(sub, dict) and sub.get("cluster") is not None:
                where = f"$.services[{i}].subsets[{j}].cluster"
                if sub["cluster"] in clusters:
                    errors.append(f"{where}: cluster `{sub['cluster']}` is also {clusters[sub['cluster']]}")
                else:
                    clusters[sub["cluster"]] = where

    def ref(where: str, r: object) -> None:
        if isinstance(r, dict) and r.get("subset") not in subsets.get(r.get("service"), ()):
            errors.append(f"{where}: no subset `{r.get('subset')}` of service `{r.get('service')}` in the config")

    for i, s in enumerate(services):
        if not isinstance(s, dict):
            continue
        for k, r in enumerate(s.get("routes") or []):
            base = f"$.services[{i}].routes[{k}]"
            if not isinstance(r, dict):
                continue
            answers = r.get("redirect") is not None or r.get("direct_response") is not None
            if answers:
                if any(r.get(k) is not None for k in ("to", "split", "mirror", "rewrite")) or (
                        r.get("redirect") is not None and r.get("direct_response") is not None):
                    errors.append(f"{base}: a route that answers itself (`redirect`, `direct_response`) forwards "
                                  "nothing: no `to`, `split`, `mirror` or `rewrite`")
            elif r.get("to") is None and r.get("split") is None:
                errors.append(f"{base}: a route needs `to` or `split`")
            elif r.get("to") is not None and r.get("split") is not None:
                errors.append(f"{base}: a route has exactly one of `to` and `split`")
            if r.get("to") is not None:
                ref(f"{base}.to", r["to"])
            split = r.get("split")
            if isinstance(split, dict):
                total = 0
                for t, target in enumerate(split.get("targets") or []):
                    ref(f"{base}.split.targets[{t}]", target)
                    if isinstance(target, dict) and isinstance(target.get("weight"), int):
                        total += target["weight"]
                if split.get("total_weight") != total:
                    errors.append(f"{base}.split.total_weight: {split.get('total_weight')} is not the sum "
                                  f"of the weights ({total})")
            for k, mirror in enumerate(r.get("mirrors") or []):
                ref(f"{base}.mirrors[{k}]", mirror)
            for m, match in enumerate(r.get("matches") or []):
                errors.extend(_regex_errors(f"{base}.matches[{m}]", match))
            for key in ("redirect", "rewrite"):
                change = r.get(key)
                path = change.get("path") if isinstance(change, dict) else None
                if isinstance(path, dict) and path.get("kind") == "regex":
                    problem = regex_problem(path.get("pattern"))
                    if problem:
                        errors.append(f"{base}.{key}.path.pattern: {problem}")
    authz = data.get("authorization")
    if isinstance(authz, dict):
        for k, rule in enumerate(authz.get("rules") or []):
            errors.extend(_regex_errors(f"$.authorization.rules[{k}]", rule))
            if isinstance(rule, dict):
                for n, excluded in enumerate(rule.get("not_paths") or []):
                    errors.extend(_regex_errors(f"$.authorization.rules[{k}].not_paths[{n}]", {"path": excluded}))
    errors.extend(_mtls_errors(data, services))
    return errors


def _mtls_errors(data: dict[str, Any], services: list[Any]) -> list[str]:
    """TLS on either side needs the identity files."""
    mtls = data.get("mtls")
    if not isinstance(mtls, dict):
        mtls = {}
    if mtls.get("files") is not None:
        return []
    if mtls.get("mode", "disable") != "disable":
        return [f"$.mtls.files: mode `{mtls['mode']}` needs the identity files (cert, key, ca)"]
    for i, s in enumerate(services):
        if isinstance(s, dict) and s.get("mtls") is True:
            return [f"$.services[{i}].mtls: calling `{s.get('name')}` over mTLS needs the identity "
                    f"files ($.mtls.files)"]
    return []


def _regex_errors(base: str, cond: object) -> list[str]:
    if not isinstance(cond, dict):
        return []
    found: list[tuple[str, object]] = []
    path = cond.get("path")
    errors: list[str] = []
    if isinstance(path, dict) and path.get("kind") == "regex":
        found.append((f"{base}.path.value", path.get("value")))
        if path.get("ignore_case"):
            errors.append(f"{base}.path.ignore_case: does not apply to a regex (write `(?i)` in it)")
    for key in ("headers", "query"):
        for n, h in enumerate(cond.get(key) or []):
            if isinstance(h, dict) and h.get("kind") == "regex":
                found.append((f"{base}.{key}[{n}].value", h.get("value")))
    for where, pattern in found:
        problem = regex_problem(pattern)
        if problem:
            errors.append(f"{where}: {problem}")
    return errors


def regex_problem(pattern: object) -> str | None:
    """Why RE2 rejects `pattern`, or None."""
    if not isinstance(pattern, str):
        return "a regex must be a string"
    from runtime_proxy.decide.table import TableError, re2_fullmatcher

    try:
        re2_fullmatcher(pattern)
    except TableError as err:
        return str(err)
    return None


# ---- the JSON Schema check (--check-config) ---------------------------------------------------

def _deepest(error: ValidationError) -> ValidationError:
    """For an anyOf error (a nullable field: the value or null), the failure of the alternative
    that got furthest into the value: `...principals[0].kind: 'glob' is not one of ...` rather than
    `...principals: [...] is not of type 'null'`."""
    while error.context:
        error = max(error.context, key=lambda e: (len(e.absolute_path), e.validator != "type"))
    return error


def load_schema() -> dict[str, Any]:
    """The committed JSON Schema of the config."""
    return orjson.loads(SCHEMA_PATH.read_bytes())


def check_with_schema(path: str | os.PathLike[str], app: dict[str, Any] | None = None) -> list[str]:
    """Located problems of the config file at `path` against the committed JSON Schema (Draft
    2020-12) and the semantic checks; an empty list when the file is valid. `app`: fields laid over
    the config's `app` first (`--app-address`: the config as the proxy would run it)."""
    try:
        data = _parse(path, _read(path))
    except ConfigError as err:
        return [err.message]
    if app is not None and isinstance(data, dict) and isinstance(data.get("app"), dict):
        data["app"] = {**data["app"], **app}
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors: list[str] = []
    for error in sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
        error = _deepest(error)
        errors.append(f"{json_path(error.absolute_path)}: {error.message}")
    if errors:
        return errors
    return semantic_errors(data)
