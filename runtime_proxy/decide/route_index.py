"""Which routes of a destination can take a request, from its method and first path segment.

`routing.select_route` tries a service's routes in order until one matches. The table
(runtime_proxy/decide/table.py) holds one RouteIndex per destination, `Table.index`. Most routes of a
real policy cannot match most requests: they want another method, or a path under another first
segment (`/static/...` never matches `path prefix "/api/orders"`). This index keeps, per
(method, first segment), the routes that still can, in their order, and hands select_route a
view of the service with only those. The answer is the same by construction: a route left out
has no match whose method and path conditions could both hold, so select_route would have passed
over it; everything it does test (headers, queries, the exact path test) it still tests.

What a match allows is read from what was written (its path condition's kind and value):

- no path condition, `prefix "/"`, `prefix "/x"` without a second `/`, and a regex without a
  literal `/segment/` at its start (or with a `|` anywhere; a character before a quantifier is
  not literal): any first segment;
- `exact "/a/b"`: segment `a`; `segment_prefix "/a"` and `"/a/b"`: `a`; `prefix "/a/b"`: `a`;
  a regex that starts with the literal `/a/`: `a`;
- with `ignore_case`, the segment in ASCII lower case, compared with the request's segment
  lower-cased the same way (`/ADMIN/x` can take `prefix "/admin" ignore_case`).

The request's segment is lower-cased only when a view is built (a cache miss), never on a hit.

Views are cached per (method, segment), at most MAX_ENTRIES per service; past that (many distinct
first segments) the candidates are computed for each request, which costs about what
select_route itself does.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

ANY = None
MAX_ENTRIES = 1024
_REGEX_META = frozenset(".^$*+?()[]{}|\\")


# What the index reads of the compiled table (table.py imports this module, so it is not imported
# here): a match's methods and its config data, a route's matches, a service's name and routes.
class _Match(Protocol):
    @property
    def methods(self) -> frozenset[str] | None: ...
    @property
    def spec(self) -> dict[str, Any]: ...


class _Route(Protocol):
    @property
    def matches(self) -> tuple[_Match, ...]: ...


R = TypeVar("R", bound=_Route)                                  # table.CRoute
R_co = TypeVar("R_co", bound=_Route, covariant=True)


class _Service(Protocol[R_co]):
    @property
    def name(self) -> str: ...
    @property
    def routes(self) -> tuple[R_co, ...]: ...


# (methods or None, first segment or ANY, the segment is compared ignoring ASCII case) of one match
MatchSpec = tuple[frozenset[str] | None, str | None, bool]
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class ServiceView(Generic[R]):
    """What select_route reads of a service: its routes (here, the candidates). A view the index
    keeps (`cached`) gets its own selection function once (`select`: routing.compile_select)."""
    __slots__ = ("name", "routes", "cached", "select", "uses")

    def __init__(self, name: str, routes: tuple[R, ...]) -> None:
        self.name = name
        self.routes = routes
        self.cached = False
        self.select: Any = None
        self.uses = 0             # requests selected with select_route (until `select` is made)


def first_segment_of_value(kind: str, value: str) -> str | None:
    """The one first path segment every path passing this condition has, or ANY."""
    if kind == "regex":
        if "|" in value:
            return ANY
        literal: list[str] = []
        for ch in value:
            if ch in _REGEX_META:
                if ch in "*+?{" and literal:
                    literal.pop()      # `x?`, `x*`, `x{0,1}`: the x before it is not certain
                break
            literal.append(ch)
        value = "".join(literal)
        kind = "prefix"        # a full match starts with its literal prefix
    if not value.startswith("/"):
        return ANY
    slash = value.find("/", 1)
    if kind == "exact":
        return value[1:] if slash < 0 else value[1:slash]
    if kind == "segment_prefix" and not value.endswith("/"):
        if value == "/":
            return ANY
        return value[1:] if slash < 0 else value[1:slash]
    # a plain string prefix: exact only when the first segment is complete in it
    return ANY if slash < 0 else value[1:slash]


def match_spec(m: _Match) -> MatchSpec:
    """(methods or None, first segment or ANY, ignore case) of one compiled match (table.CMatch)."""
    path = m.spec.get("path")
    if path is None:
        return m.methods, ANY, False
    seg = first_segment_of_value(path["kind"], path["value"])
    if seg is not ANY and path.get("ignore_case", False):
        return m.methods, seg.translate(_ASCII_LOWER), True
    return m.methods, seg, False


def first_segment(path: str) -> str:
    slash = path.find("/", 1)
    return path[1:] if slash < 0 else path[1:slash]


class RouteIndex(Generic[R]):
    __slots__ = ("name", "routes", "specs", "views", "selects")

    def __init__(self, csvc: _Service[R]) -> None:
        self.name = csvc.name
        self.routes = csvc.routes
        self.specs = tuple(tuple(match_spec(m) for m in r.matches) for r in csvc.routes)
        self.views: dict[tuple[str, str], ServiceView[R]] = {}
        # the generated selection functions of the views, one per distinct candidate list (many
        # first segments share one: the routes that take any path)
        self.selects: dict[tuple[R, ...], Any] = {}

    def compiled(self, routes: tuple[R, ...], make: Any) -> Any:
        """The selection function for a view's `routes`: made once with `make` (routing.compile_select)."""
        select = self.selects.get(routes)
        if select is None:
            select = self.selects[routes] = make(routes)
        return select

    def view(self, method: str, path: str) -> ServiceView[R]:
        """A view of the service with the routes that can take (method, path), in order."""
        seg = first_segment(path)
        key = (method, seg)
        view = self.views.get(key)
        if view is None:
            keep: list[R] = []
            folded = seg.translate(_ASCII_LOWER)
            for route, specs in zip(self.routes, self.specs):
                for methods, s, ignore_case in specs:
                    if (methods is None or method in methods) and (s is ANY or s == (folded if ignore_case else seg)):
                        keep.append(route)
                        break
            view = ServiceView(self.name, tuple(keep))
            if len(self.views) < MAX_ENTRIES:
                self.views[key] = view
                view.cached = True
        return view
