"""Check results kept between analyses of one document, for the language server's re-check after
an edit and `meshc serve`'s reload (issue 19): a check unit whose inputs are the same objects as
last time reports what it reported last time, without running again.

It leans on the parse cache (`compiler.syntax.parse.ItemCache`): a top-level item whose text did
not change is the same AST object in the next analysis, its spans shifted in place when it moved,
and an edited item is a new object. So "the same inputs" is a question of identity, and the
diagnostics kept from last time point at the right place now.

A unit is one item checked by one check: a routes block's checks (checks/routes.py) and the
values of its routes (checks/values.py), an authorization block's checks (checks/authz.py). While it runs, the
symbol tables it reads through (`ctx.services`, `ctx.routes`, `ctx.authorizations`,
`ctx.policies`) note every name it looks up and what it found, absent included, and it runs with
a memo of its own (merged into the context's afterwards), so that nothing it uses was computed
unseen by an earlier check. It is reused when its item is the same object and every name it looked
up finds the same object (or again nothing), with the same `mesh` block. A unit that walked a
whole table is not reused. A check that runs as units must read the program only through those
tables, `ctx.mesh` and its own item (the `check_block`s of checks/routes.py and checks/authz.py,
`route_values` of checks/values.py do).
tests/test_lsp_incremental.py holds the diagnostics equal to a check from scratch over random
edits and over edits of what a unit read.
"""

from __future__ import annotations

from compiler.core.diagnostics import Collector, Diagnostic

TYPE_CHECKING = False   # (typing is not imported: `meshc check` starts without it)
if TYPE_CHECKING:
    from collections.abc import Callable

    from compiler.semantic.symbols import Context

TABLES = ("services", "routes", "authorizations", "policies")
_ABSENT = object()
_EVERY = object()   # a unit walked the whole table


class _Watching:
    """A symbol table as a unit sees it: every lookup noted in `reads`."""

    __slots__ = ("table", "name", "reads")

    def __init__(self, table: dict, name: str, reads: dict) -> None:
        self.table, self.name, self.reads = table, name, reads

    def get(self, key, default=None):
        found = self.table.get(key, _ABSENT)
        self.reads[(self.name, key)] = found
        return default if found is _ABSENT else found

    def __getitem__(self, key):
        found = self.get(key, _ABSENT)
        if found is _ABSENT:
            raise KeyError(key)
        return found

    def __contains__(self, key) -> bool:
        return self.get(key, _ABSENT) is not _ABSENT

    def _every(self) -> dict:
        self.reads[(self.name, _EVERY)] = _EVERY
        return self.table

    def __iter__(self):
        return iter(self._every())

    def __len__(self) -> int:
        return len(self._every())

    def keys(self):
        return self._every().keys()

    def values(self):
        return self._every().values()

    def items(self):
        return self._every().items()


class CheckReuse:
    """One per document (kept by its ItemCache); `begin` at each analysis."""

    def __init__(self) -> None:
        self._before: dict[tuple, tuple] = {}   # (check, item id) -> (item, mesh, reads, diagnostics)
        self._now: dict[tuple, tuple] = {}
        self.reused: dict[str, int] = {}        # check -> units reused, over its life

    def begin(self) -> None:
        """A new analysis: units not asked for in it are forgotten (their items are gone)."""
        self._before, self._now = self._now, {}

    def unit(self, ctx: Context, check: str, item: object, run: Callable[..., None], *args: object) -> None:
        """Run `run(*args)` (which reports through `ctx.diags`) for `item`, or report what it
        reported last time when the item and everything it read are unchanged."""
        key = (check, id(item))
        kept = self._before.get(key)
        if kept is not None and kept[0] is item and kept[1] is ctx.mesh and _same_reads(ctx, kept[2]):
            self._now[key] = kept
            ctx.diags.extend(kept[3])
            self.reused[check] = self.reused.get(check, 0) + 1
            return
        reads: dict = {}
        tables = {name: getattr(ctx, name) for name in TABLES}
        outer, ctx.diags = ctx.diags, Collector()
        memo, ctx.memo = ctx.memo, {}
        for name, table in tables.items():
            setattr(ctx, name, _Watching(table, name, reads))
        try:
            run(*args)
            found: list[Diagnostic] = ctx.diags.items
        finally:
            for name, table in tables.items():
                setattr(ctx, name, table)
            memo.update(ctx.memo)
            ctx.diags, ctx.memo = outer, memo
        if ctx.trust_domain_override is None and not ctx.remote:
            self._now[key] = (item, ctx.mesh, reads, found)   # holding the objects: no id is reused
        outer.extend(found)


def _same_reads(ctx: Context, reads: dict) -> bool:
    for (name, key), found in reads.items():
        if key is _EVERY or getattr(ctx, name).get(key, _ABSENT) is not found:
            return False
    return True
