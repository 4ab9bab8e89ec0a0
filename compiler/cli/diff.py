"""`meshc diff OLD NEW [-- PATHS]`: what a policy change does to requests (docs/testing.md).

OLD and NEW are each a file, a directory or a git revision. A revision means the same paths as
they were in it (PATHS, else the other side's path, else the working directory), with every
.mesh file of the revision beside them so that imports resolve within it. The engine is
compiler/cli/diff_run.py (the request space: diff_space.py); this module reads the sides and
prints. Exit codes: 0 no change, 5 behaviour changed (EXIT_CHANGED), 6 no change found but the
answer is not complete for some destination (EXIT_UNKNOWN), 1 a side does not compile, 2 usage
(a bad revision, a missing path).
"""

from __future__ import annotations

import json
import os
import sys

from compiler.cli.exits import EXIT_CHANGED, EXIT_INPUT, EXIT_OK, EXIT_UNKNOWN, EXIT_USAGE

FIELDS = {"reply": "caller", "status": "status", "to": "destination", "authz": "authorization", "timeout_ms": "timeout",
          "retry": "retries", "fault": "fault", "mirror": "mirror", "request": "request sent upstream",
          "response_headers": "response headers"}


def _sides(specs: list[str]):
    from compiler.cli.diff_run import DiffInputError, Side, from_revision, is_revision
    from compiler.cli.inputs import input_files

    if len(specs) < 2:
        raise DiffInputError("meshc diff needs OLD and NEW (files, directories or git revisions)")
    old, new, paths = specs[0], specs[1], specs[2:]
    revs = [is_revision(old), is_revision(new)]
    if not any(revs) and paths:
        raise DiffInputError("PATHS after OLD NEW are for git revisions; OLD and NEW are paths here")
    out = []
    for spec, rev, other, other_rev in ((old, revs[0], new, revs[1]), (new, revs[1], old, revs[0])):
        if rev:
            out.append(from_revision(spec, paths or ([other] if not other_rev else ["."])))
        elif not os.path.exists(spec):
            raise DiffInputError(f"{spec} is neither a path nor a revision of a git repository here")
        else:
            files, code = input_files([spec])
            if code != EXIT_OK:
                raise DiffInputError("")
            out.append(Side(spec, files))
    return out


def run_diff(args) -> int:
    from compiler.cli.diff_run import DiffInputError, compile_side, diff
    from compiler.cli.report import print_diagnostics

    try:
        sides = _sides(list(args.sides))
    except DiffInputError as err:
        if str(err):
            print(f"meshc: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        for side in sides:
            problems = compile_side(side)
            if problems:
                print(f"meshc: error: {side.label} does not compile:", file=sys.stderr)
                print_diagnostics(problems, "human", args.color, json_stream=sys.stderr)
                return EXIT_INPUT
        result = diff(sides[0], sides[1])
    finally:
        for side in sides:
            side.cleanup()
    fmt = args.output_format
    text = (render_json if fmt == "json" else render_markdown if fmt == "markdown" else render_human)(
        sides[0].label, sides[1].label, result)
    sys.stdout.write(text)
    if result.changes or result.settings:
        return EXIT_CHANGED
    return EXIT_UNKNOWN if result.unknown else EXIT_OK


# ---- rendering -----------------------------------------------------------------------------------

def _value(field: str, o: dict) -> str:
    v = o.get(field)
    if field == "status":
        return "forwarded" if v == 0 else "-" if v is None else str(v)
    if field == "timeout_ms":
        return "none" if v == 0 else "-" if v is None else f"{v}ms"
    if field == "authz":
        if v is None:
            return "not reached"
        if not v.startswith(("allowed", "denied")):
            return str(v)
        rule = o.get("_rule")
        return f"{v} by rule `{rule}`" if rule else f"{v} by the default"
    if field == "to" and v is not None and o.get("_route"):
        return f"{v} (route `{o['_route']}`)"
    return "none" if v is None else str(v).replace("\r\n", "\\r\\n ").strip()


def differing(change) -> list[str]:
    keys = sorted({k for k in change.old if not k.startswith("_")} | {k for k in change.new if not k.startswith("_")})
    order = list(FIELDS)
    return sorted((k for k in keys if change.old.get(k) != change.new.get(k)),
                  key=lambda k: (order.index(k) if k in order else len(order), k))


def explain(change) -> list[str]:
    """One line per differing field: what happened, and what happens now."""
    lines = []
    fields = differing(change)
    if "status" in fields and ("request" not in change.old or "request" not in change.new):
        fields = [k for k in fields if k in ("reply", "status", "to", "authz")]   # a local reply on one side
    for k in fields:
        if k == "request":
            lines.append("the request sent upstream changed: "
                         f"{_value(k, change.old)}  →  {_value(k, change.new)}")
            continue
        lines.append(f"{FIELDS.get(k, k)}: {_value(k, change.old)} → {_value(k, change.new)}")
    o, n = change.old.get("_route"), change.new.get("_route")
    if o != n and "to" not in differing(change):
        lines.append(f"route: `{o or 'none'}` → `{n or 'none'}`")
    return lines


def _callers(change) -> str:
    return ", ".join(change.callers)


def _summary(old: str, new: str, result) -> str:
    dests = len({c.dest for c in result.changes})
    if result.changes:
        head = f"{len(result.changes)} change{'s' if len(result.changes) != 1 else ''} in {dests} " \
               f"destination{'s' if dests != 1 else ''}"
        if result.settings:
            head += f", {len(result.settings)} setting{'s' if len(result.settings) != 1 else ''} changed"
    elif result.settings:
        head = f"{len(result.settings)} setting{'s' if len(result.settings) != 1 else ''} changed, " \
               "every request decided as before"
    elif result.unknown:
        head = "no change found, but the answer is not complete (unknown)"
    else:
        head = "no change in behaviour"
    return f"{old} → {new}: {head} ({result.destinations} destinations, {result.compared} request classes compared)"


def render_human(old: str, new: str, result) -> str:
    out = [_summary(old, new, result)]
    by_dest: dict[str, list] = {}
    for c in result.changes:
        by_dest.setdefault(c.dest, []).append(c)
    for dest in sorted(by_dest):
        out.append("")
        out.append(f"{dest}")
        for c in by_dest[dest]:
            out.append(f"  from {_callers(c)}: {c.request.show()}")
            for line in explain(c):
                out.append(f"      {line}")
            if c.classes > 1:
                out.append(f"      ({c.classes - 1} more request class{'es' if c.classes > 2 else ''} "
                           "change the same way)")
    if result.settings:
        out += ["", "settings (read by no request decision: a destination's state and connections, the sidecars)"]
        out += [f"  {svc}: {key}: {_setting(a)} → {_setting(b)}" for svc, key, a, b in result.settings]
    for dest, reasons in sorted(result.unknown.items()):
        out.append("")
        out.append(f"unknown: {dest}: " + "; ".join(reasons))
    return "\n".join(out) + "\n"


def _setting(value) -> str:
    return "none" if value is None else json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) \
        else str(value)


def _outcome_data(o: dict) -> dict:
    data = {k: v for k, v in o.items() if not k.startswith("_")}
    data["route"] = o.get("_route")
    if "authz" in o:
        data["rule"] = o.get("_rule")
    return data


def render_json(old: str, new: str, result) -> str:
    doc = {
        "old": old, "new": new,
        "changed": bool(result.changes or result.settings),
        "complete": not result.unknown,
        "destinations": result.destinations,
        "compared": result.compared,
        "changes": [{"destination": c.dest, "callers": c.callers, "request": c.request.to_data(),
                     "classes": c.classes, "fields": differing(c), "explanation": explain(c),
                     "old": _outcome_data(c.old), "new": _outcome_data(c.new)}
                    for c in sorted(result.changes, key=lambda c: (c.dest, c.request.show()))],
        "settings": [{"service": svc, "setting": key, "old": a, "new": b} for svc, key, a, b in result.settings],
        "unknown": [{"destination": d, "reasons": r} for d, r in sorted(result.unknown.items())],
    }
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def render_markdown(old: str, new: str, result) -> str:
    out = [f"### meshc diff: `{old}` → `{new}`", "", _summary(f"`{old}`", f"`{new}`", result)]
    by_dest: dict[str, list] = {}
    for c in result.changes:
        by_dest.setdefault(c.dest, []).append(c)
    for dest in sorted(by_dest):
        out += ["", f"#### `{dest}`", "", "| from | request | change |", "|---|---|---|"]
        for c in by_dest[dest]:
            more = f" (+{c.classes - 1} similar)" if c.classes > 1 else ""
            change = "<br>".join(line.replace("|", "\\|") for line in explain(c))
            out.append(f"| {_callers(c)} | `{c.request.show()}`{more} | {change} |")
    if result.settings:
        out += ["", "#### Settings", "", "| service | setting | old | new |", "|---|---|---|---|"]
        out += [f"| `{svc}` | `{key}` | `{_setting(a)}` | `{_setting(b)}` |" for svc, key, a, b in result.settings]
    if result.unknown:
        out += ["", "**Unknown** (not complete):", ""]
        out += [f"- `{d}`: " + "; ".join(r) for d, r in sorted(result.unknown.items())]
    return "\n".join(out) + "\n"

