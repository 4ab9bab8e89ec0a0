"""Golden tests of the diagnostics: one small bad input per case, its human and JSON renderings.

A case is `tests/diagnostics/NAME.mesh`, or a directory `tests/diagnostics/NAME/` whose .mesh files
form one program (as `meshc check DIR` would load them). The expected renderings are
`tests/diagnostics/NAME.txt` (exactly what `meshc check --color never` prints on stderr) and
`tests/diagnostics/NAME.json` (exactly what `meshc check --format json` prints on stdout).

`pytest --update-goldens` rewrites the golden files from the current output and deletes golden
files whose case no longer exists. Review the diff before committing it.

Besides the byte-for-byte goldens, EXPECTED_CODES states the intent of every case (which codes,
in which order), so that a careless golden update cannot silently change what a case tests.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from pathlib import Path

import pytest

from compiler import api
from compiler.cli.inputs import expand_paths
from compiler.core import codes
from compiler.core.diagnostics import Collector, render_human, render_json, summary_line
from compiler.core.source import SourceFile
from compiler.syntax import tables as tables_mod
from compiler.syntax.parse import Parser

ROOT = Path(__file__).resolve().parent.parent
CASES_DIR = ROOT / "tests" / "diagnostics"
CASES_REL = "tests/diagnostics"


def case_names() -> list[str]:
    names = []
    for p in sorted(CASES_DIR.iterdir()):
        if p.name.startswith((".", "_")):
            continue
        if p.is_dir() and any(p.glob("*.mesh")):
            names.append(p.name)
        elif p.is_file() and p.suffix == ".mesh":
            names.append(p.stem)
    assert len(names) == len(set(names)), "a case exists both as NAME.mesh and as NAME/"
    return names


CASES = case_names()

# The intent of every case: the codes of its diagnostics, in the order they are reported.
EXPECTED_CODES: dict[str, list[str]] = {
    # syntax
    "three_syntax_errors": ["E0101", "E0102", "E0101"],
    "label_subsets": ["E0360", "E0360", "E0361", "E0361", "E0362", "E0363", "E0364"],
    "unexpected_semicolon": ["E0102"],
    "missing_closing_brace": ["E0103"],
    "missing_closing_brace_before_next_item": ["E0103"],
    "misspelled_keyword": ["E0101"],
    "misspelt_item_after_item": ["E0101"],  # and no E0209 for `details` (issue 18)
    "control_character": ["E0102", "E0312"],
    "unknown_escape": ["E0104"],
    "duplicate_settings": ["E0105"] * 5,
    # policy tests (E0820 and E0821 come from running them: tests/test_policy_tests.py)
    "policy_tests": ["E0801", "E0803", "E0805", "E0806", "E0802", "W0801", "E0804", "E0807", "E0810", "E0809",
                     "E0811", "E0812", "E0808"],
    "policy_test_requests": ["E0813"] * 3 + ["E0814"] * 8,
    # names and imports
    "unknown_service_did_you_mean": ["E0201"] * 4,
    "duplicate_names": ["E0202"] * 8,
    "unknown_subset": ["E0203", "E0203"],
    "unknown_policy": ["E0204", "E0204"],
    "std_policy_without_import": ["E0204"],
    "missing_import": ["E0205"],
    "unknown_std_module": ["E0205"],
    "not_utf8": ["E0106"],
    "import_not_a_regular_file": ["E0107"],
    "import_cycle": ["E0206"],
    "policy_of_wrong_kind": ["E0207", "E0207"],
    "ambiguous_destination": ["E0208"],
    "block_for_unknown_service": ["E0209", "E0209"],
    "name_too_long": ["E0210"] * 7,
    "unknown_caller": ["E0214", "E0301", "W0410"],
    "namespaces": ["E0217", "E0215", "E0216"],
    "invalid_hosts": ["E0211", "E0211", "E0213", "E0211", "E0211", "E0212", "E0212", "E0212"],
    # values
    "missing_settings": ["E0301"] * 9,
    "numbers_out_of_range": ["E0302"] * 6,
    "number_too_large": ["E0302"] * 4 + ["E0303"],  # one per token (issue 18)
    "percentages_over_100": ["E0303"] * 4,
    "percentage_with_five_decimals": ["E0303"],
    "invalid_re2_regex": ["E0304"] * 3,
    "zero_total_weights": ["E0305", "E0305"],
    "invalid_durations": ["E0306"] * 3,
    "invalid_endpoint": ["E0307"] * 4,
    "workloads_share_ports": ["E0350", "E0312", "E0302", "E0350", "E0350"],
    "workload_stream_idle": ["W0404"],
    "workload_ports_merged": ["E0312"],
    "invalid_header_name": ["E0308"] * 3,
    "unknown_method": ["E0309", "E0309"],
    "unknown_retry_condition": ["E0310", "E0310", "E0302", "E0310"],
    "invalid_identity": ["E0311"] * 3,
    "tracing_values": ["E0303", "E0312", "E0317", "E0105"],
    "invalid_access_log": ["E0316", "E0316"],
    "invalid_setting_value": ["E0312"] * 7,
    "path_ignore_case": ["W0401", "E0312", "W0601"],
    "invalid_mtls_mode_is_not_guessed": ["E0312", "E0312"],  # and no W0604 (issue 18)
    "contradicting_header_changes": ["E0313", "E0313"],
    "invalid_path": ["E0314"] * 6,
    "route_with_two_destinations": ["E0315"],
    "redirect_values": ["E0332", "E0333", "E0330", "E0334", "W0421"],
    "rewrite_values": ["E0331", "E0331", "E0422", "E0421", "W0420"],
    "substitution_without_slash": ["W0422", "W0422", "W0422", "W0422"],
    "direct_response": ["E0335", "E0336", "E0420", "E0420", "E0420"],
    # routes and timeouts
    "per_try_not_below_route_timeout": ["E0401", "E0401"],
    "several_subsets_without_routes": ["E0402"],
    "unreachable_route_identical_match": ["W0401"],
    "unreachable_route_prefix_covered": ["W0401"],
    "backoff_not_below_route_timeout": ["W0402"],
    "mirror_to_own_destination": ["W0403", "W0403"],
    "mirror_twice": ["W0430"],
    "split_arm_headers": ["W0431", "E0308", "W0431"],
    "cors_values": ["E0340", "E0340", "E0343", "W0435", "E0341", "E0342"],
    "authz_not_conditions": ["W0610", "W0610", "E0314", "E0304", "E0309"],
    "route_timeout_above_stream_idle": ["E0306", "E0302", "W0404", "W0404"],
    # resilience
    "retries_on_post_without_opt_in": ["W0501", "W0501"],
    "retries_without_budget": ["W0502"],
    "backoff_base_above_max": ["E0501"],
    "framing_header_change": ["E0308", "E0308", "E0308"],
    "identity_rule_on_plaintext": ["W0604", "W0604"],
    "retry_limit_ignored_under_budget": ["W0503", "W0503"],
    # authorization
    "authorization_without_default": ["E0601"],
    "assert_without_one_destination": ["E0850", "E0201", "E0850"],
    "allow_covered_by_deny": ["W0601"],
    "rule_with_no_effect": ["W0602", "W0602"],
    "duplicate_rule": ["W0603"],
}


@contextlib.contextmanager
def at_root():
    with contextlib.chdir(ROOT):
        yield


def case_inputs(name: str) -> list[str]:
    """The relative paths to hand to the compiler, as the CLI would expand them."""
    target = f"{CASES_REL}/{name}" if (CASES_DIR / name).is_dir() else f"{CASES_REL}/{name}.mesh"
    files, missing = expand_paths([target])
    assert not missing and files
    return files


def render_human_output(diags) -> str:
    """What `meshc check --color never` prints on stderr."""
    parts = []
    for d in diags:
        parts += [render_human(d, color=False), ""]
    if diags:
        parts.append(f"meshc: {summary_line(diags)}")
    return "\n".join(parts) + "\n" if parts else ""


@functools.cache
def run_case(name: str):
    """(diagnostics, human text, JSON text) of a case, compiled from the repository root."""
    with at_root():
        result = api.check(case_inputs(name))
        diags = result.diagnostics
        return diags, render_human_output(diags), render_json(diags) + "\n"


def compare_golden(path: Path, actual: str, update: bool) -> None:
    if update:
        if not path.exists() or path.read_text(encoding="utf-8") != actual:
            path.write_text(actual, encoding="utf-8")
        return
    assert path.exists(), f"missing golden file {path.relative_to(ROOT)}: run `pytest --update-goldens`"
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{path.relative_to(ROOT)} differs (run `pytest --update-goldens` and review the diff)"


def check_text(tmp_path, text: str, name: str = "input.mesh"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with contextlib.chdir(tmp_path):
        return api.check([name])


SERVICE = 'service a {\n  port 80\n  endpoints ["127.0.0.1:80"]\n}\n'


# ---- the goldens -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", CASES)
def test_human_rendering(name, update_goldens):
    _, human, _ = run_case(name)
    compare_golden(CASES_DIR / f"{name}.txt", human, update_goldens)


@pytest.mark.parametrize("name", CASES)
def test_json_rendering(name, update_goldens):
    _, _, text = run_case(name)
    data = json.loads(text)
    assert data["summary"]["errors"] + data["summary"]["warnings"] == len(data["diagnostics"])
    compare_golden(CASES_DIR / f"{name}.json", text, update_goldens)


def test_no_orphaned_goldens(update_goldens):
    orphans = sorted(p for p in CASES_DIR.iterdir()
                     if p.is_file() and p.suffix in (".txt", ".json") and p.stem not in CASES)
    if update_goldens:
        for p in orphans:
            p.unlink()
        return
    assert not orphans, f"golden files without a case (run `pytest --update-goldens`): {[p.name for p in orphans]}"


# ---- what each case is about -------------------------------------------------------------------

def test_every_case_states_its_intent():
    assert sorted(EXPECTED_CODES) == sorted(CASES)


@pytest.mark.parametrize("name", CASES)
def test_case_reports_the_expected_codes(name):
    diags, _, _ = run_case(name)
    assert [d.code for d in diags] == EXPECTED_CODES[name]


def test_every_registered_code_is_covered():
    covered = {d.code for name in CASES for d in run_case(name)[0]}
    # Target limitations (E07xx/W07xx) come from a backend, never from `check`: their cases are
    # in tests/diagnostics_envoy/ (tests/test_envoy_diagnostics.py).
    target = {c for c in codes.CODES if c[1:3] == "07"}
    # Lint rules (L-codes) come from `meshc lint`: tests/test_explain.py runs each one's examples.
    lint = {c for c in codes.CODES if c.startswith("L")}
    # The assert prover's verdicts come from `meshc check` after the checks (compiler/verify/asserts.py):
    # tests/test_asserts.py and tests/test_explain.py run them. A policy test's failure (E0820) and a
    # disagreement of the targets (E0821) come from `meshc test` running the tests:
    # tests/test_policy_tests.py and tests/test_explain.py.
    prover = {"E0851", "W0850", "W0851"}
    run = {"E0820", "E0821"}
    # `meshc import istio` reads YAML (E10xx/W10xx): tests/test_istio_import.py and tests/test_explain.py.
    imported = {c for c in codes.CODES if c[1:3] == "10"}
    # The Kubernetes targets' codes (E09xx/W09xx) come from `compile --target istio|gateway-api`:
    # tests/test_istio.py, tests/test_kube_output.py and tests/test_explain.py run them.
    kube = {c for c in codes.CODES if c[1:3] == "09"} | {"W0411"}   # (W0411: a caller route under Gateway API)
    assert set(codes.CODES) - covered - target - lint - prover - run - kube - imported == set(), \
        "codes without a diagnostics case"
    assert covered - set(codes.CODES) == set(), "codes reported but not registered in compiler/core/codes.py"


def test_severity_follows_the_registry():
    for name in CASES:
        for d in run_case(name)[0]:
            assert d.severity == codes.CODES[d.code].severity
            assert d.severity == ("error" if d.code.startswith("E") else "warning")


def test_three_syntax_errors_give_exactly_three_diagnostics():
    diags, _, _ = run_case("three_syntax_errors")
    assert len(diags) == 3
    lines = [d.span.start_line_col()[0] for d in diags]
    assert lines == sorted(set(lines)), "one diagnostic per independent mistake"


def test_unknown_name_has_did_you_mean_hint():
    diags, _, _ = run_case("unknown_service_did_you_mean")
    assert diags[0].message == "unknown service `paymnets` in route `r`"
    assert diags[0].hint == "did you mean `payments`?"
    diags, _, _ = run_case("unknown_policy")
    assert any(d.hint == "did you mean `quick`?" for d in diags)


def test_import_cycle_names_both_files():
    diags, _, _ = run_case("import_cycle")
    (d,) = diags
    files = {d.file} | {label.span.path for label in d.labels}
    assert files == {f"{CASES_REL}/import_cycle/a.mesh", f"{CASES_REL}/import_cycle/b.mesh"}


def test_std_import_cannot_escape_the_standard_library(tmp_path):
    # stdlib_policies/../examples/shop.mesh is a file of this repository, not a standard library module.
    diags = check_text(tmp_path, 'import "std/../examples/shop"\n').diagnostics
    assert [(d.code, d.message) for d in diags] == [("E0205", "no standard library module `std/../examples/shop`")]


def test_unreachable_routes_name_the_shadowing_route():
    (d,) = run_case("unreachable_route_identical_match")[0]
    assert "`second`" in d.message and "`first`" in d.labels[0].message
    (d,) = run_case("unreachable_route_prefix_covered")[0]
    assert "`users`" in d.message and "`api`" in d.labels[0].message  # and `apiary` is reachable


def test_retry_warnings_name_the_right_routes():
    diags = run_case("retries_on_post_without_opt_in")[0]
    assert [re.search(r"route `(\w+)`", d.message).group(1) for d in diags] == ["create", "any_method"]
    (d,) = run_case("retries_without_budget")[0]
    assert "service `a`" in d.message


def test_paths_in_goldens_are_relative():
    for name in CASES:
        _, human, text = run_case(name)
        assert str(ROOT) not in human and str(ROOT) not in text


# ---- no lark internals in any message --------------------------------------------------------

LARK_NAMES_ANY_CASE = re.compile(r"__ANON|\$END", re.I)


@functools.cache
def terminal_names() -> re.Pattern:
    t = tables_mod.load_tables()
    names = set(t.keywords.values()) | set(t.keyword_classes) | set(tables_mod.VALUE_TERMINALS)
    names |= {"COND", "LBRACE", "RBRACE", "LSQB", "RSQB", "COMMA", "DOT", "RULE", "NAME", "STRING"}
    return re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, names))) + r")\b")


def assert_no_lark_names(text: str) -> None:
    assert not LARK_NAMES_ANY_CASE.search(text), text
    # Backticks quote user input and placeholders (`policy retry NAME { … }`): look outside them.
    prose = re.sub(r"`[^`\n]*`", "", text)
    match = terminal_names().search(prose)
    assert match is None, f"lark terminal name {match.group(0)!r} in: {text}"


@pytest.mark.parametrize("name", CASES)
def test_renderings_never_name_lark_terminals(name):
    _, human, text = run_case(name)
    assert_no_lark_names(human)
    for d in json.loads(text)["diagnostics"]:
        for field in (d["message"], d["hint"] or "", d["title"], *(lb["message"] for lb in d["labels"])):
            assert_no_lark_names(field)


def _syntax_error_variants():
    """Every example and stdlib file (comments removed) cut short after a token, and with a token deleted."""
    for path in sorted((ROOT / "examples").glob("*.mesh")) + sorted((ROOT / "stdlib_policies").glob("*.mesh")):
        text = re.sub(r"#[^\n]*", "", path.read_text(encoding="utf-8"))
        tokens = [m.span() for m in re.finditer(r'"(?:[^"\\\n]|\\.)*"|[A-Za-z0-9_.%-]+|\S', text)]
        for start, end in tokens[::7]:
            yield text[:end]
            yield text[:start] + text[end:]


def test_syntax_errors_never_name_lark_terminals():
    parser = Parser()
    seen = 0
    for i, text in enumerate(_syntax_error_variants()):
        diags = Collector()
        parser.parse(SourceFile(f"variant{i}.mesh", text), diags)
        for d in diags.items:
            if d.code.startswith("E01"):
                seen += 1
                assert_no_lark_names(d.message)
                assert_no_lark_names(d.hint or "")
                assert_no_lark_names(render_human(d))
    assert seen > 50  # the sweep did produce syntax errors


# ---- bugs found while writing these tests ---------------------------------------------------------
# Fixed ones stay as regression tests; open ones are strict xfails.

def test_comment_at_end_of_file_is_not_an_error(tmp_path):
    result = check_text(tmp_path, SERVICE + "# the end\n")
    assert result.diagnostics == []


def test_file_with_only_a_comment_is_not_an_error(tmp_path):
    assert check_text(tmp_path, "# nothing here yet\n").diagnostics == []


def test_recovery_with_comments_between_items_reports_one_error(tmp_path):
    text = ("# one mistake\n" + SERVICE + "\n# b has a typo\n"
            'service b {\n  prot 81\n  endpoints ["127.0.0.1:81"]\n}\n\n# c is fine\n'
            'service c {\n  port 82\n  endpoints ["127.0.0.1:82"]\n}\n')
    diags = check_text(tmp_path, text).diagnostics
    assert [(d.code, d.span.start_line_col()[0]) for d in diags] == [("E0101", 9)]


def test_rule_set_used_twice_is_reported_once(tmp_path):
    text = ('import "std/authorization"\n' + SERVICE +
            "authorization a {\n  default deny\n  use std.allow_health_checks\n  use std.allow_health_checks\n}\n")
    assert [d.code for d in check_text(tmp_path, text).diagnostics] == ["E0202"]


def test_unterminated_string_message_is_grammatical(tmp_path):
    text = 'service a {\n  port 80\n  endpoints ["127.0.0.1:80]\n}\n'
    (d,) = check_text(tmp_path, text).diagnostics
    assert d.code == "E0101"
    assert "unexpected an " not in d.message  # was: `unexpected an unterminated string`
    assert "unterminated string" in d.message


@pytest.mark.parametrize("text, wrong, right", [
    # after `endpoints [...]` in a service: rule conditions were listed
    ('service a {\n  port 80\n  endpoints ["127.0.0.1:80"]\n  timeout 3s\n}\n',
     ["`from`", "`header`", "`path`"], ["`port`", "`subset`", "`}`"]),
    # after `to a` in a route: service settings and authorization items were listed
    (SERVICE + 'routes a {\n  route r {\n    to a\n    tiemout 2s\n  }\n}\n',
     ["`port`", "`endpoints`", "`default`"], ["`timeout`", "`.`", "`}`"]),
    # in an authorization rule: `query` is only a route match condition
    (SERVICE + 'authorization a {\n  default deny\n  allow { path prefix "/x"  port 80 }\n}\n',
     ["`query`"], ["`from`", "`path`", "`}`"]),
    # after a nested block in a service: top-level keywords were listed
    ('service b {\n  port 81\n  endpoints ["127.0.0.1:81"]\n  limits { connections 1 }\n  bogus 1\n}\n',
     ["`routes`", "`policy`", "`import`"], ["`port`", "`}`"]),
], ids=["after_string_list", "after_ref", "in_authorization_rule", "after_nested_block"])
def test_expected_tokens_can_stand_at_the_error(tmp_path, text, wrong, right):
    """Expected-token lists once came from merged LALR lookaheads and named keywords that cannot stand there."""
    (d,) = check_text(tmp_path, text).diagnostics
    assert d.code == "E0101"
    assert [w for w in wrong if w in d.message] == []
    assert [r for r in right if r not in d.message] == []


@pytest.mark.parametrize("text, message", [
    ('service a {\n  port 80\n  endpoints []\n}\n', "service `a` has an empty endpoint list"),
    (SERVICE + 'authorization a {\n  default deny\n  allow { method [] }\n}\n', "the method list is empty"),
    (SERVICE + 'authorization a {\n  default deny\n  allow { from identity [] }\n}\n',
     "the `from identity` list is empty"),
], ids=["endpoints", "method", "from_identity"])
def test_empty_lists_are_reported_not_crashes(tmp_path, text, message):
    """An empty list once crashed the AST builder (IndexError in Builder.span: exit 3)."""
    diags = check_text(tmp_path, text).diagnostics
    assert [(d.code, d.message) for d in diags] == [("E0301", message)]


def test_sidecar_port_colliding_with_a_default_is_an_input_error(tmp_path):
    """Once passed the checks, then failed the IR self-check (exit 3)."""
    text = 'service a {\n  port 80\n  endpoints ["127.0.0.1:80"]\n  sidecar { inbound 15001 }\n}\n'
    assert [d.code for d in check_text(tmp_path, text).diagnostics] == ["E0312"]
    with contextlib.chdir(tmp_path):
        assert api.compile(["input.mesh"]).has_errors  # and no InternalError


def test_unbracketed_ipv6_endpoint_is_rejected(tmp_path):
    """`::1:8080` was once accepted as host `::1`, port 8080."""
    text = 'service a {\n  port 80\n  endpoints ["::1:8080"]\n}\n'
    assert [d.code for d in check_text(tmp_path, text).diagnostics] == ["E0307"]


def test_allow_rule_under_default_allow_has_no_effect_even_with_denies(tmp_path):
    """Deny is evaluated first, so under `default allow` an allow rule never changes an answer."""
    text = SERVICE + ('authorization a {\n  default allow\n  deny { path prefix "/admin" }\n'
                      '  allow { path prefix "/public" }\n}\n')
    assert [d.code for d in check_text(tmp_path, text).diagnostics] == ["W0602"]


def test_header_value_with_newline_is_rejected(tmp_path):
    """A CR/LF in a header value was once written to the IR (header injection)."""
    text = SERVICE + 'routes a {\n  route r {\n    to a\n    request_headers { set "x-a" "1\\r\\nx-evil: 2" }\n  }\n}\n'
    assert [d.code for d in check_text(tmp_path, text).diagnostics] == ["E0312"]


# ---- issue 18: diagnostics a new user hit ------------------------------------------------------

def test_invalid_choice_suggests_the_closest_and_is_not_guessed_later():
    diags = run_case("invalid_mtls_mode_is_not_guessed")[0]
    assert [d.hint.split("?")[0] for d in diags] == ["did you mean `strict`", "did you mean `permissive`"]
    assert not any("permissive`)" in d.message for d in diags)


def test_misspelt_item_after_an_item_reads_as_a_first_item(tmp_path):
    (d,) = run_case("misspelt_item_after_item")[0]
    assert d.message == ("unexpected `servce`, expected `assert`, `authorization`, `import`, `mesh`, `policy`, "
                         "`routes`, `service` or `test`")
    assert d.hint == "did you mean `service`?"
    (first,) = check_text(tmp_path, "servce details {\n  port 80\n}\n").diagnostics
    assert (first.message, first.hint) == (d.message, d.hint)  # the same as when it is the first item


def test_misspelt_item_keeps_the_item_before_it(tmp_path):
    text = SERVICE + "servce b {\n  port 80\n}\nroutes a {\n  route r { to b }\n}\n"
    diags = check_text(tmp_path, text).diagnostics
    assert [d.code for d in diags] == ["E0101"]  # `a` is declared (no E0209), `b` is broken (no E0201)


def test_a_number_too_large_is_named_as_written_once():
    diags = run_case("number_too_large")[0]
    assert [d.message for d in diags] == [
        "number `99999999999999999999999` is too large",
        "number `18446744073709551616` is too large",
        "number `18446744073709551616` is too large",
        "number `12345678901234567890…` (60 digits) is too large",
        "`max_ejected` `12345678901234567890123%` is outside 0% to 100%",
    ]


def test_control_characters_are_escaped_in_messages():
    diags, human, text = run_case("control_character")
    assert diags[0].message == "unexpected character `\\x01` (U+0001)"
    assert diags[1].message == "`web\\x1b[2J` is not a valid namespace name"
    assert "\x01" not in human and "\x1b" not in human  # the excerpt shows control pictures
    assert "\u2401" in human and "\u241b[2J" in human
    assert json.loads(text)["diagnostics"][1]["message"] == diags[1].message


def test_a_stray_character_after_an_item_keeps_the_item(tmp_path):
    result = check_text(tmp_path, SERVICE.rstrip("\n") + ";\nroutes a {\n  route r { to a }\n}\n")
    assert [d.code for d in result.diagnostics] == ["E0102"]
    assert result.context is not None and "a" in result.context.services and "a" in result.context.routes
