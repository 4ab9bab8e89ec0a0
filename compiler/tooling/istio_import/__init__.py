"""`meshc import istio`: Istio and Kubernetes YAML in, formatted `.mesh` files out.

A tooling module (docs/architecture.md): it reads YAML safely and with locations
(yaml_source.py), translates the objects with Istio's semantics (translate.py, nodes.py, and the
fields of the real CRDs in fields.py), renders `.mesh` text, checks it through the compile API
(an error there is reported at the YAML it came from, E1010) and formats it with `meshc fmt`'s
formatter. Nothing is written here: the CLI (compiler/cli/import_.py) writes the files, all or
none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.core.diagnostics import Collector, Diagnostic


@dataclass
class Imported:
    files: dict[str, str] = field(default_factory=dict)   # file name -> formatted .mesh text
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)


def import_istio(paths: list[str], texts: dict[str, str] | None = None, out_dir: str = ".",
                 trust_domain: str = "cluster.local") -> Imported:
    """Translate the YAML files `paths` (their text from `texts` when given there). `trust_domain`
    is the mesh's (Istio's MeshConfig `trustDomain`, which no object carries)."""
    from compiler.tooling.istio_import.translate import Importer

    imp = Importer()
    imp.trust_domain = trust_domain
    for path in paths:
        imp.read(path, (texts or {}).get(path))
    if not imp.diags.has_errors:
        imp.translate()
    result = Imported()
    if imp.diags.has_errors:
        result.diagnostics = imp.diags.sorted()
        return result
    lines = imp.render()
    if imp.diags.has_errors:
        result.diagnostics = imp.diags.sorted()
        return result
    _check(lines, imp.diags, out_dir)
    if not imp.diags.has_errors:
        from compiler.syntax.fmt import format_text

        for name, file_lines in lines.items():
            result.files[name] = format_text(_text(file_lines), name)
    result.diagnostics = imp.diags.sorted()
    if result.has_errors:
        result.files = {}
    return result


def _text(lines) -> str:
    return "\n".join(text for text, _ in lines).lstrip("\n") + "\n"


def _check(files, diags: Collector, out_dir: str) -> None:
    """The generated program through `meshc check`; each error at the YAML its line came from."""
    import os

    from compiler import api

    texts = []
    by_path = {}
    for name, lines in files.items():
        path = os.path.join(out_dir, name)
        text = _text(lines)
        skipped = len(lines) - len(text.split("\n")) + 1   # the blank lines stripped at the top
        by_path[path] = [span for _, span in lines[skipped:]]
        texts.append(api.Text(path, text))
    comp = api.check(texts)
    for d in comp.diagnostics:
        if d.severity != "error":
            continue   # meshc's own warnings: `meshc lint` on the imported files shows them
        span = None
        if d.span is not None and d.span.path in by_path:
            line = d.span.start_line_col()[0]
            spans = by_path[d.span.path]
            span = next((s for s in reversed(spans[:line]) if s is not None), None)
        where = f" ({d.span.path}:{':'.join(map(str, d.span.start_line_col()))}: `{d.span.text()}`)" \
            if d.span is not None else ""
        diags.add("E1010", f"the imported policy is not valid meshc: {d.message} [{d.code}]", span,
                  (d.hint or "") + where, path=None if span is not None else d.file)
