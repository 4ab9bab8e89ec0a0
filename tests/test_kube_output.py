"""The shared Kubernetes output (compiler/backends/kube/): name rules, deterministic YAML, the file
layout, and `meshc compile --target istio`'s command-line conventions."""

from __future__ import annotations

import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import api
from compiler.backends import kube
from compiler.backends.kube.objects import load
from tests.test_explain import run_cli


@pytest.mark.parametrize("name", ["a", "reviews", "v1", "a-b-c", "x" * 63, "0abc"])
def test_dns_labels_kubernetes_accepts(name):
    assert kube.is_dns_label(name)


@pytest.mark.parametrize("name", ["", "A", "a_b", "-a", "a-", "x" * 64, "a.b", "é"])
def test_dns_labels_kubernetes_rejects(name):
    assert not kube.is_dns_label(name)


def test_dns_1035_labels_start_with_a_letter():
    assert kube.is_dns_label("0abc") and not kube.is_dns_label("0abc", rfc1035=True)
    assert kube.is_dns_label("abc0", rfc1035=True)


def test_dns_subdomains():
    assert kube.is_dns_subdomain("a.b-c.d") and kube.is_dns_subdomain("x" * 63 + "." + "y" * 63)
    assert not kube.is_dns_subdomain("a..b") and not kube.is_dns_subdomain("A.b")
    assert not kube.is_dns_subdomain(".".join(["x" * 63] * 4) + ".x")   # 257 characters


@pytest.mark.parametrize("key,ok", [("version", True), ("app.kubernetes.io/name", True), ("a_b.c-d", True),
                                    ("Version", True), ("/x", False), ("Bad.Prefix/x", False), ("x" * 64, False),
                                    ("-x", False), ("", False), ("a b", False)])
def test_label_keys(key, ok):
    assert (kube.check_label_key(key) is None) == ok


@pytest.mark.parametrize("value,ok", [("", True), ("v1", True), ("v1.2_x-y", True), ("-v1", False),
                                      ("x" * 64, False), ("a/b", False)])
def test_label_values(value, ok):
    assert (kube.check_label_value(value) is None) == ok


def _obj(name: str, kind: str = "VirtualService", service: str | None = "reviews", **body) -> kube.KubeObject:
    return kube.KubeObject("networking.istio.io/v1", kind, name, "default", body or {"spec": {"b": 1, "a": [2, 1]}},
                           "shop.mesh:3:1", service)


def test_render_orders_keys_and_keeps_lists():
    text = kube.render([_obj("reviews", spec={"z": {"y": 1, "x": 2}, "a": ["z", "a"]})]).decode()
    assert text == ("---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n"
                    "  namespace: default\n  annotations:\n    meshc.dev/source: shop.mesh:3:1\n"
                    "spec:\n  a:\n  - z\n  - a\n  z:\n    x: 2\n    y: 1\n")


def test_render_quotes_what_yaml_would_read_as_another_type():
    docs = load(kube.render([_obj("r", spec={"values": ["yes", "1.0", "null", "0x1F", "*", "on", "~"]})]))
    assert docs[0]["spec"]["values"] == ["yes", "1.0", "null", "0x1F", "*", "on", "~"]


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.one_of(st.text(max_size=8), st.integers(),
                                                                    st.booleans(), st.lists(st.text(max_size=4))),
                       max_size=6))
def test_render_round_trips_and_is_independent_of_insertion_order(spec):
    a = kube.render([_obj("r", spec=spec)])
    b = kube.render([_obj("r", spec=dict(reversed(list(spec.items()))))])
    assert a == b
    assert load(a)[0]["spec"] == spec


@given(st.dictionaries(st.from_regex(r"[a-z0-9][-a-z0-9_./]{0,10}", fullmatch=True),
                       st.one_of(st.text(max_size=12), st.integers(), st.floats(allow_nan=False), st.booleans(),
                                 st.lists(st.text(max_size=5))), max_size=6))
def test_libyaml_and_python_emitters_write_the_same_bytes(spec):
    # keys as the objects have them (field, header and label names); any value. (With a key such as
    # "\r" the two emitters choose different, equivalent YAML forms.)
    obj = [_obj("r", spec=spec)]
    assert kube.render(obj, native=True) == kube.render(obj, native=False)


def test_libyaml_and_python_emitters_agree_on_the_examples(monkeypatch):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.chdir(root)
    comp = api.compile(["examples/shop.mesh", "examples/canary.mesh", "examples/resilience.mesh"])
    from compiler.backends.istio.build import IstioTarget

    objects, _ = IstioTarget().build(comp.ir, comp.sources)
    assert kube.render(objects, native=True) == kube.render(objects, native=False)


def test_layout_one_file_per_service_kinds_in_order():
    files = kube.layout([_obj("b", "Sidecar"), _obj("a", "VirtualService"), _obj("a", "DestinationRule"),
                         _obj("m", "PeerAuthentication", service=None), _obj("x", service="details")],
                        ("DestinationRule", "VirtualService", "Sidecar"))
    assert list(files) == ["default/_mesh.yaml", "default/details.yaml", "default/reviews.yaml"]
    assert [d["kind"] for d in load(files["default/reviews.yaml"])] == ["DestinationRule", "VirtualService",
                                                                       "Sidecar"]


BAD_NAMES = """\
service Pay_API {
  port 9000
  namespace "team-a"
  endpoints ["10.0.0.1:9000"]
  subset V2 { endpoints ["10.0.0.2:9000"] }
}
routes Pay_API { route r { to Pay_API.V2 } }
service ok-name {
  port 9000
  namespace "team-a"
  endpoints ["10.0.0.3:9000"]
}
"""


def test_names_kubernetes_rejects_are_located_errors(tmp_path):
    path = tmp_path / "bad.mesh"
    path.write_text(BAD_NAMES)
    comp = api.compile([str(path)])
    assert not comp.has_errors          # meshc itself accepts them (the Envoy and native targets do)
    emitted = comp.emit("istio")
    found = [(d.code, d.span.start_line_col()[0] if d.span else None, d.message.split("`")[1])
             for d in emitted.diagnostics]
    assert found == [("E0901", 1, "Pay_API"), ("E0901", 5, "V2")]
    assert emitted.files == {}


def test_compile_target_istio_with_a_bad_name_writes_nothing(tmp_path):
    path = tmp_path / "bad.mesh"
    path.write_text(BAD_NAMES)
    out = tmp_path / "out"
    code, _, stderr = run_cli(["compile", "--target", "istio", "-o", str(out), str(path)])
    assert code == 1 and "E0901" in stderr and not out.exists()


def test_compile_target_istio_refuses_sidecar_options(tmp_path):
    path = tmp_path / "ok.mesh"
    path.write_text(BAD_NAMES.replace("Pay_API", "pay").replace("V2", "v2"))
    code, _, stderr = run_cli(["compile", "--target", "istio", "--proxy", "all", str(path)])
    assert code == 2 and "--proxy" in stderr


def test_compile_target_istio_writes_atomically_and_prints_the_same_documents(tmp_path):
    path = tmp_path / "ok.mesh"
    path.write_text(BAD_NAMES.replace("Pay_API", "pay").replace("V2", "v2"))
    out = tmp_path / "out"
    code, _, stderr = run_cli(["compile", "--target", "istio", "-o", str(out), str(path)])
    assert code == 0, stderr
    written = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs
                     if f != ".meshc-manifest")   # (what meshc wrote there: tests/test_stale_outputs.py)
    assert written == ["team-a/ok-name.yaml", "team-a/pay.yaml"]
    code, stdout, _ = run_cli(["compile", "--target", "istio", str(path)])
    assert code == 0
    joined = "".join((out / p).read_text() for p in written)
    assert stdout == joined and list(yaml.safe_load_all(stdout))


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,70}", fullmatch=True),
                 st.from_regex(r"[a-z][a-z0-9-]{0,66}", fullmatch=True)))
def test_a_name_is_refused_exactly_when_kubernetes_would_refuse_it(tmp_path_factory, name):
    """E0901 iff the name is not a DNS-1035 label; an accepted name passes the API server's own
    checks of the objects (compiler/kubeschema: metadata names, hosts)."""
    path = tmp_path_factory.mktemp("names") / "n.mesh"
    path.write_text(f'service {name} {{\n  port 80\n  endpoints ["10.0.0.1:80"]\n}}\n')
    comp = api.compile([str(path)])
    if comp.has_errors:   # meshc's own limit (E0210) or a keyword as a service name
        return
    emitted = comp.emit("istio")
    refused = [d.code for d in emitted.diagnostics if d.severity == "error"]
    assert refused == ([] if kube.is_dns_label(name, rfc1035=True) else ["E0901"]), refused
    assert bool(emitted.files) == (not refused)
