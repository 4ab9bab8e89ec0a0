"""The construct × target table of docs/kubernetes.md (issue 17) is complete and tested.

- Every row names its construct's language section, a class for each target, and references: an
  Istio (or Kubernetes) URL where Istio carries the construct, a Gateway API URL where Gateway API
  does.
- A row whose class is not exact names a diagnostic code, or says "not reported" (a known gap,
  listed under the table).
- Every code the table names exists and is shown by a test: the bad example of `meshc explain
  CODE`, which tests/test_explain.py compiles through the target and checks it reports the code,
  or, for the codes without a bad example, a test that names the code.
- Every E09xx/W09xx code of the Kubernetes targets (compiler/core/codes.py) is in the table.
"""

from __future__ import annotations

import re
from pathlib import Path

from compiler.core.codes import CODES
from tests.test_explain import NO_BAD_EXAMPLE

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "kubernetes.md"
HEADING = "### Every construct × target"
CODE = re.compile(r"\b[EW]\d{4}\b")
CLASSES = ("exact", "approx.", "impossible", "not carried", "n/a")


def rows() -> list[dict[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    assert HEADING in text, f"{DOC} has no section `{HEADING}`"
    lines = text[text.index(HEADING):].splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("| meshc construct"))
    header = [c.strip() for c in lines[start].strip("|").split(" | ")]
    out = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().removeprefix("|").removesuffix("|").split(" | ")]
        assert len(cells) == len(header), line
        out.append(dict(zip(header, cells)))
    return out


def test_every_row_is_classified_coded_and_cited():
    table = rows()
    assert len(table) >= 60
    for row in table:
        name = row["meshc construct"]
        assert row["§"], name
        for target, site in (("Istio", ("https://istio.io/", "https://kubernetes.io/")),
                             ("Gateway API", ("https://gateway-api.sigs.k8s.io/",))):
            cls, code = row[f"{target}: class"], row[f"{target}: code"]
            assert cls.startswith(CLASSES), (name, target, cls)
            if not cls.startswith(("exact", "n/a")) or "impossible" in cls or "approx." in cls:
                assert CODE.search(code) or code == "not reported", (name, target, code)
            if not cls.startswith("n/a"):
                assert any(f"]({s}" in row["references"] or f"{s}" in row["references"] for s in site), \
                    (name, target, row["references"])


def _codes_in_table() -> set[str]:
    return {c for row in rows() for k in ("Istio: code", "Gateway API: code") for c in CODE.findall(row[k])}


def test_every_code_in_the_table_is_shown_by_a_test():
    named = _codes_in_table()
    unknown = sorted(c for c in named if c not in CODES)
    assert not unknown, f"codes in the table that meshc does not have: {unknown}"
    tests_text = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py")
                         if p.name != Path(__file__).name)
    explanations = ROOT / "compiler" / "tooling" / "explanations"
    for code in sorted(named):
        if code not in NO_BAD_EXAMPLE:
            # test_explain.py::test_bad_example_reports_its_code_and_nothing_else compiles it
            assert (explanations / f"{code}.md").is_file(), code
        else:
            assert f'"{code}"' in tests_text, f"{code} has no bad example and no test naming it"


def test_every_kubernetes_code_is_in_the_table():
    kube = {c for c in CODES if re.fullmatch(r"[EW]09\d\d", c)}
    missing = sorted(kube - _codes_in_table())
    assert not missing, f"codes of the Kubernetes targets missing from {DOC.name}'s table: {missing}"
