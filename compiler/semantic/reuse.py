"""Check results kept between analyses of one document, for the language server's re-check after
an edit (issue 19): a check unit whose inputs are the same objects as last time reports what it
reported last time, without running again.

It leans on the parse cache (`compiler.syntax.parse.ItemCache`): a top-level item whose text did
not change is the same AST object in the next analysis, its spans shifted in place when it moved,
and an edited item is a new object. So "the same inputs" is a question of identity, and the
diagnostics kept from last time point at the right place now.

A unit is one item checked by one check (the routes block of a service, say) against an
environment: every other top-level item the check may read. The environment is named by kind,
coarsely and soundly: `environment(ctx, ast.Routes)` is every top-level item that is not a routes
block, so a unit that reads only its own block and any item of other kinds (services, policies,
authorization blocks, the mesh) is reused when just routes blocks were edited, and every unit
runs again after any other edit. tests/test_lsp_incremental.py holds the diagnostics equal to a
check from scratch over random edits.
"""

from __future__ import annotations

from compiler.core.diagnostics import Collector, Diagnostic

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from collections.abc import Callable

    from compiler.semantic.symbols import Context


class CheckReuse:
    """One per document (kept by its ItemCache); `begin` at each analysis."""

    def __init__(self) -> None:
        self._environments: dict[type, tuple] = {}   # kind left out -> the items of the last analysis
        self._same: dict[type, bool] = {}            # kind left out -> unchanged in this analysis
        self._before: dict[tuple, tuple] = {}        # (check, item id) -> (item, its diagnostics)
        self._now: dict[tuple, tuple] = {}
        self.reused = 0                              # units reused, over its life

    def begin(self) -> None:
        """A new analysis: units not asked for in it are forgotten (their items are gone)."""
        self._before, self._now = self._now, {}
        self._same = {}

    def environment_unchanged(self, ctx: Context, leave_out: type) -> bool:
        """Whether every top-level item that is not a `leave_out` is the very object it was in
        the last analysis, in the same order (asked once per analysis and kind)."""
        same = self._same.get(leave_out)
        if same is None:
            items: tuple[object, ...] = (ctx.trust_domain_override,) + tuple(
                item for module in ctx.program.modules for item in module.items if not isinstance(item, leave_out))
            last = self._environments.get(leave_out)
            same = (last is not None and len(last) == len(items)
                    and all(a is b for a, b in zip(last, items)) and not ctx.remote)
            self._environments[leave_out] = items   # held, so no id is reused while compared
            self._same[leave_out] = same
        return same

    def unit(self, ctx: Context, check: str, item: object, leave_out: type, run: Callable[..., None],
             *args: object) -> None:
        """Run `run(*args)` (which reports through `ctx.diags`) for `item`, or report what it reported
        last time when the item and its environment are unchanged."""
        same = self.environment_unchanged(ctx, leave_out)
        key = (check, id(item))
        kept = self._before.get(key)
        if same and kept is not None and kept[0] is item:
            self._now[key] = kept
            ctx.diags.extend(kept[1])
            self.reused += 1
            return
        outer, ctx.diags = ctx.diags, Collector()
        try:
            run(*args)
            found: list[Diagnostic] = ctx.diags.items
        finally:
            ctx.diags = outer
        self._now[key] = (item, found)
        outer.extend(found)
