"""Kubernetes objects validated offline against the vendored CRDs, as the API server would on a
create: defaults applied, the `openAPIV3Schema` as a JSON Schema (jsonschema), then every
`x-kubernetes-validations` CEL rule (cel.py).

The translation of a structural schema into JSON Schema (draft 2020-12):

- `nullable: true` adds `null` to the type; `x-kubernetes-int-or-string` is an integer or a string;
- `x-kubernetes-list-type: set` is `uniqueItems`; `map` requires the `x-kubernetes-list-map-keys`
  of the items to be unique (a keyword of this validator);
- unknown fields are errors: every object schema without `additionalProperties` and without
  `x-kubernetes-preserve-unknown-fields` gets `additionalProperties: false`. The API server would
  prune them silently with `fieldValidation=Ignore` and rejects them with `Strict`, kubectl's
  default since Kubernetes 1.25 (`--validate=strict`); a field the controller never sees is a
  mistake either way;
- `format`: `int32`/`int64` ranges, `byte` (base64) and `date-time` (RFC 3339) are checked. The
  API server checks the string formats; the integer ranges are the controller's own (Istio's
  protobuf types), checked here because a value out of range never takes effect;
- `metadata` is Kubernetes' ObjectMeta, which the API server checks itself: `name` (required, a
  DNS subdomain), `namespace` (a DNS label), label keys and values, annotation keys (qualified
  names) and the annotations' total size (256 KiB);
- `default`s are applied first (the API server defaults before it validates: Gateway API's rules
  read defaulted fields such as a backendRef's `kind`), to a copy: the object is not changed.

A problem is located by the object (its index, kind, namespace/name, its `meshc.dev/source`
annotation) and a field path in Kubernetes' style (`spec.http[0].timeout`).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

SOURCE_ANNOTATION = "meshc.dev/source"
BUNDLES = {"istio": "istio.json", "standard": "gateway-api-standard.json",
           "experimental": "gateway-api-experimental.json"}
CHANNELS = ("standard", "experimental")


@dataclass(frozen=True)
class Problem:
    """One reason the API server would reject an object. `kind`: "schema" (the OpenAPI schema),
    "rule" (a CEL rule, `rule` its text) or "validator" (a rule this validator cannot evaluate:
    its own error, never a pass)."""
    index: int                    # the object's position among those validated
    object_kind: str
    name: str                     # NAMESPACE/NAME or NAME
    source: str | None            # the meshc.dev/source annotation (FILE:LINE:COL), if any
    path: str                     # the field, e.g. `spec.http[0].timeout` (`` for the object)
    message: str
    kind: str = "schema"
    rule: str | None = None

    def __str__(self) -> str:
        where = f"{self.object_kind} {self.name}" + (f" ({self.source})" if self.source else "")
        return f"{where}: {self.path or '<object>'}: {self.message}"


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    objects: int = 0
    rule_evaluations: int = 0          # rules evaluated (each rule once per value it applies to)
    rules: set[str] = field(default_factory=set)   # the distinct rules evaluated
    transitions_skipped: int = 0       # `oldSelf` rules: they apply only to an update
    cel_missing: bool = False          # cel-python is not installed (reported once)

    @property
    def ok(self) -> bool:
        return not self.problems


# ---- the vendored CRDs

_BUNDLES: dict[str, dict[str, Any]] = {}


def bundle(name: str) -> dict[str, Any]:
    """A vendored bundle ("istio", "standard", "experimental"): {kind: CRD summary}."""
    if name not in _BUNDLES:
        from compiler.core.package_data import read_text

        text = read_text("compiler.kubeschema", f"crds/{BUNDLES[name]}")
        if text is None:
            raise FileNotFoundError(f"the vendored CRDs crds/{BUNDLES[name]} are missing from the package")
        _BUNDLES[name] = json.loads(text)["kinds"]
    return _BUNDLES[name]


def crd_for(api_version: str, kind: str, channel: str) -> tuple[dict[str, Any] | None, str | None]:
    """The vendored CRD of an object and None, or None and why there is none."""
    group, _, version = api_version.rpartition("/")
    for name in ("istio", channel):
        crd = bundle(name).get(kind)
        if crd is None:
            continue
        if group != crd["group"]:
            return None, f"kind `{kind}` belongs to API group `{crd['group']}`, not `{group or '(core)'}`"
        if version not in crd["versions"]:
            served = ", ".join(f"`{crd['group']}/{v}`" for v in crd["versions"])
            return None, f"`{api_version}` is not a served version of {kind} (served: {served})"
        return crd, None
    known = sorted(set(bundle("istio")) | set(bundle(channel)))
    return None, f"kind `{kind}` is not among the vendored CRDs ({', '.join(known)})"


# ---- openAPIV3Schema -> JSON Schema

_KEEP = ("type", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
         "pattern", "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties", "required",
         "multipleOf", "format")


def to_json_schema(node: dict[str, Any], structural: bool = True) -> dict[str, Any]:
    """One structural-schema node as JSON Schema (see the module's doc). `structural` is False
    inside allOf/anyOf/oneOf/not, whose branches only add value validations."""
    out: dict[str, Any] = {k: node[k] for k in _KEEP if k in node}
    if "format" in out and out["format"] not in _FORMATS:
        del out["format"]   # formats Kubernetes does not check (e.g. `double`)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    props = node.get("properties")
    if props is not None:
        out["properties"] = {k: to_json_schema(v) for k, v in props.items()}
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        out["additionalProperties"] = to_json_schema(extra)
    elif extra is not None:
        out["additionalProperties"] = extra
    elif structural and node.get("type") == "object" and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if "items" in node:
        out["items"] = to_json_schema(node["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in node:
            branches = [to_json_schema(b, structural=False) for b in node[key]]
            if key == "anyOf" and "anyOf" in out:   # int-or-string's own anyOf: combine
                out.setdefault("allOf", []).append({"anyOf": branches})
            else:
                out[key] = branches
    if "not" in node:
        out["not"] = to_json_schema(node["not"], structural=False)
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    elif node.get("x-kubernetes-list-type") == "map" and node.get("x-kubernetes-list-map-keys"):
        out["x-list-map-keys"] = list(node["x-kubernetes-list-map-keys"])
    return out


_INT_RANGES = {"int32": (-(2 ** 31), 2 ** 31 - 1), "int64": (-(2 ** 63), 2 ** 63 - 1)}
_FORMATS = ("int32", "int64", "byte", "date-time")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")


def _format_checker() -> Any:
    import base64
    import binascii

    from jsonschema import FormatChecker

    checker = FormatChecker(formats=())

    def int_range(name: str) -> None:
        low, high = _INT_RANGES[name]

        @checker.checks(name)
        def check(value: object) -> bool:
            return not isinstance(value, int) or isinstance(value, bool) or low <= value <= high

    for name in _INT_RANGES:
        int_range(name)

    @checker.checks("byte")
    def check_byte(value: object) -> bool:
        if not isinstance(value, str):
            return True
        try:
            base64.b64decode(value, validate=True)
            return True
        except (binascii.Error, ValueError):
            return False

    @checker.checks("date-time")
    def check_date_time(value: object) -> bool:
        return not isinstance(value, str) or _DATE_TIME.match(value) is not None

    return checker


def _list_map_keys(validator: Any, keys: list[str], instance: Any, schema: dict[str, Any]) -> Any:
    from jsonschema import ValidationError

    if not isinstance(instance, list):
        return
    seen: dict[tuple[str, ...], int] = {}
    for i, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        key = tuple(json.dumps(item.get(k), sort_keys=True) for k in keys)
        if key in seen:
            shown = ", ".join(f"{k}={item.get(k)!r}" for k in keys)
            yield ValidationError(f"duplicate entry with {shown} (also item {seen[key]}): "
                                  f"the list is a map keyed by {', '.join(keys)}", path=[i])
        else:
            seen[key] = i


_VALIDATORS: dict[tuple[str, str], Any] = {}


def _validator(bundle_name: str, kind: str) -> Any:
    key = (bundle_name, kind)
    if key not in _VALIDATORS:
        from jsonschema import Draft202012Validator, validators

        schema = to_json_schema(bundle(bundle_name)[kind]["schema"])
        schema["properties"]["metadata"] = OBJECT_META
        schema["properties"].setdefault("apiVersion", {"type": "string"})   # (checked against the CRD before)
        schema["properties"].setdefault("kind", {"type": "string"})
        cls = validators.extend(Draft202012Validator, {"x-list-map-keys": _list_map_keys})
        _VALIDATORS[key] = cls(schema, format_checker=_format_checker())
    return _VALIDATORS[key]


# ObjectMeta: what a create may carry (what `kubectl get -o yaml` shows too), checked as the API
# server checks it (k8s.io/apimachinery/pkg/api/validation/objectmeta.go).
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"}, "namespace": {"type": "string"}, "generateName": {"type": "string"},
        "labels": _STRING_MAP, "annotations": _STRING_MAP,
        "uid": {"type": "string"}, "resourceVersion": {"type": "string"}, "generation": {"type": "integer"},
        "creationTimestamp": {"type": ["string", "null"]}, "deletionTimestamp": {"type": ["string", "null"]},
        "deletionGracePeriodSeconds": {"type": "integer"}, "selfLink": {"type": "string"},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
        "managedFields": {"type": "array", "items": {"type": "object"}},
    },
}
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")


def _dns_subdomain(name: str) -> bool:
    return 0 < len(name) <= 253 and all(len(p) <= 63 and _DNS_LABEL.match(p) for p in name.split("."))


def _qualified(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and not _dns_subdomain(prefix):
        return f"the prefix `{prefix}` is not a DNS subdomain"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return "the name part must be 1-63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit"
    return None


def _check_meta(meta: Any, add: Any) -> None:
    if not isinstance(meta, dict):
        return
    name = meta.get("name")
    if isinstance(name, str) and not _dns_subdomain(name):
        add("metadata.name", f"`{name}` is not a DNS subdomain (lower-case letters, digits, `-` and `.`, "
                             f"at most 253 characters)")
    ns = meta.get("namespace")
    if isinstance(ns, str) and not (len(ns) <= 63 and _DNS_LABEL.match(ns)):
        add("metadata.namespace", f"`{ns}` is not a DNS label (lower-case letters, digits and `-`, at most 63)")
    for key, value in (meta.get("labels") or {}).items() if isinstance(meta.get("labels"), dict) else ():
        why = _qualified(key)
        if why:
            add(f"metadata.labels[{key}]", f"label key `{key}` is not a qualified name: {why}")
        _check_label_value(f"metadata.labels[{key}]", value, add)
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        for key in annotations:
            why = _qualified(key)
            if why:
                add(f"metadata.annotations[{key}]", f"annotation key `{key}` is not a qualified name: {why}")
        size = sum(len(k) + len(v) for k, v in annotations.items() if isinstance(v, str))
        if size > 256 * 1024:
            add("metadata.annotations", f"the annotations total {size} bytes, more than 262144")


def _check_label_value(path: str, value: Any, add: Any) -> None:
    if isinstance(value, str) and value and (len(value) > 63 or not _QUALIFIED_NAME.match(value)):
        add(path, f"label value `{value}` is not valid (at most 63 letters, digits, "
                  f"`-`, `_` or `.`, starting and ending with a letter or digit)")


# label maps inside a spec: a selector's or a source's labels, a ServiceEntry endpoint's labels (the
# CRDs type them as string maps only; the API server's selectors refuse an invalid value at use)
_LABEL_MAPS = frozenset({"labels", "matchLabels", "sourceLabels"})


def _check_spec_labels(node: Any, path: str, add: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}"
            if key in _LABEL_MAPS and isinstance(value, dict):
                for label, v in value.items():
                    _check_label_value(f"{here}[{label}]", v, add)
            else:
                _check_spec_labels(value, here, add)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_spec_labels(value, f"{path}[{i}]", add)


# ---- defaults

def apply_defaults(schema: dict[str, Any], value: Any) -> None:
    """Set the schema's defaults in `value` (in place), top-down, as the API server does before
    validating (structural defaulting: k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting)."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for name, sub in props.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
        for name, v in value.items():
            if name in props:
                apply_defaults(props[name], v)
            elif isinstance(schema.get("additionalProperties"), dict):
                apply_defaults(schema["additionalProperties"], v)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for v in value:
            apply_defaults(schema["items"], v)


# ---- paths

def field_path(parts: Any) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif re.match(r"[A-Za-z_][A-Za-z0-9_]*\Z", str(p)):
            out += f".{p}" if out else str(p)
        else:
            out += f"[{p}]"
    return out


def _schema_message(error: Any) -> tuple[list[Any], str]:
    """(the field's path, a short message) for one jsonschema error."""
    path = list(error.absolute_path)
    v = error.validator
    if v == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties") or {})
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            return path + [extra[0]], (f"unknown field `{extra[0]}`" + (
                f" (and {', '.join(f'`{e}`' for e in extra[1:])})" if extra[1:] else ""))
    if v == "required":
        return path, f"missing required field `{error.message.split(chr(39))[1]}`" if "'" in error.message \
            else error.message
    if v in ("oneOf", "anyOf"):
        alternatives = []
        for branch in error.validator_value:
            req = branch.get("required")
            alternatives.append("{" + ", ".join(req) + "}" if req else ("none of them" if "not" in branch else "…"))
        what = "exactly one" if v == "oneOf" else "at least one"
        return path, f"must match {what} of the alternatives: {'; '.join(alternatives)}"
    if v == "enum":
        return path, f"`{error.instance}` is not one of {', '.join(map(str, error.validator_value))}"
    if v == "type":
        return path, f"must be of type {error.validator_value}, not {type(error.instance).__name__} " \
                     f"`{_short(error.instance)}`"
    if v == "format":
        return path, f"`{_short(error.instance)}` is not a valid {error.validator_value}"
    if v in ("maxLength", "minLength"):
        n = len(error.instance) if isinstance(error.instance, str) else 0
        return path, (f"`{_short(error.instance)}` has {n} characters, more than {error.validator_value}"
                      if v == "maxLength" else f"`{_short(error.instance)}` has {n} characters, fewer than "
                                               f"{error.validator_value}")
    if v in ("maxItems", "minItems"):
        n = len(error.instance) if isinstance(error.instance, list) else 0
        return path, f"{n} items, {'more' if v == 'maxItems' else 'fewer'} than {error.validator_value}"
    if v in ("maximum", "minimum"):
        return path, f"{error.instance} is {'above the maximum' if v == 'maximum' else 'below the minimum'} " \
                     f"{error.validator_value}"
    if v == "pattern":
        return path, f"`{_short(error.instance)}` does not match the pattern `{error.validator_value}`"
    return path, error.message if len(error.message) < 300 else error.message[:300] + "…"


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


# ---- CEL

def _evaluate_rules(schema: dict[str, Any], value: Any, path: list[Any], add: Any, report: Report) -> None:
    if value is None:
        return
    rules = schema.get("x-kubernetes-validations")
    if rules:
        try:
            from compiler.kubeschema import cel
        except ImportError:   # cel-python is the `kubernetes` extra: refuse, never pass unchecked
            if not report.cel_missing:
                report.cel_missing = True
                add(field_path(path), "cel-python is not installed, so the CRD's CEL rules cannot be evaluated: "
                                      "pip install 'meshc[kubernetes]'", "validator")
            return

        cel_value = None
        for spec in rules:
            try:
                rule = cel.compile_rule(spec)
            except cel.RuleError as exc:
                add(field_path(path), str(exc), "validator", spec.get("rule"))
                continue
            if rule.transition:
                report.transitions_skipped += 1
                continue
            if cel_value is None:
                cel_value = cel.to_cel(schema, value)
            ok, message = rule.evaluate(cel_value)
            report.rule_evaluations += 1
            report.rules.add(rule.text)
            if ok is None:
                add(field_path(path), f"the validator cannot evaluate rule `{rule.text}`: {message}", "validator",
                    rule.text)
            elif not ok:
                add(field_path(path), message, "rule", rule.text)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for name, v in value.items():
            sub = props.get(name, extra if isinstance(extra, dict) else None)
            if sub is not None:
                _evaluate_rules(sub, v, path + [name], add, report)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            _evaluate_rules(schema["items"], v, path + [i], add, report)


def iter_rules(bundle_name: str) -> Any:
    """Every `x-kubernetes-validations` entry of a bundle: (kind, field path, schema node, entry).
    Raises ValueError for a rule under allOf/anyOf/oneOf/not, where Kubernetes allows none and
    this validator would not look."""
    def walk(kind: str, node: Any, path: list[Any], junctor: bool) -> Any:
        if not isinstance(node, dict):
            return
        if node.get("x-kubernetes-validations"):
            if junctor:
                raise ValueError(f"{kind} {field_path(path)}: a rule under allOf/anyOf/oneOf/not")
            for spec in node["x-kubernetes-validations"]:
                yield kind, field_path(path), node, spec
        for name, sub in (node.get("properties") or {}).items():
            yield from walk(kind, sub, path + [name], junctor)
        if isinstance(node.get("items"), dict):
            yield from walk(kind, node["items"], path + [0], junctor)
        if isinstance(node.get("additionalProperties"), dict):
            yield from walk(kind, node["additionalProperties"], path + ["*"], junctor)
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in node.get(key) or ():
                yield from walk(kind, sub, path, True)
        if "not" in node:
            yield from walk(kind, node["not"], path, True)

    for kind, crd in bundle(bundle_name).items():
        yield from walk(kind, crd["schema"], [], False)


# ---- the entry point

def validate(objects: list[Any], channel: str = "standard") -> Report:
    """Validate Kubernetes objects (parsed YAML/JSON documents) against the vendored CRDs: Istio's,
    and Gateway API's of `channel` ("standard" or "experimental")."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown Gateway API channel {channel!r}")
    report = Report()
    for index, obj in enumerate(objects):
        report.objects += 1
        _validate_one(index, obj, channel, report)
    return report


def _validate_one(index: int, obj: Any, channel: str, report: Report) -> None:
    if not isinstance(obj, dict):
        report.problems.append(Problem(index, "?", "?", None, "", "a Kubernetes object is a mapping"))
        return
    kind = obj.get("kind")
    meta: dict[str, Any] = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    name = str(meta.get("name", "?"))
    if isinstance(meta.get("namespace"), str):
        name = f"{meta['namespace']}/{name}"
    annotations: dict[str, Any] = meta["annotations"] if isinstance(meta.get("annotations"), dict) else {}
    source = annotations.get(SOURCE_ANNOTATION)
    source = source if isinstance(source, str) else None
    shown_kind = kind if isinstance(kind, str) else "?"

    def add(path: str, message: str, what: str = "schema", rule: str | None = None) -> None:
        report.problems.append(Problem(index, shown_kind, name, source, path, message, what, rule))

    api_version = obj.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api_version, str):
        add("", "an object needs `apiVersion` and `kind` strings")
        return
    found, why = crd_for(api_version, kind, channel)
    if found is None:
        add("apiVersion" if "API group" in (why or "") or "version" in (why or "") else "kind", why or "")
        return
    crd: dict[str, Any] = found
    bundle_name = "istio" if kind in bundle("istio") else channel
    schema = crd["schema"]
    data = copy.deepcopy(obj)
    apply_defaults(schema, data)
    before = len(report.problems)
    for error in sorted(_validator(bundle_name, kind).iter_errors(data), key=lambda e: list(map(str, e.path))):
        path, message = _schema_message(error)
        add(field_path(path), message)
    _check_meta(data.get("metadata"), add)
    _check_spec_labels(data.get("spec"), "spec", add)
    if len(report.problems) == before:
        # The API server evaluates the rules on an object the schema accepts (their types are then
        # the schema's); after a schema error, only that error is reported, as kubectl shows it.
        _evaluate_rules(schema, data, [], add, report)
