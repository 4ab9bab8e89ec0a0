"""IR conditions to Envoy matchers, shared by routes (RouteMatch) and authorization (RBAC
permissions use the same `config.route.v3.HeaderMatcher` and `type.matcher.v3.StringMatcher`)."""

from __future__ import annotations

from compiler import ir


def string_matcher(kind: str, value: str, ignore_case: bool = False) -> dict:
    """A `type.matcher.v3.StringMatcher`. `regex` is RE2 and Envoy matches it against the whole
    value, which is the language's full-match rule. Envoy requires a non-empty regex, prefix and
    suffix: the empty regex fully matches exactly the empty value, so it is `exact ""` (an empty
    prefix or suffix is handled by the callers: it holds for any value)."""
    if kind == "regex":
        return {"safe_regex": {"regex": value}} if value else {"exact": ""}
    out: dict[str, str | bool] = {kind: value}  # exact | prefix | suffix
    if ignore_case:
        out["ignore_case"] = True
    return out


def any_value(h: ir.HeaderMatch) -> bool:
    """An empty prefix or suffix: every value passes, so the test is "the header is present"
    (and with `not`, "present and no value passes", which never holds)."""
    return h.kind in ("prefix", "suffix") and h.value == ""


def header_matcher(h: ir.HeaderMatch) -> dict:
    """`config.route.v3.HeaderMatcher`. `absent` is `present_match: false`, which Envoy matches only
    when the header is missing; `invert_match` on a string test needs the header present, as the
    language's `not` does. Several header lines are tested value by value (Envoy 1.40)."""
    out: dict = {"name": h.name}  # `host` works as it is: Envoy matches it against `:authority`
    if h.kind == "present" or any_value(h):
        out["present_match"] = True
    elif h.kind == "absent":
        out["present_match"] = False
    else:
        assert h.value is not None  # a string test has a value
        out["string_match"] = string_matcher(h.kind, h.value, h.ignore_case)
        if h.invert:
            out["invert_match"] = True
    return out


def method_header_matcher(methods: tuple[str, ...]) -> dict:
    """The `:method` pseudo-header against a list of methods: one exact value, or an RE2
    alternation (full match, so `GET|HEAD` matches neither `GETX` nor `XGET`). Method names are
    upper-case tokens (E0309), so they need no escaping in a regex."""
    if len(methods) == 1:
        return {"name": ":method", "string_match": {"exact": methods[0]}}
    return {"name": ":method", "string_match": {"safe_regex": {"regex": "|".join(methods)}}}


def query_matcher(q: ir.QueryMatch) -> dict:
    """`config.route.v3.QueryParameterMatcher`; Envoy tests a repeated key on its first value."""
    if q.kind == "present":
        return {"name": q.name, "present_match": True}
    assert q.value is not None  # a string test has a value
    return {"name": q.name, "string_match": string_matcher(q.kind, q.value)}


def route_match(m: ir.Match) -> dict:
    """A `config.route.v3.RouteMatch` for one IR match (all of its conditions ANDed). An
    `ignore_case` path is `case_sensitive: false`, which applies to the path alone (headers and
    query parameters keep their own matchers)."""
    out: dict = {}
    p = m.path
    if p is None:
        out["prefix"] = "/"
    elif p.kind == "exact":
        out["path"] = p.value
    elif p.kind == "prefix":
        out["prefix"] = p.value
    elif p.kind == "segment_prefix":
        out["path_separated_prefix"] = p.value
    elif p.kind == "regex":
        out["safe_regex"] = {"regex": p.value}
    else:
        raise ValueError(f"unknown path kind {p.kind!r}")
    if p is not None and p.ignore_case:
        # Envoy folds ASCII letters of `path`, `prefix` and `path_separated_prefix` (and ignores the
        # flag on a `safe_regex`, which the front end refuses: E0312).
        out["case_sensitive"] = False
    headers = [header_matcher(h) for h in m.headers]
    # `not header "x" prefix ""` never holds: present and absent at once.
    headers += [{"name": h.name, "present_match": False} for h in m.headers if any_value(h) and h.invert]
    if m.methods is not None:
        headers.append(method_header_matcher(m.methods))
    if headers:
        out["headers"] = headers
    if m.query:
        out["query_parameters"] = [query_matcher(q) for q in m.query]
    return out
