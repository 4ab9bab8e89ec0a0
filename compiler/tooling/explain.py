"""`meshc explain CODE`: a diagnostic code's severity, title, explanation, a bad and a good example.

The examples live in `compiler/tooling/explanations/CODE.md`, one file per registered code; only this
module reads them, and only `meshc explain` imports this module, so `meshc check` never pays for
them. `docs/codes.md` is generated from the same data by `render_markdown()` (a test keeps it in
sync; `pytest --update-goldens` or `python -m compiler.tooling.explain --markdown` rewrites it).

An explanation file has two sections, `## Bad` and `## Good`; each holds an optional sentence of
prose and one fenced ```` ```mesh ```` block. The block is a whole program: it compiles on its own.
The import codes (E10xx, W10xx) have a ```` ```yaml ```` block instead: what `meshc import istio` reads.
A block whose lines start with `# file: NAME.mesh` holds several files, the first being the one
given to meshc; ```` ```mesh encoding=latin-1 ```` says the file is saved in that encoding.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from compiler.core.codes import CODES, Code

EXPLANATIONS_DIR = "explanations"   # inside the `compiler.tooling` package
DEFAULT_FILE = "example.mesh"       # the file name of a single-file example
DOCS_PATH = "docs/codes.md"

_SECTION = re.compile(r"^## (Bad|Good)[ \t]*$", re.MULTILINE)
_FENCE = re.compile(r"^```(mesh|yaml)([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_FILE_MARK = re.compile(r"^# file: (\S+\.(?:mesh|yaml))[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Example:
    """One example program: the prose before it, its source as shown, and its files."""
    prose: str                          # one or two sentences, may be empty
    source: str                         # the snippet exactly as written in the data file
    files: tuple[tuple[str, str], ...]  # (file name, text); the first is the entry point
    encoding: str = "utf-8"             # the encoding the files are saved in


@dataclass(frozen=True)
class Explanation:
    """A registered code with its examples (None while its explanation file is missing)."""
    code: Code
    bad: Example | None
    good: Example | None


def parse_examples(text: str, where: str = "<explanation>") -> dict[str, Example]:
    """The `## Bad` and `## Good` sections of an explanation file, by lower-case name."""
    heads = list(_SECTION.finditer(text))
    found: dict[str, Example] = {}
    for i, head in enumerate(heads):
        body = text[head.end():heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        fence = _FENCE.search(body)
        if fence is None:
            raise ValueError(f"{where}: section `{head.group(1)}` has no ```mesh block")
        options = dict(opt.split("=", 1) for opt in fence.group(2).split() if "=" in opt)
        source = fence.group(3)
        found[head.group(1).lower()] = Example(
            prose=" ".join(body[:fence.start()].split()), source=source,
            files=_split_files(source, "example.yaml" if fence.group(1) == "yaml" else DEFAULT_FILE),
            encoding=options.get("encoding", "utf-8"))
    return found


def _split_files(source: str, default: str = DEFAULT_FILE) -> tuple[tuple[str, str], ...]:
    marks = list(_FILE_MARK.finditer(source))
    if not marks:
        return ((default, source),)
    return tuple((m.group(1), source[m.end() + 1:marks[i + 1].start() if i + 1 < len(marks) else len(source)])
                 for i, m in enumerate(marks))


def load(code: str) -> Explanation:
    """The explanation of a registered code; examples are None when its file is missing."""
    from compiler.core import package_data

    text = package_data.read_text("compiler.tooling", f"{EXPLANATIONS_DIR}/{code}.md")
    examples = parse_examples(text, f"{EXPLANATIONS_DIR}/{code}.md") if text is not None else {}
    return Explanation(CODES[code], examples.get("bad"), examples.get("good"))


def lookup(name: str) -> str | None:
    """The registered code that `name` spells, in any case, or None."""
    code = name.strip().upper()
    return code if code in CODES else None


# ---- rendering ---------------------------------------------------------------------------------

def _wrap(text: str, indent: str = "") -> str:
    import textwrap

    return textwrap.fill(text, width=100, initial_indent=indent, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False)


def _label(label: str, example: Example) -> str:
    return label if example.encoding == "utf-8" else f"{label} (saved in {example.encoding})"


def render_text(ex: Explanation) -> str:
    """What `meshc explain CODE` prints: the head of a diagnostic, the explanation, the examples."""
    code = ex.code
    out = [f"{code.severity}[{code.code}]: {code.title}", "", _wrap(code.explanation)]
    for label, example in (("Bad", ex.bad), ("Good", ex.good)):
        out.append("")
        if example is None:
            out.append(f"{label}: (no example yet)")
            continue
        out += [_wrap(f"{_label(label, example)}: {example.prose}".rstrip()), ""]
        out += [("    " + line).rstrip() for line in example.source.rstrip("\n").split("\n")]
    out += ["", f"See {DOCS_PATH}#{code.code.lower()} and docs/language.md."]
    return "\n".join(out) + "\n"


def render_list() -> str:
    """Every registered code with its severity and title, one per line, in registry order."""
    return "".join(f"{c.code}  {c.severity:<7}  {c.title}\n" for c in CODES.values())


def render_markdown() -> str:
    """docs/codes.md: a table of every code, then one section per code (anchor `#e0201`)."""
    out = ["# Diagnostic codes", "",
           "<!-- Generated from compiler/core/codes.py and compiler/tooling/explanations/"
           " by compiler/tooling/explain.py; do not edit.",
           "     Regenerate with `pytest tests/test_explain.py --update-goldens`"
           " or `python -m compiler.tooling.explain --markdown > docs/codes.md`. -->", "",
           "Every diagnostic meshc reports has one of these codes. `E` codes are errors (nothing is "
           "written, exit 1), `W` codes warnings. `meshc explain CODE` prints the same text in a terminal; "
           "the language reference (`docs/language.md`, section 17) says where each is reported.", "",
           "| code | severity | title |", "|---|---|---|"]
    out += [f"| [{c.code}](#{c.code.lower()}) | {c.severity} | {c.title} |" for c in CODES.values()]
    for code in CODES:
        ex = load(code)
        out += ["", f"## {code}", "", f"**{ex.code.title}** ({ex.code.severity})", "", ex.code.explanation]
        for label, example in (("Bad", ex.bad), ("Good", ex.good)):
            out.append("")
            if example is None:
                out.append(f"**{label}:** no example yet.")
                continue
            out += [f"**{_label(label, example)}:** {example.prose}".rstrip(), "", "```",
                    example.source.rstrip("\n"), "```"]
    return "\n".join(out) + "\n"


# ---- the command -------------------------------------------------------------------------------

def run(name: str | None, list_all: bool = False) -> int:
    """`meshc explain [CODE] [--list]`: exit 0, or 2 for an unknown code."""
    if list_all or name is None:
        sys.stdout.write(render_list())
        return 0
    code = lookup(name)
    if code is None and name.strip().upper().startswith("H"):    # a `meshc doctor` finding: no examples
        from compiler.core.host_codes import HOST_CODES

        row = next((r for r in HOST_CODES if r[0] == name.strip().upper()), None)
        if row is not None:
            host, severity, title, text = row
            see = ("A `meshc doctor` finding (a fact of the host the sidecars run on, not of a program): see "
                   "docs/identity.md, \"Checking a host: meshc doctor\".")
            sys.stdout.write(f"{severity}[{host}]: {title}\n\n{_wrap(text)}\n\n{_wrap(see)}\n")
            return 0
    if code is None:
        from compiler.core.diagnostics import did_you_mean

        hint = did_you_mean(name.strip().upper(), CODES)
        print(f"meshc: error: unknown code `{name}`" + (f" ({hint})" if hint else "")
              + "; `meshc explain --list` lists every code", file=sys.stderr)
        return 2
    sys.stdout.write(render_text(load(code)))
    return 0


if __name__ == "__main__":  # python -m compiler.tooling.explain --markdown > docs/codes.md
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m compiler.tooling.explain --markdown")
    sys.stdout.write(render_markdown())
