"""The native config's JSON Schema is current, and bad config files get located messages.

Both readers are tested on the same broken files: `loading.load` (pydantic, what the proxy runs)
and `loading.check_with_schema` (the committed JSON Schema, what `--check-config` runs).
"""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest

from runtime_proxy.config.loading import ConfigError, check_with_schema, json_path, load
from runtime_proxy.config.model import json_schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "runtime_proxy" / "config" / "schema.json"
GOLDEN = ROOT / "tests" / "golden" / "native" / "canary" / "recommendations.native.json"


def schema_text() -> bytes:
    return orjson.dumps(json_schema(), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def test_committed_schema_is_current(update_goldens):
    text = schema_text()
    if update_goldens:
        if not SCHEMA.exists() or SCHEMA.read_bytes() != text:
            SCHEMA.write_bytes(text)
        return
    assert SCHEMA.exists(), "runtime_proxy/config/schema.json is missing: run `pytest --update-goldens`"
    assert SCHEMA.read_bytes() == text, (
        "runtime_proxy/config/schema.json is stale: runtime_proxy/config/model.py changed. Regenerate it with "
        "`pytest --update-goldens` (tests/test_native_schema.py) and commit it; bump SCHEMA_VERSION "
        "if an older proxy would misread the new format")


def test_schema_is_draft_2020_12_and_checks_itself():
    import jsonschema

    schema = orjson.loads(SCHEMA.read_bytes())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


# ---- broken files -----------------------------------------------------------------------------

def base() -> dict:
    return orjson.loads(GOLDEN.read_bytes())


def with_canary_routes() -> dict:
    """frontend's config of examples/canary.mesh: the only sidecar whose scope holds
    recommendations and its routes (compiler/ir/scope.py; the golden sidecar cannot call itself)."""
    from compiler import api

    comp = api.compile([str(ROOT / "examples" / "canary.mesh")], shard=False)
    return orjson.loads(comp.emit("native", ["frontend"]).files["frontend.native.json"])


def write(tmp_path, data, name="cfg.json") -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else orjson.dumps(data, option=orjson.OPT_INDENT_2))
    return path


def load_error(path) -> str:
    with pytest.raises(ConfigError) as info:
        load(path)
    return str(info.value)


def test_a_valid_file_passes_both(tmp_path):
    path = write(tmp_path, base())
    assert load(path).service == "recommendations"
    assert check_with_schema(path) == []


def test_malformed_json_has_line_and_column(tmp_path):
    path = write(tmp_path, b'{\n  "schema_version": 3,\n  "service": oops\n}\n')
    message = load_error(path)
    assert message.startswith(f"{path}:3:14: invalid JSON: ")
    assert check_with_schema(path) == [message]


@pytest.mark.parametrize("version, shown", [(1, "1"), (2, "2"), (0, "0"), ("3", '"3"'), (True, "true")])
def test_wrong_schema_version_has_its_own_message(tmp_path, version, shown):
    data = base()
    data["schema_version"] = version
    data["bogus"] = 1                      # never reported: the version comes first
    path = write(tmp_path, data)
    expected = f"{path}: unsupported schema_version {shown}; this proxy reads 3"
    assert load_error(path) == expected
    assert check_with_schema(path) == [expected]


def test_missing_schema_version(tmp_path):
    data = base()
    del data["schema_version"]
    path = write(tmp_path, data)
    assert load_error(path) == f"{path}: missing schema_version; this proxy reads 3"


def test_not_an_object(tmp_path):
    path = write(tmp_path, b"[1, 2]")
    assert "$: the config must be a JSON object" in load_error(path)


def test_unknown_field_is_located(tmp_path):
    data = base()
    data["services"][0]["routez"] = []
    path = write(tmp_path, data)
    message = load_error(path)
    assert "$.services[0].routez: Extra inputs are not permitted" in message
    assert message.startswith(f"{path}: invalid config (1 error):\n")
    problems = check_with_schema(path)
    assert len(problems) == 1 and problems[0].startswith("$.services[0]: Additional properties are not allowed")
    assert "'routez' was unexpected" in problems[0]


def test_bad_value_is_located(tmp_path):
    data = base()
    svc = next(i for i, s in enumerate(data["services"]) if s["routes"])
    data["services"][svc]["routes"][0]["timeout_ms"] = -1
    path = write(tmp_path, data)
    where = f"$.services[{svc}].routes[0].timeout_ms"
    assert f"{where}: Input should be greater than or equal to 0" in load_error(path)
    assert check_with_schema(path) == [f"{where}: -1 is less than the minimum of 0"]


def test_types_are_strict(tmp_path):
    data = base()
    data["listeners"]["admin"]["port"] = "15000"
    path = write(tmp_path, data)
    assert "$.listeners.admin.port: Input should be a valid integer" in load_error(path)
    assert check_with_schema(path) == ["$.listeners.admin.port: '15000' is not of type 'integer'"]


def test_nullable_field_with_a_bad_value(tmp_path):
    data = base()
    data["authorization"]["rules"][0]["principals"] = [{"kind": "glob", "value": "x"}]
    path = write(tmp_path, data)
    assert "$.authorization.rules[0].principals[0].kind: Input should be 'exact' or 'prefix'" in load_error(path)
    problems = check_with_schema(path)
    assert len(problems) == 1 and problems[0].startswith("$.authorization.rules[0].principals[0].kind: 'glob'")


def test_several_errors_are_all_reported(tmp_path):
    data = base()
    del data["version"]
    data["app"]["port"] = 70000
    path = write(tmp_path, data)
    message = load_error(path)
    assert "(2 errors)" in message
    assert "$.version: Field required" in message
    assert "$.app.port: Input should be less than or equal to 65535" in message
    assert len(check_with_schema(path)) == 2


def test_unreadable_file(tmp_path):
    path = tmp_path / "missing.json"
    assert load_error(path).startswith(f"{path}: cannot read the config: ")
    assert check_with_schema(path)[0].startswith(f"{path}: cannot read the config: ")


# ---- what a schema cannot express -----------------------------------------------------------

def find_route(data, pred):
    for i, s in enumerate(data["services"]):
        for k, r in enumerate(s["routes"]):
            if pred(r):
                return i, k
    raise AssertionError("no such route in the golden")


@pytest.mark.parametrize("change, message", [
    (lambda r: r["to"].update(subset="v9"), "to: no subset `v9` of service `recommendations` in the config"),
    (lambda r: r.update(to=None), ": a route needs `to` or `split`"),
    (lambda r: r["matches"][0].update(path={"kind": "regex", "value": "(unclosed"}),
     "matches[0].path.value: invalid RE2 regex '(unclosed': missing ): (unclosed"),
    (lambda r: r["matches"][0].update(path={"kind": "regex", "value": "/a", "ignore_case": True}),
     "matches[0].path.ignore_case: does not apply to a regex (write `(?i)` in it)"),
])
def test_semantic_errors(tmp_path, change, message):
    data = with_canary_routes()
    i, k = find_route(data, lambda r: r["name"] == "pinned_canary")
    change(data["services"][i]["routes"][k])
    path = write(tmp_path, data)
    where = f"$.services[{i}].routes[{k}]"
    assert f"{where}{'.' if message[0] != ':' else ''}{message}" in load_error(path)
    assert check_with_schema(path) == [f"{where}{'.' if message[0] != ':' else ''}{message}"]


def test_split_total_must_be_the_sum(tmp_path):
    data = with_canary_routes()
    i, k = find_route(data, lambda r: r["split"] is not None)
    data["services"][i]["routes"][k]["split"]["total_weight"] = 90
    path = write(tmp_path, data)
    expected = f"$.services[{i}].routes[{k}].split.total_weight: 90 is not the sum of the weights (100)"
    assert expected in load_error(path)


def test_json_path_quotes_odd_keys():
    assert json_path(("services", 0, "routes", 2, "timeout_ms")) == "$.services[0].routes[2].timeout_ms"
    assert json_path(("a b",)) == '$["a b"]'


def test_load_keeps_the_golden_intact(tmp_path):
    data = base()
    copy_ = copy.deepcopy(data)
    load(write(tmp_path, data))
    assert data == copy_


# ---- mutual TLS ---------------------------------------------------------------------------------

def test_tls_needs_the_identity_files(tmp_path):
    data = base()
    data["mtls"] = {"mode": "permissive", "files": None}
    path = write(tmp_path, data)
    expected = "$.mtls.files: mode `permissive` needs the identity files (cert, key, ca)"
    assert expected in load_error(path)
    assert check_with_schema(path) == [expected]
    data["mtls"] = {"mode": "disable", "files": None}
    i = next(i for i, s in enumerate(data["services"]) if s["mtls"])
    path = write(tmp_path, data)
    assert f"$.services[{i}].mtls: calling `{data['services'][i]['name']}` over mTLS needs the identity " \
           "files ($.mtls.files)" in load_error(path)


@pytest.mark.parametrize("drop, where", [
    (lambda d: d.pop("mtls"), "$.mtls"),
    (lambda d: d.pop("proxy"), "$.proxy"),
    (lambda d: d["proxy"].pop("drain_timeout_ms"), "$.proxy.drain_timeout_ms"),
    (lambda d: d["app"].pop("limits"), "$.app.limits"),
    (lambda d: d["services"][0].pop("upstream"), "$.services[0].upstream"),
    (lambda d: d["services"][0]["upstream"].pop("connect_timeout_ms"), "$.services[0].upstream.connect_timeout_ms"),
    (lambda d: d["listeners"]["admin"].pop("host"), "$.listeners.admin.host"),
])
def test_every_setting_the_proxy_applies_is_required(tmp_path, drop, where):
    """The proxy has no defaults of its own: a config that leaves a setting out is refused."""
    data = base()
    drop(data)
    path = write(tmp_path, data)
    assert f"{where}: Field required" in load_error(path)
    assert any(p.startswith(where.rpartition(".")[0] or "$") and "required" in p for p in check_with_schema(path))


# The config models that carry an IR node as it is, and the IR class they carry: the same fields,
# in the same order (the native backend serialises IR nodes directly into the config).
IR_NODES = {
    "Location": "Location", "Endpoint": "Endpoint", "Subset": "Subset", "Limits": "Limits", "Outlier": "Outlier",
    "RetryBudget": "RetryBudget", "Upstream": "Upstream", "PathMatch": "PathMatch", "HeaderMatch": "HeaderMatch",
    "QueryMatch": "QueryMatch", "Match": "Match", "SubsetRef": "SubsetRef", "WeightedSubset": "WeightedSubset",
    "Split": "Split", "Retry": "Retry", "FaultAbort": "FaultAbort", "FaultDelay": "FaultDelay", "Fault": "Fault",
    "Mirror": "Mirror", "HeaderChanges": "HeaderChanges", "Route": "Route", "Principal": "Principal",
    "AuthzRule": "AuthzRule", "Authorization": "Authorization", "Tracing": "Tracing",
}


@pytest.mark.parametrize("model", sorted(IR_NODES))
def test_the_contract_carries_the_ir_nodes_field_for_field(model):
    import dataclasses

    from compiler import ir
    from runtime_proxy.config import model as contract

    ir_fields = [f.name for f in dataclasses.fields(getattr(ir, IR_NODES[model]))]
    assert list(getattr(contract, model).model_fields) == ir_fields


def test_the_contract_lists_the_languages_retry_conditions():
    import typing

    from compiler.language.retry import RETRY_CONDITIONS
    from runtime_proxy.config.model import RetryCondition
    from runtime_proxy.decide.retry import CONDITIONS

    assert typing.get_args(RetryCondition) == tuple(RETRY_CONDITIONS) == tuple(CONDITIONS)


def test_mtls_mode_is_checked(tmp_path):
    data = base()
    data["mtls"]["mode"] = "optional"
    path = write(tmp_path, data)
    assert "$.mtls.mode: Input should be 'strict', 'permissive' or 'disable'" in load_error(path)
