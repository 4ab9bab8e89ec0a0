"""The language server's incremental re-check (compiler/tooling/lsp/analysis.py with a parse cache
per document) gives exactly the diagnostics of a check from scratch, whatever the edits.

Random edit sequences are applied to the shipped examples, analysed where they lie on disk (so
their imports resolve to the real files and the standard library); after every edit the
incremental analysis, which keeps one `ItemCache` across the whole sequence as the server does,
is compared with `meshc check`'s analysis of the same text: every diagnostic's code, message,
hint, file, line, column, end and labels.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.syntax.parse import _TOP_LEVEL, ItemCache
from compiler.tooling.lsp import analysis as la

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.mesh"))

# What people type: whole keywords, braces, names that exist or nearly do, items, line breaks.
SNIPPETS = [
    "\n", "}", "{", " ", "route", "service", "routes", "to", "payments.v1", "paymnts.v1", "match",
    "timeout 2s", "timeout 0s", "retry none", "# comment\n", '"', "port 99999", "\nservice extra { port 9 }\n",
    "\nroutes nowhere { route r { to nowhere.v1 } }\n", "authorization", "default deny", "path prefix \"/a\"",
]


def _render(diags) -> list[dict]:
    return [d.to_json() for d in diags]


@st.composite
def edits(draw) -> list[tuple]:
    """Typing (delete a stretch, insert a snippet), and whole items copied or deleted: a copy
    before the original makes the original a duplicate, a deleted service breaks the references
    to it, so later, unchanged (moved) items carry diagnostics too."""
    out: list[tuple] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["type", "type", "copy", "delete"]))
        if kind == "type":
            typed = st.text(alphabet="abc{}\n \"#.:0123456789", max_size=12)
            insert = draw(st.one_of(st.sampled_from(SNIPPETS), typed))
            out.append(("type", draw(st.floats(0, 1)), draw(st.integers(0, 40)), insert))
        else:
            out.append((kind, draw(st.floats(0, 1)), draw(st.floats(0, 1))))
    return out


def _items(text: str) -> list[tuple[int, int]]:
    starts = [m.start() for m in _TOP_LEVEL.finditer(text)]
    return list(zip(starts, starts[1:] + [len(text)]))


def _apply(text: str, edit: tuple) -> str:
    if edit[0] == "type":
        _, where, delete, insert = edit
        at = int(where * len(text))
        return text[:at] + insert + text[at + delete:]
    items = _items(text)
    if not items:
        return text
    a, b = items[min(int(edit[1] * len(items)), len(items) - 1)]
    if edit[0] == "delete":
        return text[:a] + text[b:]
    at = items[min(int(edit[2] * len(items)), len(items) - 1)][0]
    return text[:at] + text[a:b] + text[at:]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(example=st.sampled_from(EXAMPLES), sequence=edits())
def test_incremental_diagnostics_equal_a_check_from_scratch(example: Path, sequence) -> None:
    uri = example.as_uri()
    text = example.read_text(encoding="utf-8")
    cache = ItemCache()
    la.analyse_document(uri, text, cache)
    for edit in sequence:
        text = _apply(text, edit)
        incremental = _render(la.analyse_document(uri, text, cache).diagnostics)
        scratch = _render(la.check_document(uri, text))
        assert incremental == scratch


def test_a_one_line_edit_reparses_only_its_item() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from compile_scale import generate

    text = generate(30)
    uri = (ROOT / "generated.mesh").as_uri()
    cache = ItemCache()
    first = la.analyse_document(uri, text, cache)
    before = next(m for m in first.program.modules if m.path == first.path).items
    lines = text.split("\n")
    lines[len(lines) // 2] += "  # edited"
    edited = "\n".join(lines)
    again = la.analyse_document(uri, edited, cache)
    after = next(m for m in again.program.modules if m.path == again.path).items
    assert len(after) == len(before) > 10
    assert sum(a is b for a, b in zip(before, after)) == len(before) - 1  # the same objects, not parsed again
    assert _render(again.diagnostics) == _render(la.check_document(uri, edited))


# Routes blocks whose diagnostics point into other items: a policy (E0401's per-try timeout), a
# service's sidecar (W0404's label), an authorization block (W0410's label). The edits below move
# those items, or change them, or change only routes blocks.
REUSE_DOC = '''routes a {
  route r { to a.v1  timeout 5s }
}

policy retry slow {
  attempts 2
  per_try_timeout 5s
}

service a {
  port 8080
  subset v1 { endpoints ["10.0.0.1:8080"] }
  sidecar { stream_idle_timeout 2s }
}

service b {
  port 8080
  subset v1 { endpoints ["10.0.1.1:8080"] }
  subset v2 { endpoints ["10.0.1.2:8080"] }
}

service c {
  port 8080
  subset v1 { endpoints ["10.0.2.1:8080"] }
}

routes b {
  route first { to b.v1 }
  route later { match { path prefix "/x" } to b.v2 }
  route slow { match { path prefix "/slow" } to b.v1  timeout 3s  retry slow }
  route who { match { caller a } to b.v1 }
}

authorization b {
  default deny
  allow x { from service c }
}

routes c {
  route only { to c.v1 }
}
'''


def _block(text: str, name: str) -> str | None:
    """The text of `routes NAME { … }` in `text`, None when there is none."""
    found = re.search(rf"^routes {name} {{\n.*?^}}\n", text, re.M | re.S)
    return found.group(0) if found else None


def test_routes_checks_are_reused_while_what_they_read_is_unchanged(tmp_path: Path) -> None:
    uri = (tmp_path / "doc.mesh").as_uri()
    cache = ItemCache()
    text = REUSE_DOC
    first = _render(la.analyse_document(uri, text, cache).diagnostics)
    assert {"W0404", "E0401", "W0401", "W0410"} <= {d["code"] for d in first}
    # (what the edit does, replaced, replacement, the routes blocks whose checks are reused, and
    # whether the checks of `authorization b` are); the values of an unchanged block's routes
    # read nothing else: reused whatever else changed
    edits = [
        ("a route added to the first block: every later item moves two lines down",
         "  route r { to a.v1  timeout 5s }\n", "  route q { to a.v1 }\n\n  route r { to a.v1  timeout 5s }\n",
         {"b", "c"}, True),
        ("the last block edited: nothing moves", "route only { to c.v1 }", "route only { to c.v1  timeout 9s }",
         {"a", "b"}, True),
        # `routes a` reads service a (its sidecar), `routes b` too (its route for caller a)
        ("the sidecar's idle timeout raised: W0404 goes", "stream_idle_timeout 2s", "stream_idle_timeout 20s",
         {"c"}, True),
        ("the caller admitted: W0410 goes", "from service c }", "from service a }", {"a", "c"}, False),
        ("the policy's per-try timeout shortened: E0401 goes", "per_try_timeout 5s", "per_try_timeout 1s",
         {"a", "c"}, True),
        ("the first block deleted: every later item moves up", "routes a {\n  route q { to a.v1 }\n\n"
         "  route r { to a.v1  timeout 5s }\n}\n", "", {"b", "c"}, True),
        ("the unreachable route's match changed", 'route later { match { path prefix "/x" }',
         'route later { match { path prefix "/y" }', {"c"}, True),
        ("a route for a caller that is not declared", "caller a }", "caller d }", {"c"}, True),
        # `authorization b` now admits service a, and reads it: not d
        ("that caller declared: not admitted, W0410 is back", "service c {", "service d {\n  port 8080\n"
         '  subset v1 { endpoints ["10.0.3.1:8080"] }\n}\n\nservice c {', {"c"}, True),
    ]
    blocks = {"a", "b", "c"}
    for what, old, new, reused, authorization in edits:
        assert old in text, what
        before = text
        text = text.replace(old, new)
        counts = dict(cache.checks.reused)
        incremental = _render(la.analyse_document(uri, text, cache).diagnostics)
        assert incremental == _render(la.check_document(uri, text)), what
        now = cache.checks.reused
        assert now.get("routes", 0) - counts.get("routes", 0) == len(reused), what
        assert now.get("authorization", 0) - counts.get("authorization", 0) == int(authorization), what
        unchanged = {b for b in blocks if f"routes {b} {{" in text and _block(before, b) == _block(text, b)}
        assert now.get("values", 0) - counts.get("values", 0) == len(unchanged), what
    assert {d["code"] for d in incremental} >= {"W0401", "W0410"}
    assert not {"W0404", "E0401"} & {d["code"] for d in incremental}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=edits())
def test_random_edits_of_routes_whose_diagnostics_point_into_other_items(sequence) -> None:
    """The random edits of the first test, on REUSE_DOC: its routes blocks' diagnostics have labels
    and spans in the policy, the service and the authorization block they read, so an edit there
    (or a move of them) must run the blocks that read them again and no other."""
    uri = (ROOT / "reuse.mesh").as_uri()   # (imports nothing: the path is never read)
    text = REUSE_DOC
    cache = ItemCache()
    la.analyse_document(uri, text, cache)
    for edit in sequence:
        text = _apply(text, edit)
        assert _render(la.analyse_document(uri, text, cache).diagnostics) == _render(la.check_document(uri, text))
