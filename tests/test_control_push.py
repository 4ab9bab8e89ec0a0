"""Incremental reloads of `meshc serve` (docs/control-plane.md, "Push performance"): what a
reload reuses (parsed items, emitted files, packed resources, whole sidecar snapshots) must give
exactly what a fresh compile and a fresh build give, byte for byte, after any edit.

The randomized test applies a seeded series of edits to a two-file program (a route's path or
destination, a service added or removed, the authorization of one caller, an item moved into the
imported file, an import added or dropped, the mTLS mode, a syntax error and its fix) and after
each one compares the server's incremental state with a fresh compile and build: the IR, the
diagnostics, and every sidecar's resources (JSON, packed bytes) and versions.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from compiler import api
from compiler.control import consistency, snapshot
from compiler.control.serve import BuildError, build
from compiler.core.diagnostics import Collector
from compiler.core.source import SourceFile, Span
from compiler.syntax.parse import ItemCache, parse_source

pytest.importorskip("grpc")


# ---- a program the edits act on -------------------------------------------------------------

class Fleet:
    """A small program as data: services (each with routes and the callers its authorization
    admits), which of them live in the imported file, the mTLS mode, and std/resilience or not."""

    def __init__(self, n: int):
        self.services: dict[str, dict] = {}
        self.next = 0
        self.mtls = "strict"
        self.resilience = True
        self.imported: set[str] = set()
        for _ in range(n):
            self.add()

    def add(self) -> str:
        name = f"s{self.next}"
        self.next += 1
        others = sorted(self.services)
        self.services[name] = {"routes": [["/a", "v1"], ["/b", "v2"]],
                               "callers": others[-1:] if others else []}
        return name

    def remove(self, name: str) -> None:
        del self.services[name]
        self.imported.discard(name)
        for svc in self.services.values():
            svc["callers"] = [c for c in svc["callers"] if c != name]

    def item(self, i: int, name: str) -> str:
        svc = self.services[name]
        outlier = "  outlier std.standard\n" if self.resilience else ""
        routes = "\n".join(f'  route r{k} {{ match {{ path prefix "{path}" }} to {name}.{subset}  timeout 2s }}'
                           for k, (path, subset) in enumerate(svc["routes"]))
        rules = "\n".join(f"  allow from_{c} {{ from service {c}  method [{svc.get('method', 'GET')}] }}"
                          for c in svc["callers"])
        default = "allow" if svc.get("open") else "deny"
        return (f"service {name} {{\n  port {8000 + i}\n"
                f'  subset v1 {{ endpoints ["10.0.{i}.1:80"] }}\n  subset v2 {{ endpoints ["10.0.{i}.2:80"] }}\n'
                f"{outlier}}}\nroutes {name} {{\n{routes}\n}}\n"
                f"authorization {name} {{\n  default {default}\n{rules if default == 'deny' else ''}\n}}\n")

    def write(self, main: Path, extra: Path) -> None:
        head = ['import "extra.mesh"'] + (['import "std/resilience"'] if self.resilience else [])
        head.append(f'mesh {{ trust_domain "t.local"  mtls {self.mtls} }}')
        names = sorted(self.services, key=lambda n: int(n[1:]))
        main.write_text("\n".join(head) + "\n\n" + "\n".join(
            self.item(i, n) for i, n in enumerate(names) if n not in self.imported))
        extra.write_text("# services kept in the imported file\n" + "\n".join(
            self.item(i, n) for i, n in enumerate(names) if n in self.imported))


def edit(fleet: Fleet, rng: random.Random) -> str:
    """One random edit of the fleet; what it was."""
    names = sorted(fleet.services)
    name = rng.choice(names)
    kind = rng.choice(["path", "path", "destination", "add", "remove", "caller", "move", "import", "mtls"])
    if kind == "path":
        route = rng.choice(fleet.services[name]["routes"])
        route[0] = route[0] + rng.choice(["/x", "/longer-segment", ""]) if len(route[0]) < 30 else "/c"
    elif kind == "destination":
        route = rng.choice(fleet.services[name]["routes"])
        route[1] = "v2" if route[1] == "v1" else "v1"
    elif kind == "add":
        name = fleet.add()
    elif kind == "remove" and len(names) > 3:
        fleet.remove(name)
    elif kind == "caller":
        fleet.services[name]["callers"] = [rng.choice(names)]
    elif kind == "move":
        fleet.imported ^= {name}
    elif kind == "import":
        fleet.resilience = not fleet.resilience
    elif kind == "mtls":
        fleet.mtls = "permissive" if fleet.mtls == "strict" else "strict"
    return f"{kind} {name}"


# ---- comparisons -----------------------------------------------------------------------------------

def serialized(snap: snapshot.NodeSnapshot) -> dict:
    return {t: {n: a.SerializeToString(deterministic=True) for n, a in named.items()}
            for t, named in snap.packed.items()}


def assert_same_snapshots(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for node in want:
        assert got[node].node == want[node].node == node
        assert got[node].json == want[node].json, node
        assert serialized(got[node]) == serialized(want[node]), node
        assert got[node].versions == want[node].versions, node


def located(diagnostics) -> list:
    return [(d.severity, d.code, d.message, d.span.location() if d.span else d.path) for d in diagnostics]


def spans_of(value, out: list) -> list:
    """Every span of an AST in a fixed walk order (node by node, field by field)."""
    if isinstance(value, Span):
        out.append((value.source.path, value.start, value.end, value.text()))
    elif isinstance(value, tuple):
        for v in value:
            spans_of(v, out)
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            spans_of(getattr(value, name), out)
    return out


# ---- the tests -------------------------------------------------------------------------------------

def test_the_fleet_builder_gives_what_the_backend_emits_for_each_sidecar(tmp_path):
    """One emit of the whole fleet, split along the files' own references, equals emitting each
    sidecar alone (`snapshot.build`), for plaintext and mTLS, callers restricted or everyone
    allowed (a plaintext fleet whose sidecars share one CDS file), and the shipped example."""
    fleet = Fleet(4)
    for mtls, everyone in (("strict", False), ("disable", False), ("disable", True), ("strict", True)):
        fleet.mtls = mtls   # with `default allow` everywhere, every sidecar may call every service
        for svc in fleet.services.values():
            svc["open"] = everyone
        fleet.write(tmp_path / "main.mesh", tmp_path / "extra.mesh")
        compilation = api.compile([str(tmp_path / "main.mesh")])
        builder = snapshot.Builder()
        built = builder.build(compilation)
        assert_same_snapshots(built, {s.name: snapshot.build(compilation, s.name) for s in compilation.ir.services})
        services = {svc.name: svc for svc in compilation.ir.services}
        for node, snap in built.items():   # what the consistency check reads, found once per resource
            assert builder.references(node) == consistency.references(snap)
            assert consistency.references(snap)[snapshot.CLUSTER]
            assert snap.subsets == tuple(sub.name for sub in services[node].subsets) != ()
    shop = api.compile([str(Path(__file__).parent.parent / "examples" / "shop.mesh")])
    assert_same_snapshots(snapshot.Builder().build(shop),
                          {s.name: snapshot.build(shop, s.name) for s in shop.ir.services})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_reloads_equal_a_fresh_build_after_random_edits(tmp_path, seed):
    rng = random.Random(seed)
    main, extra = tmp_path / "main.mesh", tmp_path / "extra.mesh"
    fleet = Fleet(5)
    fleet.write(main, extra)
    builder = snapshot.Builder()
    build([str(main)], builder)
    done = []
    for step in range(14):
        if step == 7:   # a syntax error: the same located diagnostics as a fresh compile, then its fix
            main.write_text(main.read_text().replace("route r0 {", "route r0 {{", 1))
            with pytest.raises(BuildError) as err:
                build([str(main)], builder)
            assert located(err.value.diagnostics) == located(api.compile([str(main)]).diagnostics) != []
            fleet.write(main, extra)
        what = edit(fleet, rng)
        done.append(what)
        fleet.write(main, extra)
        got, diagnostics, watch = build([str(main)], builder)
        fresh = api.compile([str(main)], shard=False)
        assert located(diagnostics) == located(fresh.diagnostics), done
        want = snapshot.Builder().build(fresh)
        assert_same_snapshots(got, want)
        assert api.compile([str(main)], cache=builder.parses).ir_json() == fresh.ir_json(), done
        assert str(extra) in [os.path.abspath(p) for p in watch]   # (an import's display path may be relative)
    assert builder.parses.reused > 0 and len({d.split()[0] for d in done}) >= 5, done
    # and against the backend's own output for each sidecar alone, at the end
    final = api.compile([str(main)])
    assert_same_snapshots(got, {s.name: snapshot.build(final, s.name) for s in final.ir.services})


def test_a_reload_rebuilds_only_the_sidecars_an_edit_touches(tmp_path):
    """An edit of one service's authorization concerns its own sidecar's inbound listener (and,
    when it changes who may call it, the scope of the callers it adds or drops): every other
    sidecar keeps the very same snapshot object (so nothing is pushed to it), every rebuilt one
    has a new version, and a resource that several sidecars receive is packed once."""
    main, extra = tmp_path / "main.mesh", tmp_path / "extra.mesh"
    fleet = Fleet(6)
    fleet.services["s0"]["open"] = True   # `default allow`: every sidecar may call s0
    fleet.write(main, extra)
    builder = snapshot.Builder()
    before, _, _ = build([str(main)], builder)
    assert sorted(builder.rebuilt) == sorted(before)
    again, _, _ = build([str(main)], builder)
    assert builder.rebuilt == [] and all(again[n] is before[n] for n in before)
    fleet.services["s3"]["method"] = "POST"   # the same caller, another method
    fleet.write(main, extra)
    after, _, _ = build([str(main)], builder)
    assert builder.rebuilt == ["s3"]
    assert all(after[n] is before[n] for n in before if n != "s3")
    assert after["s3"].versions[snapshot.LISTENER] != before["s3"].versions[snapshot.LISTENER]
    fleet.services["s3"]["callers"] = ["s1"]   # another caller
    fleet.write(main, extra)
    again, _, _ = build([str(main)], builder)
    assert "s3" in builder.rebuilt and set(builder.rebuilt) <= {"s1", "s2", "s3"}
    for node in again:
        if node in builder.rebuilt:
            assert again[node].versions != after[node].versions
        else:
            assert again[node] is after[node]
    # s0's clusters, which every sidecar receives, are one object in all of them (packed once)
    shared = [snap.packed[snapshot.CLUSTER]["outbound|v1|s0"] for snap in again.values()]
    assert len(shared) == 6 and all(p is shared[0] for p in shared)


def test_the_item_cache_parses_like_the_parser(tmp_path):
    """Re-parsing through the cache after edits that move, change, duplicate and break items gives
    the parser's AST and spans, and the parser's diagnostics when the file does not parse."""
    fleet = Fleet(4)
    fleet.write(tmp_path / "main.mesh", tmp_path / "extra.mesh")
    text = (tmp_path / "main.mesh").read_text()
    cache = ItemCache()
    edits = [text,
             text.replace('"/a"', '"/a-much-longer-prefix"', 1),          # the items after it move
             text.replace("service s1 {", "# a comment\nservice s1 {", 1),  # comments between items
             text + "\n" + text.split("\n\n", 1)[1],                        # every item twice
             text.replace("route r0 {", "route r0 {{", 1),                   # a syntax error
             text.replace("port 8001", "port 99999999999999999999999", 1),  # a value error (E0302)
             text]
    for version in edits:
        got_diags, want_diags = Collector(), Collector()
        got = cache.parse(cache.source("p.mesh", version), got_diags)
        want = parse_source(SourceFile("p.mesh", version), want_diags)
        assert got == want
        assert spans_of(got, []) == spans_of(want, [])
        assert located(got_diags.sorted()) == located(want_diags.sorted())
    assert cache.reused > 0
