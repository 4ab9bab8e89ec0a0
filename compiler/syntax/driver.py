"""The parser's shift-reduce loop, alone in a module so that it can be compiled to C with mypyc.

This file is plain, typed Python and is what runs by default. An optional build step
(`MESHC_MYPYC=1 python setup.py build_ext --inplace`, setup.py) compiles it with mypyc into an
extension module of the same name, which Python then imports instead. The gain is modest (the
loop is about a fifth of parsing; the AST builder's reductions it calls are most of the rest,
docs/benchmarks.md). Without MESHC_MYPYC=1 the build is pure Python and needs no C compiler.
`compiler/syntax/parse.py` ignores a compiled copy older than this file (a stale in-place build),
so an edit here always takes effect.

Keep it free of imports from the rest of meshc and of anything mypyc cannot compile: the
builder's reducers and the parser's error paths are passed in as callables.
"""

from __future__ import annotations

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from collections.abc import Callable


# How a rule's value is made (`kinds`): by its reducer, or inline for the list helpers of `x*`
# (build.py's _as_list and _append_one: about half of all reductions), without a call.
CALL, AS_LIST, APPEND_ONE = 0, 1, 2


def shift_reduce(actions: dict[int, dict[str, int]], rule_size: list[int], rule_goto: list[dict[int, int]],
                 state: int, end_state: int, vals: list[str], types: list[str],
                 reduce_with: list[Callable[[list[object]], object]], kinds: list[int],
                 contextual: Callable[[str, str, int], str],
                 fail: Callable[[int, str, list[int]], None]) -> object:
    """Shift-reduce over the token arrays from `state`; returns the value of the start symbol
    (the one whose accepting state is `end_state`). `actions` maps a state to its row: a terminal
    to a shift state (>= 0) or a reduction by rule ~a (< 0); `rule_goto[rule]` maps the state
    uncovered by a reduction to the state after it (the goto on the rule's name). An unexpected
    token goes to `contextual(text, terminal, state)` (a keyword used as a name, ...) and, when
    still not accepted, to `fail(index, terminal, state_stack)`, which raises."""
    state_stack: list[int] = [state]
    values: list[object] = []
    for i, ttype in enumerate(types):
        # Shift the token, after as many reductions as it takes.
        while True:
            row = actions[state]
            a = row.get(ttype)
            if a is None:
                ttype = contextual(vals[i], ttype, state)
                a = row.get(ttype)
                if a is None:
                    fail(i, ttype, state_stack)
                    raise AssertionError("fail() returned")  # pragma: no cover
                types[i] = ttype
            if a >= 0:
                state = a
                state_stack.append(a)
                values.append(i)
                break
            rule = ~a
            kind = kinds[rule]
            if kind == APPEND_ONE:    # `lst x` -> lst with x appended: the list stays where it is
                item = values.pop()
                values[-1].append(item)  # type: ignore[attr-defined]  # a list helper's value is a list
                del state_stack[-2:]
            else:
                size = rule_size[rule]
                children: list[object]
                if size:
                    children = values[-size:]
                    del values[-size:]
                    del state_stack[-size:]
                else:
                    children = []
                values.append(children if kind == AS_LIST else reduce_with[rule](children))
            state = rule_goto[rule][state_stack[-1]]
            state_stack.append(state)
            if state == end_state and ttype == "$END":
                return values[-1]
    raise AssertionError("the parser consumed the end of input without accepting")  # pragma: no cover
