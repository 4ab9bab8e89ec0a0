"""The offline validator of Kubernetes objects (compiler/kubeschema/): the vendored CRDs, their
schemas as JSON Schema, their CEL rules with Kubernetes' extension functions.

- every `x-kubernetes-validations` rule of the vendored CRDs compiles and evaluates (to true or
  false, never to an error) on a sample value of its schema, and the count is pinned;
- objects the API server would reject are rejected: by the schema (unknown field, wrong type,
  missing field, enum, duplicate map-list key, metadata) and by a CEL rule, with the rule's message;
- a rule that calls a function the validator does not provide is the validator's error;
- the vendored files are what `python -m compiler.kubeschema.vendor ../shared/crds` generates.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from compiler.kubeschema import cel, validate
from compiler.kubeschema.validate import BUNDLES, Report, _evaluate_rules, iter_rules
from tests.kube_samples import sample

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "crds"
CRDS = ROOT / "compiler" / "kubeschema" / "crds"

# The number of rules in each vendored bundle (Istio v1.30.3, Gateway API v1.6.1): a revision bump
# shows here.
RULES = {"istio": 97, "standard": 89, "experimental": 106}


@pytest.mark.parametrize("bundle_name", list(BUNDLES))
def test_every_rule_compiles_and_evaluates_on_a_sample(bundle_name):
    rules = list(iter_rules(bundle_name))
    assert len(rules) == RULES[bundle_name]
    outcomes = {True: 0, False: 0}
    for kind, path, node, spec in rules:
        rule = cel.compile_rule(spec)
        assert not rule.transition, f"{kind} {path}: a transition rule among the vendored CRDs"
        ok, why = rule.evaluate(cel.to_cel(node, sample(node)))
        assert ok is not None, f"{kind} {path}: `{spec['rule']}` does not evaluate: {why}"
        outcomes[ok] += 1
    assert outcomes[True] > 0


def test_the_kubernetes_functions_the_rules_use():
    used = set()
    for name in BUNDLES:
        for _, _, _, spec in iter_rules(name):
            _, names, _ = cel._parse(cel._env(), spec["rule"])
            used |= names
    assert used <= cel.PROVIDED
    assert "substring" in used and "matches" in used     # Kubernetes' string library, RE2


@pytest.mark.parametrize("rule, value, expected", [
    ('self.substring(7, 8) == "/"', "unix:///run", True),
    ("self.substring(2) == 'c'", "abc", True),
    ('self.matches("^a+$")', "aaa", True),
    ('self.matches("(?i)^A$")', "a", True),                      # RE2 flags
    ("self.lowerAscii() == 'abc' && self.upperAscii() == 'ABC'", "aBc", True),
    ("self.split('/').size() == 3 && self.indexOf('/') == 1 && self.lastIndexOf('/') == 3", "a/b/c", True),
    ("self.replace('a', 'b') == 'bbb' && self.replace('a', 'c', 1) == 'cba' && ' x '.trim() == 'x'", "aba", True),
    ("isURL(self) && url(self).getScheme() == 'https' && url(self).getHostname() == 'example.com'",
     "https://example.com:8443/x", True),
    ("isURL(self)", "no scheme", False),
    ("self.find('[0-9]+') == '12' && self.findAll('[0-9]').size() == 3", "a12b3", True),
    ("[3, 1].sum() == 4 && [1, 2].isSorted() && [2, 5].max() == 5", "", True),
    ("duration(self) >= duration('1ms')", "1h30m", True),
    ("duration(self) >= duration('1ms')", "500us", False),
])
def test_kubernetes_functions(rule, value, expected):
    ok, why = cel.compile_rule({"rule": rule, "message": "m"}).evaluate(cel.to_cel({"type": "string"}, value))
    assert ok is expected, why


def test_a_rule_with_an_unknown_function_is_the_validators_error():
    with pytest.raises(cel.RuleError, match="frobnicate"):
        cel.compile_rule({"rule": "self.frobnicate() == 1", "message": "m"})
    report = Report()
    problems = []
    schema = {"type": "object", "properties": {"a": {"type": "string", "x-kubernetes-validations": [
        {"rule": "self.frobnicate()", "message": "m"}, {"rule": "self.size() > 1", "message": "too short"}]}}}
    _evaluate_rules(schema, {"a": "x"}, ["spec"], lambda *a: problems.append(a), report)
    assert [p[2] for p in problems] == ["validator", "rule"]
    assert "does not provide" in problems[0][1] and problems[1][1] == "too short"
    assert report.rule_evaluations == 1


def test_a_rule_that_fails_on_its_value_is_an_error_never_a_pass():
    problems = []
    schema = {"type": "object", "x-kubernetes-validations": [{"rule": "self.missing == 1", "message": "m"}]}
    _evaluate_rules(schema, {}, [], lambda *a: problems.append(a), Report())
    assert [p[2] for p in problems] == ["validator"] and "cannot evaluate" in problems[0][1]


UNIQUE_NAMES = "self.all(l1, !has(l1.name) || self.exists_one(l2, has(l2.name) && l1.name == l2.name))"


@pytest.mark.parametrize("rule, names, expected", [
    # CEL's `&&` and `||` absorb an error on either side (false && error = false, error || true = true):
    # the HTTPRoute rule-name rule over rules some of which have no name (cel-python 0.5 let the
    # missing field's error of a macro's operand escape)
    (UNIQUE_NAMES, ["a", None], True), (UNIQUE_NAMES, [None, "a"], True), (UNIQUE_NAMES, ["a", None, None], True),
    (UNIQUE_NAMES, ["a", "b", None], True), (UNIQUE_NAMES, ["a", None, "a"], False),
    ("self.all(x, has(x.name) && x.name == 'a' || !has(x.name))", ["a", None], True),
    ("self.exists(x, x.name == 'b' || true)", [None], True),
    ("self.all(x, x.name == 'a' && false)", [None], False),
    ("self.all(x, x.name == 'a' || false)", [None], None),   # (an error either side, none absorbed)
    ("self.all(x, x.name == 'a' && true)", [None], None),
])
def test_and_or_absorb_errors_as_the_cel_spec_says(rule, names, expected):
    value = cel.to_cel({"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"},
                                                                                    "x": {"type": "string"}}}},
                       [{"name": n} if n else {"x": "1"} for n in names])
    ok, why = cel.compile_rule({"rule": rule, "message": "m"}).evaluate(value)
    assert ok is expected, why


def test_a_transition_rule_does_not_apply_to_a_create():
    report = Report()
    problems = []
    schema = {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "immutable"}]}
    _evaluate_rules(schema, "x", [], lambda *a: problems.append(a), report)
    assert problems == [] and report.transitions_skipped == 1 and report.rule_evaluations == 0


# ---- whole objects

VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
      "metadata": {"name": "reviews", "namespace": "shop", "annotations": {"meshc.dev/source": "shop.mesh:12:3"}},
      "spec": {"hosts": ["reviews.shop.svc.cluster.local"],
               "http": [{"name": "all", "route": [{"destination": {"host": "reviews.shop.svc.cluster.local",
                                                                    "subset": "v1"}}],
                         "timeout": "2s", "retries": {"attempts": 0}}]}}
HR = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
      "metadata": {"name": "reviews", "namespace": "shop"},
      "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "reviews", "port": 9080}],
               "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                          "backendRefs": [{"name": "reviews-v1", "port": 9080, "weight": 1}],
                          "timeouts": {"request": "2s"}}]}}


def changed(obj, path, value):
    out = copy.deepcopy(obj)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def problems(obj, channel="standard"):
    report = validate([obj], channel)
    return [(p.kind, p.path, p.message) for p in report.problems]


def test_valid_objects_pass_and_the_rules_are_counted():
    report = validate([VS, HR], "standard")
    assert report.ok, report.problems
    assert report.objects == 2
    assert report.rule_evaluations >= 10 and "duration(self) >= duration('1ms')" in report.rules
    assert validate([HR], "experimental").ok


@pytest.mark.parametrize("path, value, expected", [
    (["spec", "http", 0, "bogus"], 1, ("schema", "spec.http[0].bogus", "unknown field `bogus`")),
    (["spec", "http", 0, "retries", "attempts"], "two", ("schema", "spec.http[0].retries.attempts",
                                                         "must be of type integer, not str `two`")),
    (["spec", "http", 0, "retries", "attempts"], 2 ** 31, ("schema", "spec.http[0].retries.attempts",
                                                           "`2147483648` is not a valid int32")),
    (["metadata", "name"], "Reviews_v1", ("schema", "metadata.name",
                                          "`Reviews_v1` is not a DNS subdomain (lower-case letters, digits, `-` "
                                          "and `.`, at most 253 characters)")),
    (["metadata", "name"], KeyError, ("schema", "metadata", "missing required field `name`")),
    (["spec", "http", 0, "timeout"], "0s", ("rule", "spec.http[0].timeout",
                                            "must be a valid duration greater than 1ms")),
])
def test_istio_objects_the_api_server_rejects(path, value, expected):
    assert expected in problems(changed(VS, path, value))


@pytest.mark.parametrize("path, value, expected", [
    (["spec", "rules", 0, "matches", 0, "path", "value"], "/a//b",
     ("rule", "spec.rules[0].matches[0].path", "must not contain '//' when type one of ['Exact', 'PathPrefix']")),
    (["spec", "rules", 0, "timeouts", "backendRequest"], "5s",
     ("rule", "spec.rules[0].timeouts", "backendRequest timeout cannot be longer than request timeout")),
    (["spec", "rules", 0, "matches", 0, "path", "type"], "Glob",
     ("schema", "spec.rules[0].matches[0].path.type",
      "`Glob` is not one of Exact, PathPrefix, RegularExpression")),
    (["spec", "rules", 0, "retry"], {"attempts": 2},
     ("schema", "spec.rules[0].retry", "unknown field `retry`")),
    (["spec", "rules", 0, "backendRefs", 0, "port"], KeyError,
     ("rule", "spec.rules[0].backendRefs[0]", "Must have port for Service reference")),
])
def test_httproutes_the_api_server_rejects(path, value, expected):
    assert expected in problems(changed(HR, path, value))


def test_retry_exists_only_in_the_experimental_channel():
    route = changed(HR, ["spec", "rules", 0, "retry"], {"attempts": 2, "codes": [503], "backoff": "100ms"})
    assert problems(route, "experimental") == []
    assert ("schema", "spec.rules[0].retry", "unknown field `retry`") in problems(route, "standard")


def test_defaults_are_applied_before_the_rules():
    """A backendRef's `kind` defaults to Service: its rule then needs the port."""
    ref = {"name": "reviews-v1"}
    assert ("rule", "spec.rules[0].backendRefs[0]", "Must have port for Service reference") in \
        problems(changed(HR, ["spec", "rules", 0, "backendRefs", 0], ref))


def test_a_map_list_with_a_duplicate_key_is_rejected():
    header = {"name": "x-user", "type": "Exact", "value": "a"}
    found = problems(changed(HR, ["spec", "rules", 0, "matches", 0, "headers"], [header, {**header, "value": "b"}]))
    assert found == [("schema", "spec.rules[0].matches[0].headers[1]",
                      "duplicate entry with name='x-user' (also item 0): the list is a map keyed by name")]


def test_unknown_kinds_and_versions_are_located():
    assert problems({**VS, "apiVersion": "networking.istio.io/v2"})[0][1] == "apiVersion"
    assert problems({**VS, "kind": "Gateway"})[0][1] == "kind"


def test_the_report_locates_the_meshc_source():
    (p,) = validate([changed(VS, ["spec", "http", 0, "timeout"], "0s")]).problems
    assert (p.source, p.object_kind, p.name) == ("shop.mesh:12:3", "VirtualService", "shop/reviews")
    assert str(p) == ("VirtualService shop/reviews (shop.mesh:12:3): spec.http[0].timeout: "
                      "must be a valid duration greater than 1ms")


def test_the_validator_does_not_change_the_object():
    obj = copy.deepcopy(HR)
    validate([obj])
    assert obj == HR


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/crds is not next to the repository")
def test_the_vendored_files_are_what_the_script_generates(tmp_path, monkeypatch):
    from compiler.kubeschema import vendor

    monkeypatch.setattr(vendor, "HERE", tmp_path)
    assert vendor.main([str(SHARED)]) == 0
    for name in [*BUNDLES.values(), "LICENSE.istio", "LICENSE.gateway-api"]:
        assert (tmp_path / name).read_bytes() == (CRDS / name).read_bytes(), name


def test_the_vendored_files_carry_their_revision():
    readme = (CRDS / "README.md").read_text(encoding="utf-8")
    assert "v1.30.3" in readme and "v1.6.1" in readme
    for name in BUNDLES.values():
        data = json.loads((CRDS / name).read_text(encoding="utf-8"))
        assert data["kinds"]
    assert json.loads((CRDS / "gateway-api-standard.json").read_text())["annotations"][
        "gateway.networking.k8s.io/bundle-version"] == "v1.6.1"


def test_problems_become_diagnostics_at_the_mesh_source():
    """A rule's rejection is E0941 at the construct the object's annotation names, with the rule in
    the hint; an object without an annotation is reported at its file."""
    from compiler import api
    from compiler.kubeschema.diagnostics import problem_diagnostic

    text = 'service reviews {\n  port 80\n  endpoints ["10.0.0.1:80"]\n}\n'
    comp = api.check([api.Text("shop.mesh", text)])
    bad = changed(VS, ["spec", "http", 0, "timeout"], "0s")
    bad["metadata"]["annotations"]["meshc.dev/source"] = "shop.mesh:1:1"
    (p,) = validate([bad]).problems
    d = problem_diagnostic(p, comp.sources)
    assert (d.code, d.span.location(), d.message) == (
        "E0941", "shop.mesh:1:1",
        "VirtualService `shop/reviews` `spec.http[0].timeout`: must be a valid duration greater than 1ms")
    assert d.hint == "the CRD's rule `duration(self) >= duration('1ms')` rejects it"
    unannotated = changed(HR, ["spec", "rules", 0, "bogus"], 1)
    (p,) = validate([unannotated]).problems
    d = problem_diagnostic(p, comp.sources, "shop/reviews.yaml")
    assert (d.code, d.span, d.path) == ("E0940", None, "shop/reviews.yaml")


def test_message_expression_gives_the_message():
    rule = cel.compile_rule({"rule": "self.size() <= 3", "message": "too long",
                             "messageExpression": "'has ' + string(self.size()) + ' characters'"})
    assert rule.evaluate(cel.to_cel({"type": "string"}, "abcdef")) == (False, "has 6 characters")
    with pytest.raises(cel.RuleError):
        cel.compile_rule({"rule": "true", "messageExpression": "self.nope()"})


def test_without_cel_python_the_objects_are_refused_with_a_clear_message():
    """cel-python is an extra (`meshc[kubernetes]`): without it a rule cannot be evaluated, which
    is the validator's error (reported once), never a pass. Run in a child whose `celpy` cannot
    be imported."""
    import subprocess
    import sys

    code = (
        "import sys, json\n"
        "sys.modules['celpy'] = None\n"
        "from compiler.kubeschema import validate\n"
        f"report = validate([{VS!r}, {VS!r}])\n"
        "print(json.dumps([(p.kind, p.message) for p in report.problems]))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [[
        "validator", "cel-python is not installed, so the CRD's CEL rules cannot be evaluated: "
                     "pip install 'meshc[kubernetes]'"]]


@pytest.mark.parametrize("node, value, ok", [
    ({"type": "string", "nullable": True}, None, True),
    ({"type": "string"}, None, False),
    ({"x-kubernetes-int-or-string": True}, 8080, True),
    ({"x-kubernetes-int-or-string": True}, "http", True),
    ({"x-kubernetes-int-or-string": True}, 1.5, False),
    ({"type": "object", "x-kubernetes-preserve-unknown-fields": True}, {"any": {"thing": 1}}, True),
    ({"type": "object", "properties": {"a": {"type": "string"}}}, {"a": "x", "b": 1}, False),   # unknown field
    ({"type": "object"}, {"b": 1}, False),                     # pruned entirely by the API server: rejected
    ({"type": "object", "additionalProperties": {"type": "integer"}}, {"b": 1}, True),
    ({"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"}, ["a", "a"], False),
    ({"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "atomic"}, ["a", "a"], True),
    ({"type": "integer", "format": "int32"}, 2 ** 31, False),
    ({"type": "integer", "format": "int64"}, 2 ** 31, True),
    ({"type": "string", "format": "byte"}, "aGk=", True),
    ({"type": "string", "format": "byte"}, "not base64!", False),
    ({"type": "string", "format": "date-time"}, "2026-12-07T08:00:00Z", True),
    ({"type": "string", "format": "date-time"}, "yesterday", False),
    ({"type": "object", "properties": {"a": {}, "b": {}}, "oneOf": [{"required": ["a"]}, {"required": ["b"]}]},
     {"a": 1, "b": 2}, False),
])
def test_structural_schemas_as_json_schema(node, value, ok):
    from jsonschema import Draft202012Validator, validators

    from compiler.kubeschema.validate import _format_checker, _list_map_keys, to_json_schema

    cls = validators.extend(Draft202012Validator, {"x-list-map-keys": _list_map_keys})
    errors = list(cls(to_json_schema(node), format_checker=_format_checker()).iter_errors(value))
    assert (not errors) == ok, [e.message for e in errors]


def test_the_cel_parser_is_cached_and_an_unwritable_cache_only_costs_time(tmp_path):
    """cel-python's parser tables go to meshc's cache directory; a second process reads them, and a
    cache directory that cannot be created still validates."""
    import os
    import subprocess
    import sys

    code = ("from compiler.kubeschema import cel\n"
            "rule = cel.compile_rule({'rule': 'self == true ? !false : false', 'message': 'm'})\n"
            "assert rule.evaluate(cel.to_cel({'type': 'boolean'}, True)) == (True, '')\n")
    blocked = tmp_path / "file"
    blocked.write_text("")
    for cache in (tmp_path / "cache", tmp_path / "cache", blocked / "below-a-file"):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MESHC_CACHE_DIR": str(cache)}
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cache" / "cel-grammar.lark-cache").is_file()


def test_label_values_inside_a_spec_are_checked():
    """A `/` is no label value: a VirtualService's sourceLabels, a Sidecar's selector, a ServiceEntry
    endpoint's labels (the CRDs type them as string maps only)."""
    vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": "reviews", "namespace": "prod"},
          "spec": {"hosts": ["reviews"], "http": [{"match": [{"sourceLabels": {"app": "staging/web"}}],
                                                   "route": [{"destination": {"host": "reviews"}}]}]}}
    se = {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
          "metadata": {"name": "reviews", "namespace": "prod"},
          "spec": {"hosts": ["reviews.prod.svc.cluster.local"], "location": "MESH_INTERNAL", "resolution": "STATIC",
                   "ports": [{"number": 9080, "name": "http", "protocol": "HTTP"}],
                   "endpoints": [{"address": "10.0.0.1", "labels": {"app": "prod/reviews"}}]}}
    report = validate([vs, se], "standard")
    paths = sorted(p.path for p in report.problems)
    assert paths == ["spec.endpoints[0].labels[app]", "spec.http[0].match[0].sourceLabels[app]"], report.problems
    vs["spec"]["http"][0]["match"][0]["sourceLabels"]["app"] = "web"
    se["spec"]["endpoints"][0]["labels"]["app"] = "reviews"
    assert validate([vs, se], "standard").ok
