"""What the reference material says about settings and defaults, generated from their one
description (compiler/language/settings.py and compiler/language/defaults.py): the language
server's hover text for every setting and settings block, and the defaults table of
docs/language.md §19 (tests/test_reference.py keeps the document current; `pytest
--update-goldens` rewrites the table between its markers)."""

from __future__ import annotations

from compiler.language import defaults
from compiler.language.settings import BLOCKS, Block, Setting
from compiler.syntax import render

# docs/language.md: the table is written between these two lines
TABLE_START = "<!-- defaults table: generated from compiler/language/settings.py and defaults.py -->"
TABLE_END = "<!-- end of the generated defaults table -->"


def value_text(kind: str, value: object) -> str:
    """A value as a policy writes it (`10s`, `20%`, `1024`, `reject`)."""
    # the isinstance tests only narrow for the type checker: a default is of its kind's type
    if kind == "duration" and isinstance(value, (int, float)):
        return render.duration(int(value))
    if kind == "percent" and isinstance(value, (int, float)):
        return render.percent(float(value))
    if kind == "bytes" and isinstance(value, (int, float)):
        size = int(value)
        return "unlimited" if size == 0 else f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} bytes"
    if kind == "factor":
        return f"{value} × the base"
    if kind in ("name", "string"):
        return f"`{value}`"
    if kind == "conditions" and isinstance(value, tuple):
        return "`[" + ", ".join(value) + "]`"
    return str(value)


def default_text(setting: Setting) -> str:
    """A setting's default in words: its value as a policy would write it, or its rule."""
    if setting.default_text:
        return setting.default_text
    form = setting.forms[0] if setting.forms else "flag"
    return value_text(form if isinstance(form, str) else form[1], setting.default)


def form_text(setting: Setting) -> str:
    """How a setting is written: `connections INT`, `backoff DURATION [max DURATION]`."""
    words = [setting.key]
    for form in setting.forms:
        prefix = None
        if isinstance(form, tuple):
            prefix, form = form
        optional = form.endswith("?")
        kind = form.rstrip("?")
        word = {"conditions": "[CONDITION, …]", "string": '"STRING"'}.get(kind, kind.upper())
        if prefix:
            word = f"{prefix} {word}"
        words.append(f"[{word}]" if optional else word)
    return " ".join(words)


def setting_hover(block: Block, setting: Setting) -> str:
    choices = f"; one of {', '.join(f'`{c}`' for c in setting.choices)}" if setting.choices else ""
    return (f"{block.kind}: `{form_text(setting)}`, {setting.doc}{choices} (default {default_text(setting)}) "
            f"({block.section})")


def block_hover(block: Block) -> str:
    settings = ", ".join(f"`{s.key}` ({default_text(s)})" for s in block.settings)
    when = f" {block.when}" if block.when else ""
    return f"`{block.kind} {{ … }}`: {block.doc}; settings and their defaults{when}: {settings} ({block.section})"


def hover_docs() -> dict[str, str]:
    """Keyword -> hover text, for every setting, every settings block and the other defaulted words."""
    out: dict[str, str] = {}
    for block in BLOCKS.values():
        out[block.kind] = block_hover(block)
        for setting in block.settings:
            out[setting.key] = setting_hover(block, setting)
    backoff = BLOCKS["retry"]["backoff"]
    out["max"] = (f"retry: `{form_text(backoff)}`, the longest backoff "
                  f"(default {defaults.RETRY_BACKOFF_MAX_FACTOR} × the base) (§10)")
    out["timeout"] = ("`timeout DURATION | none`: bound on the whole request, all tries and backoffs included; "
                      f"default {value_text('duration', defaults.ROUTE_TIMEOUT_MS)}, 504 on expiry (§9)")
    out["mirror"] = ("`mirror S.SUBSET [PCT]`: fire-and-forget copy of a share of requests "
                     f"(default {value_text('percent', defaults.MIRROR_PERCENT)}), Host suffixed `-shadow`; "
                     "a route may have several, decided by one draw; a copy's failures count toward outlier "
                     "detection (§12)")
    return out


def defaults_table() -> str:
    """docs/language.md §19, between its markers: every default, from where it is decided."""
    lines = [TABLE_START, "", "| block | setting | written | default | meaning |", "|---|---|---|---|---|"]
    for block in BLOCKS.values():
        when = f" ({block.when})" if block.when else ""
        for i, setting in enumerate(block.settings):
            name = f"`{block.kind}`{when} {block.section}" if i == 0 else ""
            lines.append(f"| {name} | `{setting.key}` | `{form_text(setting)}` | {default_text(setting)} | "
                         f"{setting.doc} |")
    lines += ["", "| construct | default | constant |", "|---|---|---|"]
    for construct, constant, kind in defaults.DESCRIBED:
        value = value_text(kind, getattr(defaults, constant)) if constant else kind
        lines.append(f"| {construct} | {value} | {f'`{constant}`' if constant else ''} |")
    lines += ["", TABLE_END]
    return "\n".join(lines)


def with_table(document: str) -> str:
    """`document` (docs/language.md) with its defaults table replaced by the current one."""
    start, end = document.index(TABLE_START), document.index(TABLE_END) + len(TABLE_END)
    return document[:start] + defaults_table() + document[end:]
