"""The `x-kubernetes-validations` rules of a CRD, evaluated with cel-python (`celpy`) as the
Kubernetes API server evaluates them on a create.

cel-python implements the CEL standard (operators, `size`, `contains`, `startsWith`, `endsWith`,
`matches`, the conversions, `duration`, `timestamp`, and the macros `has`, `all`, `exists`,
`exists_one`, `map`, `filter`). Kubernetes adds libraries of its own
(https://kubernetes.io/docs/reference/using-api/cel/#cel-options-language-features-and-libraries);
the ones provided here:

- strings (cel-go's `ext.Strings`): `charAt`, `indexOf`, `lastIndexOf`, `lowerAscii`,
  `upperAscii`, `replace`, `split`, `substring`, `trim`, `join`;
- regex: `find`, `findAll`; and `matches` with RE2 (google-re2), Kubernetes' engine, not Python's;
- lists: `isSorted`, `sum`, `min`, `max`, `indexOf`, `lastIndexOf` on lists;
- URLs: `url`, `isURL`, `getScheme`, `getHost`, `getHostname`, `getPort`, `getEscapedPath`,
  `getQuery` (Go's `url.ParseRequestURI` rules: an absolute URI, or an absolute path).

A rule that calls a function outside this set cannot be evaluated: `compile_rule` says so
(`RuleError`), and the validator reports it as its own error, never as a pass. A transition rule
(one that reads `oldSelf`) applies only to an update: on a create the API server skips it, and so
does this module (`Rule.transition`). Kubernetes' cost limits are not modelled: the rules of the
vendored CRDs are bounded by their schemas' `maxItems`/`maxLength`.
"""

from __future__ import annotations

import base64
import datetime
import itertools
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import celpy
import re2
from celpy import celtypes
from celpy.evaluation import CELEvalError, Evaluator, base_functions

# What cel-python itself provides besides base_functions: the macros and function-like macros.
_MACROS = {"has", "dyn", "all", "exists", "exists_one", "map", "filter", "reduce"}


class RuleError(Exception):
    """A rule the validator cannot evaluate (it does not parse, or it calls an unknown function)."""


def _error(message: str) -> CELEvalError:
    return CELEvalError(message, ValueError, (message,))


# ---- strings (cel-go ext.Strings; indices count code points, as in Go's CEL)

def _substring(s: Any, start: Any, end: Any = None) -> Any:
    n = len(s)
    end = n if end is None else int(end)
    start = int(start)
    if start < 0 or start > n or end < start or end > n:
        return _error(f"index out of range: substring({start}, {end}) of a string of length {n}")
    return celtypes.StringType(str(s)[start:end])


def _char_at(s: Any, i: Any) -> Any:
    i = int(i)
    if i < 0 or i > len(s):
        return _error(f"index out of range: {i}")
    return celtypes.StringType(str(s)[i:i + 1])


def _index_of(x: Any, sub: Any, start: Any = 0) -> Any:
    if isinstance(x, celtypes.ListType):
        return celtypes.IntType(next((i for i, v in enumerate(x) if i >= int(start) and v == sub), -1))
    start = int(start)
    if start < 0 or start > len(x):
        return _error(f"index out of range: {start}")
    return celtypes.IntType(str(x).find(str(sub), start))


def _last_index_of(x: Any, sub: Any, end: Any = None) -> Any:
    if isinstance(x, celtypes.ListType):
        return celtypes.IntType(max((i for i, v in enumerate(x) if v == sub), default=-1))
    s = str(x)
    if end is None:
        return celtypes.IntType(s.rfind(str(sub)))
    end = int(end)
    if end < 0 or end >= len(s) + 1:
        return _error(f"index out of range: {end}")
    return celtypes.IntType(s.rfind(str(sub), 0, end + len(sub)))


def _ascii(s: Any, upper: bool) -> Any:
    return celtypes.StringType("".join((c.upper() if upper else c.lower()) if c.isascii() else c for c in str(s)))


def _replace(s: Any, old: Any, new: Any, n: Any = -1) -> Any:
    n = int(n)
    return celtypes.StringType(str(s).replace(str(old), str(new), n if n >= 0 else -1))


def _split(s: Any, sep: Any, n: Any = -1) -> Any:
    n = int(n)
    if n == 0:
        return celtypes.ListType([])
    parts = list(str(s)) if str(sep) == "" else str(s).split(str(sep), n - 1 if n > 0 else -1)
    return celtypes.ListType([celtypes.StringType(p) for p in parts])


def _trim(s: Any) -> Any:
    return celtypes.StringType(str(s).strip(" \t\n\v\f\r\x85\xa0"))


def _join(items: Any, sep: Any = "") -> Any:
    return celtypes.StringType(str(sep).join(str(i) for i in items))


# ---- regex (RE2, as Kubernetes)

def _compile_re(pattern: Any) -> Any:
    try:
        return re2.compile(str(pattern))
    except re2.error as exc:
        return _error(f"invalid regex `{pattern}`: {exc}")


def _matches(s: Any, pattern: Any) -> Any:
    rx = _compile_re(pattern)
    return rx if isinstance(rx, CELEvalError) else celtypes.BoolType(rx.search(str(s)) is not None)


def _find(s: Any, pattern: Any) -> Any:
    rx = _compile_re(pattern)
    if isinstance(rx, CELEvalError):
        return rx
    m = rx.search(str(s))
    return celtypes.StringType(m.group(0) if m else "")


def _find_all(s: Any, pattern: Any, n: Any = -1) -> Any:
    rx = _compile_re(pattern)
    if isinstance(rx, CELEvalError):
        return rx
    found = [m.group(0) for m in rx.finditer(str(s))]
    if int(n) >= 0:
        found = found[:int(n)]
    return celtypes.ListType([celtypes.StringType(f) for f in found])


# ---- lists

def _is_sorted(items: Any) -> Any:
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(items)))


def _sum(items: Any) -> Any:
    total: Any = celtypes.IntType(0)
    for i, v in enumerate(items):
        total = v if i == 0 else total + v
    return total


def _min(items: Any) -> Any:
    return min(items) if len(items) else _error("min of an empty list")


def _max(items: Any) -> Any:
    return max(items) if len(items) else _error("max of an empty list")


# ---- URLs (Go's url.ParseRequestURI: an absolute URI with a scheme, or a path starting with `/`)

class URL(celtypes.StringType):
    """A parsed URL (Kubernetes' `url(string)` type)."""


def _parse_url(s: str) -> Any:
    if not s or any(c in s for c in " \t\r\n") or "#" in s:
        return None
    parts = urlsplit(s)
    if parts.scheme:
        if not parts.scheme[0].isalpha():
            return None
        return parts
    return parts if s.startswith("/") else None


def _url(s: Any) -> Any:
    if _parse_url(str(s)) is None:
        return _error(f"url: invalid URL `{s}`")
    return URL(str(s))


def _is_url(s: Any) -> Any:
    return celtypes.BoolType(_parse_url(str(s)) is not None)


def _url_part(part: str) -> Any:
    def get(u: Any) -> Any:
        p = _parse_url(str(u))
        if p is None:
            return _error(f"invalid URL `{u}`")
        if part == "scheme":
            return celtypes.StringType(p.scheme)
        if part == "host":
            return celtypes.StringType(p.netloc.rpartition("@")[2])
        if part == "hostname":
            return celtypes.StringType(p.hostname or "")
        if part == "port":
            return celtypes.StringType(str(p.port) if p.port is not None else "")
        if part == "path":
            return celtypes.StringType(p.path)
        return celtypes.MapType({celtypes.StringType(k): celtypes.ListType([celtypes.StringType(v) for v in vs])
                                 for k, vs in _query(p.query).items()})
    return get


def _query(q: str) -> dict[str, list[str]]:
    from urllib.parse import parse_qs
    return parse_qs(q, keep_blank_values=True)


KUBERNETES_FUNCTIONS: dict[str, Any] = {
    "substring": _substring, "charAt": _char_at, "indexOf": _index_of, "lastIndexOf": _last_index_of,
    "lowerAscii": lambda s: _ascii(s, False), "upperAscii": lambda s: _ascii(s, True),
    "replace": _replace, "split": _split, "trim": _trim, "join": _join,
    "matches": _matches, "find": _find, "findAll": _find_all,
    "isSorted": _is_sorted, "sum": _sum, "min": _min, "max": _max,
    "url": _url, "isURL": _is_url, "getScheme": _url_part("scheme"), "getHost": _url_part("host"),
    "getHostname": _url_part("hostname"), "getPort": _url_part("port"), "getEscapedPath": _url_part("path"),
    "getQuery": _url_part("query"),
}
PROVIDED = frozenset(base_functions) | frozenset(KUBERNETES_FUNCTIONS) | _MACROS

_ENV: celpy.Environment | None = None


def _cached_parser() -> None:
    """cel-python builds its LALR parser from its grammar in every process (1 s); lark can cache the
    analysis in a file (0.07 s to load). The parser is cel-python's singleton, built here with the
    options cel-python's own `CELParser` uses (cel-python is pinned to 0.5.x: a release that changes
    them changes this), the file in meshc's cache directory (`MESHC_CACHE_DIR`, else
    `$XDG_CACHE_HOME/meshc`, else `~/.cache/meshc`, as the grammar tables'); lark checks the file
    against the grammar and options, and an unwritable directory only costs the time."""
    import os
    import re
    from pathlib import Path

    import lark
    from celpy.celparser import CELParser

    if CELParser.CEL_PARSER is not None:
        return
    base = os.environ.get("MESHC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "meshc")
    grammar = (Path(celpy.__file__).parent / "cel.lark").read_text(encoding="utf-8")
    options: dict[str, Any] = {
        "parser": "lalr", "start": "expr", "debug": True, "g_regex_flags": re.M,
        "lexer_callbacks": {"IDENT": CELParser.ambiguous_literals}, "propagate_positions": True,
        "maybe_placeholders": False, "priority": "invert", "tree_class": lark.Tree}
    try:
        os.makedirs(base, exist_ok=True)
        CELParser.CEL_PARSER = lark.Lark(grammar, cache=os.path.join(base, "cel-grammar.lark-cache"), **options)
    except OSError:
        CELParser.CEL_PARSER = lark.Lark(grammar, **options)


def _operand(evaluator: Any, tree: Any) -> Any:
    """One operand of `&&`/`||`: its value, or the error it raised as a value."""
    try:
        return evaluator.visit(tree)
    except CELEvalError as exc:
        return exc
    except (KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError, IndexError) as exc:
        return CELEvalError(str(exc), type(exc), exc.args)


def _logical(evaluator: Any, tree: Any, absorbing: bool) -> Any:
    """CEL's commutative `&&` (absorbing false) and `||` (absorbing true): `false && error` is false
    and `error || true` true, whichever side the error is on (the CEL spec, "Logical operators");
    else an error operand makes the result an error. cel-python 0.5 evaluates both sides and lets an
    exception of the right one (a missing field inside a macro) escape."""
    left = _operand(evaluator, tree.children[0])
    if isinstance(left, celtypes.BoolType) and bool(left) is absorbing:
        return left
    right = _operand(evaluator, tree.children[1])
    if isinstance(right, celtypes.BoolType) and bool(right) is absorbing:
        return right
    for side in (left, right):
        if not isinstance(side, celtypes.BoolType):
            return side if isinstance(side, CELEvalError) else _error("no such overload")
    return celtypes.BoolType(not absorbing)


class _Evaluator(Evaluator):
    """cel-python's interpreter with CEL's error-absorbing `&&` and `||` (`_logical`), in macros too."""

    def sub_evaluator(self, ast: Any) -> Evaluator:
        return _Evaluator(ast, activation=self.activation)

    def conditionalor(self, tree: Any) -> Any:
        if len(tree.children) == 2:
            return _logical(self, tree, True)
        return super().conditionalor(tree)

    def conditionaland(self, tree: Any) -> Any:
        if len(tree.children) == 2:
            return _logical(self, tree, False)
        return super().conditionaland(tree)


class _Runner(celpy.InterpretedRunner):
    def evaluate(self, context: Any) -> Any:
        return _Evaluator(ast=self.ast, activation=self.new_activation()).evaluate(context)


def _env() -> celpy.Environment:
    global _ENV
    if _ENV is None:
        import sys

        _cached_parser()

        limit = sys.getrecursionlimit()
        # (celpy raises the process's recursion limit to 2500: the rules of the vendored CRDs
        # evaluate well within the default, so it is put back)
        _ENV = celpy.Environment(runner_class=_Runner)
        sys.setrecursionlimit(limit)
    return _ENV


@dataclass
class Rule:
    """One compiled rule: its text, its message, the program, and whether it reads `oldSelf`."""
    text: str
    message: str
    program: Any
    transition: bool
    message_program: Any = None
    memo: dict[str, tuple[bool | None, str]] = field(default_factory=dict)

    def evaluate(self, value: Any) -> tuple[bool | None, str]:
        """(True, "") when the value satisfies the rule, (False, message) when it does not,
        (None, why) when the rule cannot be evaluated on it. Memoised by the value's repr (the
        rules are pure; cel-python's interpreter takes milliseconds per evaluation, and the values
        of one program repeat: the same path, filter or duration in many objects)."""
        key = repr(value)
        found = self.memo.get(key)
        if found is None:
            found = self.memo[key] = self._evaluate(value)
        return found

    def _evaluate(self, value: Any) -> tuple[bool | None, str]:
        try:
            result = self.program.evaluate({"self": value})
        except CELEvalError as exc:
            return None, _describe(exc)
        except Exception as exc:   # cel-python raises a few plain errors of its own
            return None, f"{type(exc).__name__}: {exc}"
        if isinstance(result, CELEvalError):
            return None, _describe(result)
        if not isinstance(result, (celtypes.BoolType, bool)):
            return None, f"the rule gives a {type(result).__name__}, not a bool"
        if result:
            return True, ""
        return False, self._message(value)

    def _message(self, value: Any) -> str:
        if self.message_program is not None:
            try:
                text = self.message_program.evaluate({"self": value})
                if isinstance(text, str) and text.strip():
                    return str(text)
            except Exception:
                pass   # Kubernetes falls back to `message` when messageExpression fails
        return self.message or f"failed rule: {self.text}"


def _describe(exc: Any) -> str:
    args = getattr(exc, "args", ())
    text = str(args[0]) if args else str(exc)
    return text.split(" (in activation")[0]


_CACHE: dict[tuple[str, str, str | None], Rule] = {}


def compile_rule(spec: dict[str, Any]) -> Rule:
    """Compile one `x-kubernetes-validations` entry (cached by its text); RuleError when it does not
    parse or calls a function this module does not provide."""
    text = spec.get("rule")
    if not isinstance(text, str):
        raise RuleError(f"a validation without a `rule`: {spec}")
    message = spec.get("message") or ""
    mexpr = spec.get("messageExpression")
    key = (text, message, mexpr)
    if key in _CACHE:
        return _CACHE[key]
    env = _env()
    tree, names, idents = _parse(env, text)
    unknown = sorted(names - PROVIDED)
    if unknown:
        raise RuleError(f"rule `{text}` calls {', '.join(f'`{n}`' for n in unknown)}, "
                        f"which the validator does not provide")
    message_program = None
    if mexpr is not None:
        mtree, mnames, _ = _parse(env, mexpr)
        if mnames - PROVIDED:
            raise RuleError(f"messageExpression `{mexpr}` calls an unknown function")
        message_program = env.program(mtree, functions=KUBERNETES_FUNCTIONS)
    rule = Rule(text, message, env.program(tree, functions=KUBERNETES_FUNCTIONS), "oldSelf" in idents,
                message_program)
    _CACHE[key] = rule
    return rule


def _parse(env: celpy.Environment, text: str) -> tuple[Any, set[str], set[str]]:
    try:
        tree = env.compile(text)
    except Exception as exc:
        raise RuleError(f"rule `{text}` does not parse: {exc}") from None
    names: set[str] = set()
    idents: set[str] = set()
    for node in tree.iter_subtrees():
        if node.data == "member_dot_arg":
            names.add(str(node.children[1]))
        elif node.data == "ident_arg":
            names.add(str(node.children[0]))
        elif node.data == "ident":
            idents.add(str(node.children[0]))
    return tree, names, idents


# ---- values as Kubernetes types them (https://kubernetes.io/docs/reference/using-api/cel/#type-checking)

def to_cel(schema: dict[str, Any], value: Any) -> Any:
    """A JSON value as the CEL value Kubernetes gives a rule, typed by its schema: objects and maps
    are maps, `number` is a double, `format: byte` is bytes, `date-time` a timestamp."""
    if value is None:
        return None
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
        return celpy.json_to_cel(value)
    t = schema.get("type")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        extra = extra if isinstance(extra, dict) else {}
        return celtypes.MapType({celtypes.StringType(k): to_cel(props.get(k, extra), v) for k, v in value.items()})
    if isinstance(value, list):
        items = schema.get("items") or {}
        return celtypes.ListType([to_cel(items, v) for v in value])
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int) and t != "number":
        return celtypes.IntType(value)
    if isinstance(value, (int, float)):
        return celtypes.DoubleType(float(value))
    if isinstance(value, str):
        fmt = schema.get("format")
        if fmt == "byte":
            try:
                return celtypes.BytesType(base64.b64decode(value, validate=True))
            except ValueError:
                return celtypes.StringType(value)
        if fmt in ("date-time", "datetime"):
            try:
                return celtypes.TimestampType(datetime.datetime.fromisoformat(value.replace("Z", "+00:00")))
            except ValueError:
                return celtypes.StringType(value)
        return celtypes.StringType(value)
    return celpy.json_to_cel(value)
