"""Label-selected subsets (`subset v1 { labels { version "v1" } }`, docs/language.md §5.3) through
every layer: the checks, the IR, the formatter, the language server, and each target (Istio writes
the labels; Envoy and native refuse them with E0750)."""

from __future__ import annotations

from pathlib import Path

from compiler import api, ir
from compiler.backends.kube.objects import load
from compiler.ir.serialize import from_data, to_data
from compiler.kubeschema import validate
from compiler.syntax.fmt import format_text
from compiler.tooling.lsp.analysis import analyse_document, complete, hover

BOOKINFO = """\
service reviews {
  port 9080
  namespace "bookinfo"
  subset v1 { labels { version "v1" } }
  subset v2 { labels { version "v2"  "app.kubernetes.io/part-of" "bookinfo" } }
}

service productpage {
  port 9080
  namespace "bookinfo"
  endpoints ["10.0.0.9:9080"]
}

routes reviews {
  route jason { match { header "end-user" exact "jason" } to reviews.v2 }
  route rest { split { reviews.v1 90  reviews.v2 10 } }
}
"""


def compile_text(text: str, tmp_path: Path):
    path = tmp_path / "bookinfo.mesh"
    path.write_text(text)
    return api.compile([str(path)])


def test_the_ir_carries_the_labels_sorted_and_no_endpoints(tmp_path):
    comp = compile_text(BOOKINFO, tmp_path)
    assert not comp.diagnostics
    reviews = comp.ir.service("reviews")
    v1, v2 = reviews.subsets
    assert (v1.labels, v1.endpoints, v1.discovery) == ((("version", "v1"),), (), "labels")
    assert v2.labels == (("app.kubernetes.io/part-of", "bookinfo"), ("version", "v2"))
    assert comp.ir.service("productpage").subsets[0].labels == ()
    # the IR document and back (a sharded compile sends services as JSON)
    assert from_data(ir.Service, to_data(reviews)) == reviews


def test_istio_selects_the_pods_by_their_labels(tmp_path):
    emitted = compile_text(BOOKINFO, tmp_path).emit("istio")
    assert not emitted.diagnostics
    docs = load(emitted.files["bookinfo/reviews.yaml"])
    assert [d["kind"] for d in docs] == ["DestinationRule", "VirtualService", "PeerAuthentication", "Sidecar",
                                         "EnvoyFilter"]   # no ServiceEntry: the Kubernetes Service is the team's
    assert docs[0]["spec"]["subsets"] == [
        {"name": "v1", "labels": {"version": "v1"}},
        {"name": "v2", "labels": {"app.kubernetes.io/part-of": "bookinfo", "version": "v2"}}]
    entry = load(emitted.files["bookinfo/productpage.yaml"])[0]
    assert entry["kind"] == "ServiceEntry" and entry["spec"]["endpoints"][0]["labels"]["meshc.dev/subset"] == "default"
    report = validate([d for data in emitted.files.values() for d in load(data)])
    assert report.ok, [str(p) for p in report.problems]


def test_envoy_and_native_refuse_a_label_selected_subset_at_its_line(tmp_path):
    comp = compile_text(BOOKINFO, tmp_path)
    for target in ("envoy", "native"):
        emitted = comp.emit(target)
        assert [(d.code, d.span.start_line_col()[0]) for d in emitted.diagnostics] == [("E0750", 4), ("E0750", 5)]
        assert emitted.has_errors and emitted.files == {}


def test_a_program_without_label_subsets_is_unchanged_for_envoy(tmp_path):
    comp = compile_text(BOOKINFO.replace('labels { version "v1" }', 'endpoints ["10.0.0.1:9080"]').replace(
        'labels { version "v2"  "app.kubernetes.io/part-of" "bookinfo" }', 'endpoints ["10.0.0.2:9080"]'), tmp_path)
    assert not comp.emit("envoy").diagnostics and not comp.emit("native").diagnostics


def test_mixing_both_kinds_in_one_service_is_e0909_for_istio(tmp_path):
    comp = compile_text(BOOKINFO.replace('subset v1 { labels { version "v1" } }',
                                         'subset v1 { endpoints ["10.0.0.1:9080"] }'), tmp_path)
    assert not comp.has_errors
    emitted = comp.emit("istio")
    assert [d.code for d in emitted.diagnostics] == ["E0909"] and emitted.files == {}


def test_the_formatter_keeps_label_subsets(tmp_path):
    messy = BOOKINFO.replace('subset v1 { labels { version "v1" } }',
                             'subset   v1 {labels{version   "v1"}}   # the stable pods')
    out = format_text(messy)
    assert 'subset v1 { labels { version "v1" } }  # the stable pods' in out
    assert 'labels { "app.kubernetes.io/part-of" "bookinfo"  version "v2" }' in out or \
        'labels { version "v2"  "app.kubernetes.io/part-of" "bookinfo" }' in out
    assert format_text(out) == out


def test_the_language_server_documents_and_completes_labels(tmp_path):
    path = tmp_path / "bookinfo.mesh"
    path.write_text(BOOKINFO)
    analysis = analyse_document(path.as_uri(), BOOKINFO)
    doc = hover(analysis, BOOKINFO.index("labels") + 2)
    assert doc is not None and "label-selected subset" in doc and "E0750" in doc
    _, items = complete(analysis, BOOKINFO, BOOKINFO.index("labels"))
    assert "labels" in [c.label for c in items]
