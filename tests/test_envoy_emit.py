"""Unit tests of the Envoy backend's lowering rules, on the IR and on small policies."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from compiler import ir
from compiler.backends import Options
from compiler.backends import envoy as backend
from compiler.backends.envoy import listeners, matches, names, rbac, routes, values
from tests.envoy_support import ROOT, compile_files, run_meshc
from tests.test_import_directions import imported_modules, python_files


# ---- scalars ------------------------------------------------------------------------------------

@pytest.mark.parametrize("ms, text", [(0, "0s"), (1, "0.001s"), (250, "0.250s"), (1000, "1s"), (1500, "1.500s"),
                                      (15_000, "15s"), (86_400_000, "86400s")])
def test_durations_have_one_canonical_form(ms, text):
    assert values.duration(ms) == text


@pytest.mark.parametrize("percent, expected", [
    (100.0, (100, "HUNDRED")), (0.0, (0, "HUNDRED")), (10.0, (10, "HUNDRED")), (12.5, (1250, "TEN_THOUSAND")),
    (0.01, (1, "TEN_THOUSAND")), (0.0001, (1, "MILLION")), (33.3333, (333333, "MILLION")), (99.99, (9999, "TEN_THOUSAND")),
])
def test_fractional_percent_uses_the_smallest_exact_denominator(percent, expected):
    fp = values.fractional_percent(percent)
    assert (fp["numerator"], fp["denominator"]) == expected


def test_fractional_percent_refuses_what_it_cannot_say_exactly():
    with pytest.raises(ValueError):
        values.fractional_percent(12.34567)


def test_header_values_are_literal():
    assert values.header_value("100%") == "100%%"
    assert values.header_value("%DOWNSTREAM_REMOTE_ADDRESS%") == "%%DOWNSTREAM_REMOTE_ADDRESS%%"


# ---- retry_on: Envoy ignores unknown tokens silently, so the backend must never emit one ------------

RETRY = ir.Retry(2, ("5xx",), (), 0, 25, 250, False)


def test_retry_policy_tokens():
    policy = routes.retry_policy(dataclasses.replace(RETRY, retry_on=("5xx", "reset"), retriable_status_codes=(409,)))
    assert policy["retry_on"] == "5xx,reset,retriable-status-codes"
    assert policy["retriable_status_codes"] == [409]
    assert "per_try_timeout" not in policy  # 0: no per-try timeout
    only_codes = routes.retry_policy(dataclasses.replace(RETRY, retry_on=(), retriable_status_codes=(503,)))
    assert only_codes["retry_on"] == "retriable-status-codes"


def test_backend_refuses_an_unknown_retry_token():
    with pytest.raises(ValueError, match="retry_on"):
        routes.retry_policy(dataclasses.replace(RETRY, retry_on=("5xx", "5xxx")))


def test_front_end_rejects_unknown_retry_conditions(tmp_path):
    """The guarantee the backend relies on: an unknown condition never reaches the IR (E0310)."""
    (tmp_path / "p.mesh").write_text('service a { port 80 endpoints ["127.0.0.1:1"] }\n'
                                     'routes a { route r { to a  retry { on [5xx, bogus] } } }\n')
    proc = run_meshc("compile", "p.mesh", "--target", "envoy", "--proxy", "all", "-o", "out", cwd=str(tmp_path))
    assert proc.returncode == 1 and "E0310" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_every_canonical_retry_condition_is_an_envoy_token():
    from compiler.lower import RETRY_CONDITIONS

    assert set(RETRY_CONDITIONS.values()) == routes.RETRY_ON_TOKENS


# ---- matches ------------------------------------------------------------------------------------

def test_path_kinds():
    def m(kind, value):
        return matches.route_match(ir.Match(ir.PathMatch(kind, value), (), (), None))

    assert m("exact", "/a") == {"path": "/a"}
    assert m("prefix", "/a/") == {"prefix": "/a/"}
    assert m("segment_prefix", "/a") == {"path_separated_prefix": "/a"}
    assert m("regex", "/a/[0-9]+") == {"safe_regex": {"regex": "/a/[0-9]+"}}
    assert matches.route_match(ir.Match(None, (), (), None)) == {"prefix": "/"}


def test_header_query_and_method_matchers():
    hm = matches.header_matcher
    assert hm(ir.HeaderMatch("x", "present", None, False, False)) == {"name": "x", "present_match": True}
    assert hm(ir.HeaderMatch("x", "absent", None, False, False)) == {"name": "x", "present_match": False}
    assert hm(ir.HeaderMatch("x", "prefix", "v", True, True)) == \
        {"name": "x", "string_match": {"prefix": "v", "ignore_case": True}, "invert_match": True}
    assert matches.method_header_matcher(("GET",)) == {"name": ":method", "string_match": {"exact": "GET"}}
    assert matches.method_header_matcher(("GET", "HEAD"))["string_match"] == {"safe_regex": {"regex": "GET|HEAD"}}
    assert matches.query_matcher(ir.QueryMatch("q", "present", None)) == {"name": "q", "present_match": True}


def test_segment_prefix_in_authorization():
    assert rbac.path_permission(ir.PathMatch("segment_prefix", "/api")) == {"or_rules": {"rules": [
        {"url_path": {"path": {"exact": "/api"}}}, {"url_path": {"path": {"prefix": "/api/"}}}]}}
    assert rbac.path_permission(ir.PathMatch("prefix", "/")) == rbac.ANY


# ---- structure of the output ----------------------------------------------------------------------

def docs(files: dict) -> dict:
    return {k: json.loads(v) for k, v in files.items()}


def hcm_of(listener: dict) -> dict:
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def test_filter_order_is_the_one_declared():
    out = docs(compile_files(["examples/zero-trust.mesh"], ["payments"])[1].files)
    lds = {r["name"]: r for r in out["xds/payments/lds.json"]["resources"]}
    assert [f["name"] for f in hcm_of(lds["inbound"])["http_filters"]] == [
        names.RBAC_DENY_FILTER, names.RBAC_ALLOW_FILTER, names.ROUTER_FILTER]
    assert [f["name"] for f in hcm_of(lds["outbound"])["http_filters"]] == [names.FAULT_FILTER, names.ROUTER_FILTER]
    assert list(listeners.FILTER_ORDER).index(names.ROUTER_FILTER) == len(listeners.FILTER_ORDER) - 1


def test_only_routes_with_a_fault_inject_one():
    out = docs(compile_files(["examples/resilience.mesh"], ["orders"])[1].files)
    fault_filter = hcm_of(out["xds/orders/lds.json"]["resources"][1])["http_filters"][0]
    assert fault_filter["typed_config"] == {"@type": names.FAULT}  # nothing at the filter level
    for vh in out["xds/rds-outbound.json"]["resources"][0]["virtual_hosts"]:
        for r in vh["routes"]:
            has = "typed_per_filter_config" in r
            assert has == (r["name"] == "orders/chaos"), r["name"]
    chaos = next(r for vh in out["xds/rds-outbound.json"]["resources"][0]["virtual_hosts"] for r in vh["routes"]
                 if r["name"] == "orders/chaos")
    assert chaos["typed_per_filter_config"][names.FAULT_FILTER] == {
        "@type": names.FAULT,
        "abort": {"http_status": 503, "percentage": {"denominator": "HUNDRED", "numerator": 10}},
        "delay": {"fixed_delay": "0.300s", "percentage": {"denominator": "HUNDRED", "numerator": 50}},
    }


def test_one_envoy_route_per_match():
    out = docs(compile_files(["examples/shop.mesh"], ["payments"])[1].files)
    vh = next(v for v in out["xds/rds-outbound.json"]["resources"][0]["virtual_hosts"] if v["name"] == "payments")
    assert [r["name"] for r in vh["routes"]] == ["payments/refunds", "payments/charges/1", "payments/charges/2",
                                                  "payments/status"]
    assert vh["domains"] == ["payments", "payments:9000", "payments.shop", "payments.shop:9000"]


def test_normalisation_follows_the_sidecar(tmp_path):
    for setting, action in listeners.ESCAPED_SLASHES.items():
        (tmp_path / "p.mesh").write_text(
            f'service a {{ port 80 endpoints ["127.0.0.1:1"] sidecar {{ escaped_slashes {setting} }} }}\n')
        files = docs(compile_files(["p.mesh"], cwd=str(tmp_path))[1].files)
        for listener in files["xds/a/lds.json"]["resources"]:
            hcm = hcm_of(listener)
            assert (hcm["normalize_path"], hcm["merge_slashes"], hcm["path_with_escaped_slashes_action"]) == \
                (True, True, action)


def test_authorization_filters(tmp_path):
    def filters(authz):
        (tmp_path / "p.mesh").write_text('service a { port 80 endpoints ["127.0.0.1:1"] }\n' + authz)
        files = docs(compile_files(["p.mesh"], cwd=str(tmp_path))[1].files)
        inbound = files["xds/a/lds.json"]["resources"][0]
        return [(f["name"], f["typed_config"]["rules"]["action"], sorted(f["typed_config"]["rules"]["policies"]))
                for f in hcm_of(inbound)["http_filters"] if f["name"] != names.ROUTER_FILTER]

    assert filters("") == []  # no authorization block: allow everything, no filter at all
    assert filters("authorization a { default deny }") == [(names.RBAC_ALLOW_FILTER, "ALLOW", [])]
    assert filters('authorization a { default allow  deny d { path exact "/x" } }') == \
        [(names.RBAC_DENY_FILTER, "DENY", ["d"])]
    assert filters('authorization a { default deny  deny d { path exact "/x" }  allow g { method GET } }') == \
        [(names.RBAC_DENY_FILTER, "DENY", ["d"]), (names.RBAC_ALLOW_FILTER, "ALLOW", ["g"])]


def test_clusters(tmp_path):
    (tmp_path / "p.mesh").write_text(
        'service a { port 80  endpoints ["shipping.example:443", "10.0.0.1:80"]\n'
        '  limits { connections 5 pending 6 requests 7 retries 8 }\n'
        '  outlier { consecutive_5xx 3 consecutive_gateway_errors 2 interval 5s ejection 20s max_ejected 34% }\n'
        '  retry_budget { percent 12.5% min_concurrency 2 }\n'
        '  sidecar { app "[::1]:9000" } }\n')
    files = docs(compile_files(["p.mesh"], cwd=str(tmp_path))[1].files)
    clusters = {c["name"]: c for c in files["xds/cds.json"]["resources"]}
    out = clusters["outbound|default|a"]
    assert (out["type"], out["dns_lookup_family"]) == ("STRICT_DNS", "V4_PREFERRED")
    assert out["circuit_breakers"]["thresholds"] == [{
        "max_connections": 5, "max_pending_requests": 6, "max_requests": 7, "max_retries": 8, "priority": "DEFAULT",
        "retry_budget": {"budget_percent": {"value": 12.5}, "min_retry_concurrency": 2}, "track_remaining": True}]
    assert out["outlier_detection"] == {
        "base_ejection_time": "20s", "consecutive_5xx": 3, "consecutive_gateway_failure": 2,
        "enforcing_consecutive_5xx": 100, "enforcing_consecutive_gateway_failure": 100, "interval": "5s",
        "max_ejection_percent": 34, "enforcing_success_rate": 0}
    inbound = clusters["inbound|a"]
    assert inbound["type"] == "STATIC"
    assert inbound["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == \
        {"socket_address": {"address": "::1", "port_value": 9000}}


def test_bootstrap_modes(tmp_path):
    (tmp_path / "p.mesh").write_text('service a { port 80 endpoints ["127.0.0.1:1"] }\n'
                                     'service b { port 80 endpoints ["127.0.0.1:2"] }\n')
    def mode(proxies, bootstrap=None):
        files = docs(compile_files(["p.mesh"], proxies, bootstrap=bootstrap, cwd=str(tmp_path))[1].files)
        return sorted({("dynamic" if "dynamic_resources" in d else "static") for k, d in files.items()
                       if k.endswith(".envoy.json")})
    assert mode(None) == ["dynamic"]            # --proxy all: the fleet layout
    assert mode(["a"]) == ["static"]            # named proxies: self-contained
    assert mode(["a", "b"]) == ["dynamic"]      # every service named is the same as `all`
    assert mode(None, "static") == ["static"]
    assert mode(["a"], "xds") == ["dynamic"]


def test_xds_paths_are_absolute(tmp_path):
    program = compile_files(["examples/canary.mesh"], ["recommendations"])[0].ir
    opts = Options(bootstrap="xds", output_dir=str(tmp_path))
    boot = json.loads(backend.emit(program, ["recommendations"], opts, {}).files["recommendations.envoy.json"])
    assert boot["dynamic_resources"]["lds_config"]["path_config_source"]["path"] == \
        f"{tmp_path}/xds/recommendations/lds.json"


def test_version_info_is_a_content_hash():
    a = compile_files(["examples/shop.mesh"])[1].files
    b = compile_files(["examples/canary.mesh"])[1].files
    va, vb = (json.loads(f["xds/cds.json"])["version_info"] for f in (a, b))
    assert va != vb and len(va) == 16
    assert json.loads(compile_files(["examples/shop.mesh"])[1].files["xds/cds.json"])["version_info"] == va


# ---- import discipline --------------------------------------------------------------------------------

def test_backend_imports_only_the_ir_and_the_plumbing():
    allowed = {"compiler", "compiler.ir", "compiler.backends", "compiler.backends.located"}
    for path in python_files(os.path.join("compiler", "backends", "envoy")):
        mods = imported_modules(path)
        bad = {m for m in mods if m.startswith("compiler") and m not in allowed
               and not m.startswith("compiler.backends.envoy")}
        assert not bad, f"{path} imports {bad}"
        assert not {m for m in mods if m.startswith("envoy_data_plane")}, f"{path} imports envoy_data_plane"


@pytest.mark.parametrize("argv", [["check", "examples/shop.mesh"], ["compile", "examples/shop.mesh", "--emit", "ir"]])
def test_check_and_ir_compile_do_not_load_the_backend(argv):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "compiler", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "compiler.backends" not in proc.stderr


@pytest.mark.parametrize("resources", [
    [], [{"name": "a"}], [{"name": "line\nbreak", "x": [1, {"y": "tab\t"}], "@weird": None}],
])
def test_discovery_response_is_the_plain_serialisation(resources):
    from compiler.backends.envoy import bootstrap

    dumps = backend._dumps()
    fast = bootstrap.discovery_response(names.CLUSTER, resources, dumps)
    assert fast == bootstrap.discovery_response_reference(names.CLUSTER, resources, dumps)
    assert json.loads(fast)["resources"] == [{"@type": names.CLUSTER, **r} for r in resources]


def test_discovery_response_on_a_whole_example():
    from compiler.backends.envoy import bootstrap, routes as r

    program = compile_files(["examples/shop.mesh"])[0].ir
    dumps = backend._dumps()
    config = [r.outbound_route_configuration(program)]
    assert bootstrap.discovery_response(names.ROUTE_CONFIGURATION, config, dumps) == \
        bootstrap.discovery_response_reference(names.ROUTE_CONFIGURATION, config, dumps)
