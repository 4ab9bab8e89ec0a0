"""A route's `cors` block (docs/language.md §13a): origins that are origins, RE2 regexes that
compile, methods and header names that exist, a max age in whole seconds, and no credentials for
every origin (E0340-E0344, W0435)."""

from __future__ import annotations

import re
from collections.abc import Callable

from compiler.syntax import ast

# scheme "://" host [":" port]: RFC 6454's serialisation of an origin (lower-case scheme, no path)
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]+)(:[0-9]{1,5})?\Z")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*://")
MAX_AGE_S = 86_400   # a day: the longest any browser keeps a preflight (Firefox); Chrome keeps 2 h


def origin_problem(test: str, value: str) -> tuple[str, str] | None:
    """(message, hint) when an `exact` or `prefix` origin can never be a browser's `Origin`."""
    if test == "exact":
        if value == "*":
            return None
        m = _ORIGIN.match(value)
        if m:
            port = m.group(2)
            if port is not None and not 1 <= int(port[1:]) <= 65535:
                return (f"origin `{value}` has port {port[1:]}, which no origin has",
                        "a port is 1 to 65535 (a browser sends no port for the scheme's default)")
            return None
        if value.endswith("/") and _ORIGIN.match(value.rstrip("/")):
            return (f"origin `{value}` ends with `/`", f'an origin has no path: write `"{value.rstrip("/")}"`')
        m = _SCHEME.match(value)
        if m is None:
            return (f"`{value}` is not an origin", f'an origin is `scheme://host[:port]`, such as `"https://{value}"`'
                    if value and "/" not in value else "an origin is `scheme://host[:port]`, such as "
                    '`"https://app.example.com"`, or `"*"` for any origin')
        rest = value[m.end():]
        if "/" in rest or "?" in rest or "#" in rest:
            cut = m.group(0) + re.split(r"[/?#]", rest, maxsplit=1)[0]
            return (f"origin `{value}` has a path", f'an origin is `scheme://host[:port]`: write `"{cut}"`')
        return (f"`{value}` is not an origin", "an origin is `scheme://host[:port]` (a port is 1 to 5 digits)")
    if test == "prefix":
        m = _SCHEME.match(value)
        if m is None:
            return (f"origin prefix `{value}` does not start with a scheme",
                    'origins start with `scheme://`: write `"https://' + value.split("://")[-1].lstrip("/") + '"`')
        if re.search(r"[/?#\s]", value[m.end():]):
            return (f"origin prefix `{value}` has a path", "an origin has no path: the prefix ends at the host or port")
    return None


def check_cors(cors: ast.Cors, add: Callable, regex: Callable[[ast.Lit], None],
               header_name: Callable[[ast.Lit, str], None], methods: Callable[[ast.MethodCond], None],
               regex_error: Callable[[str], str | None]) -> None:
    """The values of one `cors` block; `regex`, `header_name`, `methods` and `regex_error` are the
    checks of compiler/semantic/checks/values.py for RE2 regexes, header names and methods."""
    if not cors.origins:
        add("E0342", "the cors block allows no origin", cors.span,
            hint='list the origins that may call: `origins [exact "https://app.example.com"]`')
    seen: dict[tuple[str, str], ast.CorsOrigin] = {}
    every = None
    for o in cors.origins:
        key = (o.test, o.value.value)
        if key in seen:
            add("W0435", f"origin `{o.test} \"{o.value.value}\"` is listed twice", o.span, hint="remove one of them")
        seen[key] = o
        if o.test == "regex":
            if regex_error(o.value.value) is not None:
                regex(o.value)
            elif _matches_star(o.value.value):
                every = o
            continue
        problem = origin_problem(o.test, o.value.value)
        if problem is not None:
            add("E0340", problem[0], o.value.span, hint=problem[1])
        elif o.test == "exact" and o.value.value == "*":
            every = o
    if cors.credentials is not None and every is not None:
        add("E0341", f"`credentials` with `{every.test} \"{every.value.value}\"`, which allows every origin",
            cors.credentials.span, hint="the proxy echoes the caller's origin, so every site could make "
            "credentialed requests: list the origins that may, or drop `credentials`")
    if cors.methods is not None:
        methods(ast.MethodCond(cors.methods, cors.span))
        _twice(add, cors.methods, "method", lambda v: v)
    for lits, what in ((cors.headers, "allowed header"), (cors.expose, "exposed header")):
        if lits is None:
            continue
        for lit in lits:
            if lit.value != "*":
                header_name(lit, f"cors {what}")
        _twice(add, lits, what, str.lower)
    if cors.max_age is not None:
        ms = cors.max_age.value
        if ms % 1000:
            add("E0343", f"max_age `{ms} ms` is not a whole number of seconds", cors.max_age.span,
                hint=f"browsers read it in seconds: write `{max(1, ms // 1000)}s`")
        elif not 0 < ms // 1000 <= MAX_AGE_S:
            add("E0343", f"max_age `{ms // 1000}s` is outside 1s to 24h", cors.max_age.span,
                hint="browsers keep a preflight at most a day (Chrome two hours)")


def _matches_star(pattern: str) -> bool:
    """Whether an RE2 origin regex matches the text `*`: Envoy then allows every origin."""
    import re2

    return re2.fullmatch(pattern, "*") is not None


def _twice(add: Callable, lits: tuple[ast.Lit, ...], what: str, key: Callable[[str], str]) -> None:
    seen: set[str] = set()
    for lit in lits:
        k = key(lit.value)
        if k in seen:
            add("W0435", f"{what} `{lit.value}` is listed twice", lit.span, hint="remove one of them")
        seen.add(k)
