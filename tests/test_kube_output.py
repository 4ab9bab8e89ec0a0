"""The shared Kubernetes output (compiler/backends/kube/): name rules, deterministic YAML, the file
layout, and `meshc compile --target istio`'s command-line conventions."""

from __future__ import annotations

import os

import pytest
import yaml
from hypothesis import given
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
    written = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
    assert written == ["team-a/ok-name.yaml", "team-a/pay.yaml"]
    code, stdout, _ = run_cli(["compile", "--target", "istio", str(path)])
    assert code == 0
    joined = "".join((out / p).read_text() for p in written)
    assert stdout == joined and list(yaml.safe_load_all(stdout))
