"""Unit tests of the Envoy backend's lowering rules, on the IR and on small policies."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from compiler import api, ir
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
    (0.01, (1, "TEN_THOUSAND")), (0.0001, (1, "MILLION")), (33.3333, (333333, "MILLION")),
    (99.99, (9999, "TEN_THOUSAND")),
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


def test_every_retry_condition_of_the_language_is_an_envoy_token():
    from compiler.language.retry import RETRY_CONDITIONS

    assert tuple(RETRY_CONDITIONS) == ir.RETRY_ON
    assert set(ir.RETRY_ON) <= routes.ENVOY_RETRY_ON


# ---- matches ------------------------------------------------------------------------------------

def test_path_kinds():
    def m(kind, value):
        return matches.route_match(ir.Match(ir.PathMatch(kind, value), (), (), None))

    assert m("exact", "/a") == {"path": "/a"}
    assert m("prefix", "/a/") == {"prefix": "/a/"}
    assert m("segment_prefix", "/a") == {"path_separated_prefix": "/a"}
    assert m("regex", "/a/[0-9]+") == {"safe_regex": {"regex": "/a/[0-9]+"}}
    assert matches.route_match(ir.Match(None, (), (), None)) == {"prefix": "/"}


def test_ignore_case_paths():
    def m(kind, value):
        return matches.route_match(ir.Match(ir.PathMatch(kind, value, True), (), (), None))

    assert m("exact", "/a") == {"path": "/a", "case_sensitive": False}
    assert m("prefix", "/a/") == {"prefix": "/a/", "case_sensitive": False}
    assert m("segment_prefix", "/a") == {"path_separated_prefix": "/a", "case_sensitive": False}
    assert rbac.path_permission(ir.PathMatch("segment_prefix", "/api", True)) == {"or_rules": {"rules": [
        {"url_path": {"path": {"exact": "/api", "ignore_case": True}}},
        {"url_path": {"path": {"prefix": "/api/", "ignore_case": True}}}]}}
    assert rbac.path_permission(ir.PathMatch("exact", "/k", True)) == \
        {"url_path": {"path": {"exact": "/k", "ignore_case": True}}}
    assert rbac.path_permission(ir.PathMatch("prefix", "/", True)) == rbac.ANY


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
    out = docs(compile_files(["examples/envoy-native/game-day.mesh"], ["orders"])[1].files)
    fault_filter = hcm_of(out["xds/orders/lds.json"]["resources"][1])["http_filters"][0]
    assert fault_filter["typed_config"] == {"@type": names.FAULT}  # nothing at the filter level
    for vh in out["xds/rds-outbound.json"]["resources"][0]["virtual_hosts"]:
        for r in vh["routes"]:
            has = "typed_per_filter_config" in r
            assert has == (r["name"] == "orders-gameday/chaos"), r["name"]
    chaos = next(r for vh in out["xds/rds-outbound.json"]["resources"][0]["virtual_hosts"] for r in vh["routes"]
                 if r["name"] == "orders-gameday/chaos")
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
    assert vh["domains"] == ["payments", "payments:9000", "payments.shop", "payments.shop:9000", "payments.shop.svc",
                             "payments.shop.svc:9000", "payments.shop.svc.cluster.local",
                             "payments.shop.svc.cluster.local:9000"]


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


def test_version_info_is_a_content_hash(tmp_path):
    def version(port):
        (tmp_path / "p.mesh").write_text(f'service a {{ port {port} endpoints ["127.0.0.1:1"] }}\n')
        return json.loads(compile_files(["p.mesh"], cwd=str(tmp_path))[1].files["xds/cds.json"])["version_info"]

    va, vb = version(80), version(81)
    assert va != vb and len(va) == 16
    assert version(80) == va


# ---- mutual TLS ----------------------------------------------------------------------------------

MTLS_POLICY = """
mesh { trust_domain "shop.local"  mtls strict  certificates "/run/meshc/ids" }
service web { port 80  endpoints ["127.0.0.1:1"] }
service pay { port 81  namespace "money"  mtls permissive
  subset v1 { endpoints ["127.0.0.1:2"] }  subset v2 { endpoints ["127.0.0.1:3"] } }
service old { port 82  endpoints ["127.0.0.1:4"]  mtls disable }
routes pay { route all { to pay.v1 } }
authorization pay { default deny  allow web { from service web }  allow health { path exact "/health" } }
"""


def mtls_files(tmp_path, text=MTLS_POLICY, proxies=None, **options) -> dict:
    (tmp_path / "p.mesh").write_text(text)
    with contextlib.chdir(tmp_path):
        result = api.compile(["p.mesh"])
        assert not result.has_errors, [d.message for d in result.diagnostics]
        names_ = proxies or [s.name for s in result.ir.services]
        emitted = backend.emit(result.ir, names_, Options(**{"xds_dir": "/x", **options}), {})
    return docs(emitted.files)


def test_inbound_listener_per_mode(tmp_path):
    files = mtls_files(tmp_path)
    inbound = {svc: files[f"xds/{svc}/lds.json"]["resources"][0] for svc in ("web", "pay", "old")}
    plain = inbound["old"]  # disable: as without mTLS, one plaintext chain, no XFCC
    assert "listener_filters" not in plain and len(plain["filter_chains"]) == 1
    assert "transport_socket" not in plain["filter_chains"][0]
    assert "forward_client_cert_details" not in hcm_of(plain)

    strict = inbound["web"]
    (chain,) = strict["filter_chains"]
    assert "listener_filters" not in strict and "filter_chain_match" not in chain
    tls_ctx = chain["transport_socket"]["typed_config"]
    assert tls_ctx["@type"] == names.DOWNSTREAM_TLS and tls_ctx["require_client_certificate"] is True
    assert tls_ctx["common_tls_context"]["tls_certificate_sds_secret_configs"] == [
        {"name": "identity", "sds_config": {"path_config_source": {"path": "/x/web/sds-identity.json"},
                                            "resource_api_version": "V3"}}]
    assert tls_ctx["common_tls_context"]["validation_context_sds_secret_config"]["sds_config"][
        "path_config_source"]["path"] == "/x/web/sds-mesh_ca.json"
    hcm = hcm_of(strict)
    assert (hcm["forward_client_cert_details"], hcm["set_current_client_cert_details"]) == \
        ("SANITIZE_SET", {"uri": True})

    permissive = inbound["pay"]
    assert permissive["listener_filters"] == [{"name": "envoy.filters.listener.tls_inspector",
                                               "typed_config": {"@type": names.TLS_INSPECTOR}}]
    tls_chain, plain_chain = permissive["filter_chains"]
    assert tls_chain["filter_chain_match"] == {"transport_protocol": "tls"} and "transport_socket" in tls_chain
    assert "filter_chain_match" not in plain_chain and "transport_socket" not in plain_chain
    tls_hcm, plain_hcm = (c["filters"][0]["typed_config"] for c in (tls_chain, plain_chain))
    assert tls_hcm["forward_client_cert_details"] == "SANITIZE_SET" and "forward_client_cert_details" not in plain_hcm
    # The same authorization on both chains: identity rules simply never match a plaintext peer.
    assert tls_hcm["http_filters"] == plain_hcm["http_filters"]
    rules = tls_hcm["http_filters"][0]["typed_config"]["rules"]["policies"]
    assert rules["web"]["principals"] == [
        {"authenticated": {"principal_name": {"exact": "spiffe://shop.local/ns/default/sa/web"}}}]
    assert {k: v for k, v in tls_hcm.items() if "client_cert" not in k} == plain_hcm


def test_outbound_clusters_use_mtls_towards_destinations_that_accept_it(tmp_path):
    files = mtls_files(tmp_path)
    assert "xds/cds.json" not in files  # each sidecar's clusters name its own certificate
    clusters = {c["name"]: c for c in files["xds/web/cds.json"]["resources"]}
    for subset in ("v1", "v2"):  # permissive accepts mTLS, so callers use it
        socket = clusters[f"outbound|{subset}|pay"]["transport_socket"]
        assert socket["name"] == "envoy.transport_sockets.tls"
        ctx = socket["typed_config"]
        assert ctx["@type"] == names.UPSTREAM_TLS and ctx["sni"] == "pay.money"
        common = ctx["common_tls_context"]
        assert common["tls_params"] == {"tls_minimum_protocol_version": "TLSv1_2",
                                        "tls_maximum_protocol_version": "TLSv1_3"}
        assert common["tls_certificate_sds_secret_configs"][0]["sds_config"]["path_config_source"]["path"] == \
            "/x/web/sds-identity.json"
        validation = common["combined_validation_context"]
        assert validation["default_validation_context"] == {"match_typed_subject_alt_names": [
            {"san_type": "URI", "matcher": {"exact": "spiffe://shop.local/ns/money/sa/pay"}}]}
        assert validation["validation_context_sds_secret_config"]["sds_config"]["path_config_source"]["path"] == \
            "/x/web/sds-mesh_ca.json"
    assert "transport_socket" in clusters["outbound|default|web"]
    assert "transport_socket" not in clusters["outbound|default|old"]  # disable: plaintext
    assert not any("transport_socket" in c for n, c in clusters.items() if n.startswith("inbound|"))
    # Another sidecar's clusters differ only in whose secrets they name, and in its own application's
    # cluster (the last one: a sidecar's CDS holds its own, not every service's).
    other = files["xds/old/cds.json"]["resources"]
    assert [c["name"] for c in other][-1] == "inbound|old" and "inbound|web" not in [c["name"] for c in other]
    web = files["xds/web/cds.json"]["resources"]
    assert json.dumps(other[:-1]).replace("/x/old/", "/x/web/") == json.dumps(web[:-1])
    assert files["web.envoy.json"]["dynamic_resources"]["cds_config"]["path_config_source"]["path"] == "/x/web/cds.json"


def test_secrets_name_the_identity_directory(tmp_path):
    files = mtls_files(tmp_path)
    for svc in ("web", "pay", "old"):  # `old` accepts no mTLS, but calls services that do
        ident, ca = (files[f"xds/{svc}/sds-{name}.json"]["resources"] for name in ("identity", "mesh_ca"))
        d = f"/run/meshc/ids/{svc}"
        assert ident == [{"@type": names.SECRET, "name": "identity", "tls_certificate": {
            "certificate_chain": {"filename": f"{d}/cert.pem"}, "private_key": {"filename": f"{d}/key.pem"},
            "watched_directory": {"path": d}}}]
        assert ca == [{"@type": names.SECRET, "name": "mesh_ca", "validation_context": {
            "trusted_ca": {"filename": f"{d}/ca.pem"}, "watched_directory": {"path": d}}}]
    overridden = mtls_files(tmp_path, certs_dir="/certs/")
    assert overridden["xds/pay/sds-identity.json"]["resources"][0]["tls_certificate"]["watched_directory"] == \
        {"path": "/certs/pay"}


def test_static_bootstrap_names_the_same_secrets(tmp_path):
    fleet = mtls_files(tmp_path)
    static = mtls_files(tmp_path, proxies=["pay"], bootstrap="static")
    boot = static["pay.envoy.json"]["static_resources"]
    assert boot["listeners"][0] == {k: v for k, v in fleet["xds/pay/lds.json"]["resources"][0].items() if k != "@type"}
    shared = {c["name"]: c for c in fleet["xds/pay/cds.json"]["resources"]}
    for c in boot["clusters"]:
        assert c == {k: v for k, v in shared[c["name"]].items() if k != "@type"}
    assert sorted(k for k in static if "/sds-" in k) == ["xds/pay/sds-identity.json", "xds/pay/sds-mesh_ca.json"]


def test_without_mtls_nothing_changes(tmp_path):
    text = MTLS_POLICY.replace("mtls strict", "mtls disable").replace("mtls permissive", "")
    files = mtls_files(tmp_path, text)
    assert not [k for k in files if "/sds-" in k or (k.endswith("/cds.json") and k != "xds/cds.json")]
    assert "xds/cds.json" in files
    assert "TlsContext" not in json.dumps(files) and "client_cert" not in json.dumps(files)


def test_secret_files_come_before_what_names_them(tmp_path):
    (tmp_path / "p.mesh").write_text(MTLS_POLICY)
    keys = list(compile_files(["p.mesh"], cwd=str(tmp_path))[1].files)
    first_other = next(i for i, k in enumerate(keys) if "/sds-" not in k)
    assert all("/sds-" in k for k in keys[:first_other]) and not any("/sds-" in k for k in keys[first_other:])


# ---- import discipline --------------------------------------------------------------------------------

def test_backend_imports_only_the_ir_and_the_plumbing():
    allowed = {"compiler", "compiler.ir", "compiler.ir.scope",  # the IR and its scoping derivation
               "compiler.ir.workloads",  # and its proxies (a workload's own sidecar)
               "compiler.ir.names",  # and the names a sidecar sees (a short name in its namespace)
               "compiler.backends", "compiler.backends.base", "compiler.backends.located",
               "compiler.core.diagnostics", "compiler.core.source"}
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
    from compiler.backends.envoy import bootstrap
    from compiler.backends.envoy import routes as r

    program = compile_files(["examples/shop.mesh"])[0].ir
    dumps = backend._dumps()
    config = [r.outbound_route_configuration(program)]
    assert bootstrap.discovery_response(names.ROUTE_CONFIGURATION, config, dumps) == \
        bootstrap.discovery_response_reference(names.ROUTE_CONFIGURATION, config, dumps)
