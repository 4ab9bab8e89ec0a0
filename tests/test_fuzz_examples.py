"""Broken versions of the examples never crash meshc: they give exit 0 or 1 and located diagnostics.

Every example is mutated (truncated, characters or bytes deleted, tokens inserted, lines swapped)
and checked in-process through `compiler.cli.main(["check", ...])`, in both output formats, and
through `compiler.api.check`. The outcome must be exit 0 or 1, never 2 (usage) or 3
(internal error) and never an exception; exit 1 must come with an error that names a file and a
line and column (or, for a file that cannot be read or is not UTF-8, its path). A few mutants also go through a
real `python -m compiler check` process, whose stderr must hold no traceback.

The mutant is written next to pristine copies of all examples, so that its imports (`shop.mesh`)
resolve as they do in examples/.

Bugs these tests found are kept: the fixed ones as regression tests, the open ones as strict
xfail tests ("known bugs" below); :func:`known_bug` recognises the inputs that trigger an open
bug, so that the properties skip those inputs until it is fixed. Generated programs
(tests/strategies.py, rendered with compiler.syntax.render) are checked the same way at the end.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import random
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from compiler import api, cli
from compiler.syntax.render import render
from tests import strategies as S
from tests.strategies import KEYWORDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_DIR = os.path.join(ROOT, "examples")
EXAMPLES = {name: pathlib.Path(EXAMPLE_DIR, name).read_text(encoding="utf-8")
            for name in sorted(os.listdir(EXAMPLE_DIR)) if name.endswith(".mesh")}
MUTANT = "mutant.mesh"
# Errors about a whole file, located by its path alone: a file that cannot be read or imported
# (E0205), a file that is not UTF-8 (E0106).
FILE_LEVEL_CODES = ("E0205", "E0106")

# Tokens inserted into the examples: punctuation, keywords, numbers of every kind and near
# misses (`1.`, `1e5`, `0.0001s`), and characters the lexer has no token for.
TOKENS = (
    ["{", "}", "[", "]", "(", ")", '"', '""', '"\\q"', '"\\u12"', '"open', ";", ",", ".", "..", "=", ":", "#", "%",
     "\\", "*", "-", "\n", "\r\n", "\t", " "]
    + sorted(KEYWORDS)
    + ["0", "7", "65536", "4294967296", "1.5", "1.", ".5", "5xx", "0ms", "1.5s", "0.0001s", "10ms", "2h",
       "25h", "10%", "0.00001%", "101%", "1e5", "99999999999999999999", "0x1F", "1_000", "3m4"]
    + ["é", "→", "\u2028", "\x00", "\x7f", "😀", "\ufeff", "ß", "İ", "\u0301", "std.", "std.nope", "x.y.z"]
)

def known_bug(text: str) -> str | None:
    """Why this text would hit an open bug (an xfail test under "known bugs"), or None: there is
    none open now; the hook stays for the next one found."""
    return None


# ---- running meshc -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A directory with pristine copies of every example; mutants are written next to them."""
    path = tmp_path_factory.mktemp("fuzz")
    for name in EXAMPLES:
        shutil.copy(os.path.join(EXAMPLE_DIR, name), path / name)
    return path


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def check_mutant(workdir, content: str | bytes) -> int:
    """Write the mutant, check it three ways, assert the outcome is sound; return the exit code."""
    path = os.path.join(str(workdir), MUTANT)
    with open(path, "wb") as fh:
        fh.write(content.encode("utf-8") if isinstance(content, str) else content)
    shown = repr(content[:2000])

    code, out, err = _main(["check", "--format", "json", path])
    assert code in (0, 1), f"exit {code} on {shown}\n{err}"
    diags = json.loads(out)["diagnostics"]
    assert bool(code) == any(d["severity"] == "error" for d in diags), shown
    # meshc reads in text mode: `\r\n` and a lone `\r` are line breaks too.
    text = content if isinstance(content, str) else content.decode("utf-8", "replace")
    n_lines = len(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    for d in diags:
        assert d["file"], f"a diagnostic without a file: {d} on {shown}"
        if d["line"] is not None:
            assert d["column"] >= 1 and d["line"] >= 1, d
            if os.path.basename(d["file"]) == MUTANT:
                assert d["line"] <= n_lines, f"line {d['line']} is past the end of the file: {d} on {shown}"
    if code == 1:
        located = [d for d in diags if d["severity"] == "error" and d["file"]
                   and ((d["line"] is not None and d["column"] is not None) or d["code"] in FILE_LEVEL_CODES)]
        assert located, f"exit 1 without a located error: {diags} on {shown}"

    human_code, _, human_err = _main(["check", "--color", "always", path])
    assert human_code == code, f"exit {human_code} in human format, {code} in json, on {shown}\n{human_err}"

    result = api.check([path])
    found = list(result.diagnostics)
    if not result.has_errors and result.context is not None and result.context.asserts:
        # `meshc check` proves the asserts after the checks, as the CLI does (compiler/cli/compile.py)
        from compiler.verify.asserts import prove

        found += prove(api.compile([path], shard=False))[0]
    assert any(d.severity == "error" for d in found) == (code == 1)
    assert len(found) == len(diags)
    return code


# ---- mutations ---------------------------------------------------------------------------------------

example_names = st.sampled_from(sorted(EXAMPLES))


@st.composite
def truncations(draw):
    text = EXAMPLES[draw(example_names)]
    return text[:draw(st.integers(0, len(text)))]


@st.composite
def deletions(draw):
    text = EXAMPLES[draw(example_names)]
    for _ in range(draw(st.integers(1, 8))):
        if not text:
            break
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + text[at + draw(st.integers(1, 4)):]
    return text


inserted = st.one_of(st.sampled_from(TOKENS), st.text(max_size=3))


@st.composite
def insertions(draw):
    text = EXAMPLES[draw(example_names)]
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(text)))
        token = draw(inserted)
        pad = draw(st.sampled_from(["", " "]))
        text = text[:at] + pad + token + pad + text[at:]
    return text


@st.composite
def swapped_lines(draw):
    lines = EXAMPLES[draw(example_names)].split("\n")
    for _ in range(draw(st.integers(1, 3))):
        i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
    if draw(st.booleans()):  # and now and then a line dropped or doubled
        i = draw(st.integers(0, len(lines) - 1))
        lines[i:i + 1] = draw(st.sampled_from([[], [lines[i], lines[i]]]))
    return "\n".join(lines)


@st.composite
def byte_mutations(draw):
    """Bytes deleted and inserted anywhere, so that the file may not be UTF-8 any more."""
    data = bytearray(EXAMPLES[draw(example_names)].encode("utf-8"))
    at = draw(st.integers(0, len(data)))
    data[at:at] = draw(st.sampled_from(["é", "😀", "\u2028", "→"])).encode("utf-8")
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        if draw(st.booleans()):
            del data[at:at + draw(st.integers(1, 2))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=3))
    return bytes(data)


@st.composite
def mixed(draw):
    """Several kinds of mutation, one after the other, on one example."""
    text = draw(st.one_of(deletions(), insertions(), swapped_lines()))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["delete", "insert", "swap"]))
        if kind == "delete" and text:
            at = draw(st.integers(0, len(text) - 1))
            text = text[:at] + text[at + draw(st.integers(1, 10)):]
        elif kind == "insert":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + " " + draw(inserted) + " " + text[at:]
        else:
            lines = text.split("\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text


# ---- properties ----------------------------------------------------------------------------------------

# Each mutant is checked three ways against every example: half the profile's examples keep the
# suite's time (`HYPOTHESIS_PROFILE=nightly` runs the profile's full count).
_NIGHTLY = os.environ.get("HYPOTHESIS_PROFILE") == "nightly"
fuzz = settings() if _NIGHTLY else settings(max_examples=max(10, settings().max_examples // 2))


@fuzz
@given(truncations())
def test_truncated_example(workdir, text):
    assume(known_bug(text) is None)
    check_mutant(workdir, text)


@fuzz
@given(deletions())
def test_example_with_deletions(workdir, text):
    assume(known_bug(text) is None)
    check_mutant(workdir, text)


@fuzz
@given(insertions())
def test_example_with_inserted_tokens(workdir, text):
    assume(known_bug(text) is None)
    check_mutant(workdir, text)


@fuzz
@given(swapped_lines())
def test_example_with_swapped_lines(workdir, text):
    assume(known_bug(text) is None)
    check_mutant(workdir, text)


@fuzz
@given(byte_mutations())
def test_example_with_byte_mutations(workdir, data):
    assume(known_bug(data.decode("utf-8", "replace")) is None)
    check_mutant(workdir, data)


@fuzz
@given(mixed())
def test_example_with_mixed_mutations(workdir, text):
    assume(known_bug(text) is None)
    check_mutant(workdir, text)


# The sweep's nightly profile (HYPOTHESIS_PROFILE=nightly or MESHC_EQUIVALENCE=nightly): every
# line start and end and 80 spread offsets; by default every other line start and 40.
_SWEEP_ALL = _NIGHTLY or os.environ.get("MESHC_EQUIVALENCE") == "nightly"


def _offsets(text: str, count: int | None = None) -> list[int]:
    """Line starts (every one, and every line end, in the nightly profile; every other one by
    default), and `count` offsets spread evenly: the places a cut matters most."""
    count = count or (80 if _SWEEP_ALL else 40)
    cuts = {0, len(text)}
    for i, m in enumerate(re.finditer(r"\n", text)):
        if _SWEEP_ALL:
            cuts.update((m.start(), m.end()))
        elif i % 2 == 0:
            cuts.add(m.end())
    step = max(1, len(text) // count)
    cuts.update(range(0, len(text), step))
    return sorted(cuts)


# Every policy, and one file of policy tests (each cut of a test file checks the policies it
# imports too: the four of them took 41 s, this one 2 s; the mutation tests take all of them).
SWEPT = sorted(n for n in EXAMPLES if not n.endswith("_test.mesh")) + ["resilience_test.mesh"]


@pytest.mark.parametrize("name", SWEPT)
def test_truncation_sweep(workdir, name):
    """Deterministic: the example cut at every line boundary and at evenly spread offsets."""
    text = EXAMPLES[name]
    outcomes = [check_mutant(workdir, text[:n]) for n in _offsets(text) if known_bug(text[:n]) is None]
    assert outcomes[-1] == 0 and 1 in outcomes  # the whole example is fine; some cut is not


def test_the_examples_themselves_pass(workdir):
    for name, text in EXAMPLES.items():
        assert check_mutant(workdir, text) == 0, name


def test_unreadable_and_empty_files(workdir):
    assert check_mutant(workdir, b"\xff\xfe not utf-8 \xc3") == 1
    assert [d.code for d in api.check([os.path.join(str(workdir), MUTANT)]).diagnostics] == ["E0106"]
    assert check_mutant(workdir, "") == 0
    assert check_mutant(workdir, "\ufeffservice") == 1


def test_missing_files_are_usage_errors(workdir):
    code, _, err = _main(["check", os.path.join(str(workdir), "no-such-file.mesh")])
    assert code == 2 and "no such file" in err
    code = check_mutant(workdir, 'import "no-such-file.mesh"\n')
    assert code == 1


# ---- a real process --------------------------------------------------------------------------------------

def _subprocess_mutants() -> list[tuple[str, str]]:
    """Eight fixed mutants: each example truncated mid-item, and with junk inserted."""
    rng = random.Random(20240611)
    out = []
    for name, text in sorted(EXAMPLES.items()):
        cut = text[:rng.randrange(len(text) // 3, len(text))]
        out.append((f"{name}-truncated", cut))
        junk = text
        for _ in range(4):
            at = rng.randrange(len(junk))
            junk = junk[:at] + " " + rng.choice(TOKENS) + " " + junk[at:]
        out.append((f"{name}-junk", junk))
    return [(label, t) for label, t in out if known_bug(t) is None][:10]


def test_mutants_in_a_real_process(workdir):
    env = dict(os.environ, MESHC_DEBUG="1", NO_COLOR="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    mutants = _subprocess_mutants()
    assert 1 <= len(mutants) <= 10
    for label, text in mutants:
        path = os.path.join(str(workdir), MUTANT)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        proc = subprocess.run([sys.executable, "-m", "compiler", "check", path], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert "Traceback" not in proc.stderr, f"{label}:\n{proc.stderr}"
        assert "internal error" not in proc.stderr, f"{label}:\n{proc.stderr}"
        assert proc.returncode in (0, 1), f"{label}: exit {proc.returncode}\n{proc.stderr}"


# ---- regressions: bugs found by these tests, since fixed ---------------------------------------------------

@pytest.mark.parametrize("text", [
    "service a { endpoints [] }\n",
    "service a { subset v { endpoints [] } }\n",
    "routes a { route r { match { method [] } } }\n",
    "authorization a { allow { from identity [] } }\n",
    "authorization a { allow { from namespace [] } }\n",
    "authorization a { allow { from service [] } }\n",
])
def test_empty_list_does_not_crash(workdir, text):
    """An empty list `[]` crashed the parser (IndexError in Builder._end, exit 3)."""
    assert check_mutant(workdir, text) == 1


@pytest.mark.parametrize("text", [
    'mesh { trust_domain "shop.local" }\n# end\n',
    'mesh { trust_domain "shop.local" }  # end',
    "# only a comment\n",
])
def test_a_comment_may_end_the_file(workdir, text):
    """The lexer backtracked into a comment that ends the file and made its last character a
    token: a spurious E0101 `unexpected `d``."""
    assert check_mutant(workdir, text) == 0


@pytest.mark.parametrize("text", [
    'service a {\n  port 80\n  endpoints ["h:²"]\n}\n',
    'service a {\n  port 80\n  endpoints ["10.0.0.1:80"]\n  sidecar { app "h:²" }\n}\n',
    'service a {\n  port 80\n  endpoints ["h:١٢"]\n}\n',
], ids=["superscript", "sidecar-app", "arabic-indic"])
def test_non_ascii_digits_are_not_a_port(workdir, text):
    """parse_endpoint tested the port with str.isdigit(): `²` crashed int() (exit 3), and
    Arabic-Indic digits were accepted as port 12."""
    assert check_mutant(workdir, text) == 1


_HUGE = "9" * 5000


@pytest.mark.parametrize("text", [
    f"service a {{ port {_HUGE} }}\n",
    f"policy outlier o {{ interval {_HUGE}ms }}\n",
    f"policy outlier o {{ interval 1.{_HUGE}s }}\n",
    f"policy outlier o {{ interval {'1' + '0' * 400}ms }}\n",
], ids=["int", "duration", "decimal-duration", "float-overflow-duration"])
def test_huge_number_does_not_crash(workdir, text):
    """A number of 4301+ digits crashed int() (Python's int_max_str_digits, ValueError), and a
    duration of 309+ digits overflowed float() (OverflowError): exit 3."""
    assert check_mutant(workdir, text) == 1


@pytest.mark.parametrize("text", ['import "\\u0000"\n', 'import "std/\\u0000"\n', 'import "a\x00b.mesh"\n'],
                         ids=["escaped", "std", "raw"])
def test_nul_in_an_import_path_does_not_crash(workdir, text):
    """open() and importlib.resources raise ValueError('embedded null byte'): exit 3."""
    assert check_mutant(workdir, text) == 1


# ---- known bugs ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    f"policy retry r {{ on [{_HUGE}] }}\n",
    f'service a {{\n  port 80\n  endpoints ["h:{_HUGE}"]\n}}\n',
    f'service a {{\n  port 80\n  endpoints ["10.0.0.1:80"]\n  sidecar {{ app "h:{_HUGE}" }}\n}}\n',
], ids=["retry-condition", "endpoint-port", "sidecar-app-port"])
def test_huge_number_in_a_condition_or_port_does_not_crash(workdir, text):
    """int() of more than 4300 digits raises ValueError (Python's int_max_str_digits): exit 3 once."""
    assert check_mutant(workdir, text) == 1


# ---- generated programs ----------------------------------------------------------------------------------

@fuzz
@given(S.modules(max_items=8))
def test_generated_program_checks_without_crash(workdir, module):
    """Any program the parser accepts, with any values in it, is checked without a crash."""
    text = render(module)
    assume(known_bug(text) is None)
    check_mutant(workdir, text)


@fuzz
@given(st.sampled_from(sorted(EXAMPLES)), S.modules(max_items=4))
def test_example_with_generated_items_checks_without_crash(workdir, name, module):
    """Generated items added to an example: their names may now resolve against the example's."""
    text = EXAMPLES[name] + "\n" + render(module)
    assume(known_bug(text) is None)
    check_mutant(workdir, text)
