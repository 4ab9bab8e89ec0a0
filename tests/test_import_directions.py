"""The architecture as import rules (docs/architecture.md, "Import rules").

The compiler is a pipeline of layers, each of which may import only the layers below it:

    language  <  core  <  ir, syntax  <  semantic  <  lower  <  api (and sharding)  <  tooling  <  cli
                          ir  <  backends (which read the IR and report diagnostics, nothing else)
                 core, language  <  ca
    api, backends, ir (and what they import)  <  control  <  cli (`meshc serve` and `meshc status` only)

The proxy never imports the compiler; its pure decisions never import its I/O; the independent
evaluator of Envoy's configuration (the package envoy_eval, run by `meshc test`) imports neither the
compiler nor the proxy, so that it checks both from the outside. And nothing imports in a circle.
Every import counts, including the ones inside functions (made late for start-up time).
"""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# layer -> the compiler packages it may import (itself always included)
COMPILER_LAYERS: dict[str, set[str]] = {
    "compiler.language": set(),
    "compiler.core": {"compiler.language"},
    "compiler.ir": {"compiler.core", "compiler.language"},
    "compiler.syntax": {"compiler.core", "compiler.language"},
    "compiler.semantic": {"compiler.core", "compiler.language", "compiler.syntax", "compiler.ir"},
    "compiler.lower": {"compiler.core", "compiler.language", "compiler.syntax", "compiler.semantic", "compiler.ir"},
    "compiler.backends": {"compiler.core", "compiler.ir"},
    "compiler.api": {"compiler.core", "compiler.language", "compiler.syntax", "compiler.semantic", "compiler.lower",
                     "compiler.ir", "compiler.backends", "compiler.sharding", "compiler.kubeschema"},
    "compiler.sharding": {"compiler.core", "compiler.language", "compiler.syntax", "compiler.semantic",
                          "compiler.lower", "compiler.ir"},
    "compiler.ca": {"compiler.core", "compiler.language"},
    # The control plane (`meshc serve`): the compile API, the backends and the IR; grpc and the
    # Envoy protos are imported here only, and nothing in the compiler but the CLI imports it.
    # `ca`: the certificates `meshc serve --ca` issues (compiler/control/sds.py only).
    "compiler.control": {"compiler.core", "compiler.language", "compiler.syntax", "compiler.semantic",
                         "compiler.lower", "compiler.ir", "compiler.backends", "compiler.api", "compiler.sharding",
                         "compiler.ca"},
    # The offline validator of Kubernetes objects against the vendored CRDs (`--target istio|gateway-api`).
    "compiler.kubeschema": {"compiler.core"},
    # `meshc stat`'s pure parts: Prometheus text, rates and percentiles, the table.
    "compiler.observe": set(),
    "compiler.tooling": {"compiler.core", "compiler.language", "compiler.syntax", "compiler.semantic",
                         "compiler.lower", "compiler.ir", "compiler.backends", "compiler.api", "compiler.sharding",
                         "compiler.kubeschema"},
    # Verification (compiler/verify, issue 15): `meshc check`'s assert prover and `meshc test`: the
    # compile API and what it returns, and, alone in the compiler
    # besides the CLI, the proxy's decisions (VERIFY_PROXY) and the independent Envoy evaluator.
    # `ca`: the throw-away CA of `--live` (compiler/verify/live.py only).
    "compiler.verify": {"compiler.core", "compiler.language", "compiler.syntax", "compiler.semantic",
                        "compiler.lower", "compiler.ir", "compiler.backends", "compiler.api", "compiler.sharding",
                        "compiler.ca"},
}
# What `meshc test` runs of the proxy: its request decision, its config contract and loading, and
# the HTTP/1 head callbacks of its downstream connection (so that a test's request is parsed as
# the proxy parses it); and, with --live, the proxy itself as a process.
VERIFY_PROXY = ("runtime_proxy.decide", "runtime_proxy.config", "runtime_proxy.net.server")
# What a backend may use of the core: the shared diagnostic types, nothing of the front end.
BACKEND_CORE = {"compiler.core.diagnostics", "compiler.core.source"}


def module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def is_package(name: str) -> bool:
    return os.path.isfile(os.path.join(ROOT, *name.split("."), "__init__.py"))


def is_module(name: str) -> bool:
    return is_package(name) or os.path.isfile(os.path.join(ROOT, *name.split(".")) + ".py")


def imported_modules(path: str) -> set[str]:
    """Every module a file imports, anywhere in it; `from PKG import NAME` counts as PKG.NAME
    when that is a module."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), path)
    here = module_name(path)
    package = here if is_package(here) else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names if is_module(f"{base}.{alias.name}")}
            found |= submodules
            if len(submodules) < len(node.names):  # something defined in the package itself
                found.add(base)
    return found


def python_files(*folders: str):
    for folder in folders:
        for root, _, names in os.walk(os.path.join(ROOT, folder)):
            for name in sorted(names):
                if name.endswith(".py"):
                    yield os.path.join(root, name)


def ours(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in ("compiler", "runtime_proxy")}


def layer_of(module: str, layers) -> str | None:
    return next((layer for layer in layers if module == layer or module.startswith(layer + ".")), None)


def test_runtime_proxy_never_imports_the_compiler():
    files = list(python_files("runtime_proxy"))
    assert files, "runtime_proxy has no Python files"
    for path in files:
        bad = {m for m in imported_modules(path) if m.split(".")[0] == "compiler"}
        assert not bad, f"{path} imports {bad}"


def test_compiler_layers_import_only_the_layers_below():
    checked = 0
    for path in python_files("compiler"):
        here = module_name(path)
        layer = layer_of(here, COMPILER_LAYERS)
        if layer is None:
            continue  # compiler/__init__.py, __main__.py and the CLI may import anything
        checked += 1
        allowed = COMPILER_LAYERS[layer] | {layer, "compiler"}
        for m in ours(imported_modules(path)):
            if m.split(".")[0] == "runtime_proxy":
                if layer == "compiler.verify" and (m == "runtime_proxy" or m.startswith(VERIFY_PROXY)
                                                   or m.startswith("runtime_proxy.decide")):
                    continue   # the same decision and config contract the proxy runs
                raise AssertionError(f"{here} imports the proxy ({m}): only the CLI may start it")
            target = layer_of(m, list(COMPILER_LAYERS) + ["compiler.cli"])
            assert target is None or target in allowed, f"{here} ({layer}) imports {m} ({target})"
            if layer == "compiler.backends" and target == "compiler.core":
                assert m in BACKEND_CORE, f"{here}: a backend uses {m} of the core (only diagnostics may be)"
    assert checked > 50


def test_only_the_cli_imports_meshc_test_and_the_evaluator_is_reached_through_it():
    for path in python_files("compiler"):
        here = module_name(path)
        imported = imported_modules(path)
        if not here.startswith(("compiler.cli", "compiler.verify")):
            bad = {m for m in imported if m.startswith("compiler.verify") or m.split(".")[0] == "envoy_eval"}
            assert not bad, f"{here} imports {bad}: only `meshc test` (the CLI) runs the tests"


def test_nothing_below_the_cli_imports_it():
    for path in python_files("compiler"):
        here = module_name(path)
        if here in ("compiler.__main__",) or here.startswith("compiler.cli"):
            continue
        bad = {m for m in imported_modules(path) if m == "compiler.cli" or m.startswith("compiler.cli.")}
        assert not bad, f"{here} imports the CLI: {bad}"


def test_only_the_cli_imports_the_control_plane_and_only_the_control_plane_imports_grpc():
    for path in python_files("compiler"):
        here = module_name(path)
        imported = imported_modules(path)
        if not here.startswith("compiler.cli") and not here.startswith("compiler.control"):
            bad = {m for m in imported if m == "compiler.control" or m.startswith("compiler.control.")}
            assert not bad, f"{here} imports the control plane: {bad}"
        if not here.startswith("compiler.control"):
            bad = {m for m in imported if m.split(".")[0] in ("grpc", "envoy", "xds", "udpa")
                   or m.startswith("google.protobuf")}
            assert not bad, f"{here} imports {bad}: grpc and the protos belong to compiler/control"
    cli = {m for p in python_files(os.path.join("compiler", "cli")) for m in imported_modules(p)
           if m.startswith("compiler.control")}
    # `meshc serve` (with --ca, its certificates) and `meshc status`
    assert cli == {"compiler.control.serve", "compiler.control.sds", "compiler.control.status"}, cli


GRPC_AND_PROTOS = ("grpc", "envoy", "xds", "udpa")
XDS_CLIENT = "runtime_proxy.xds_client"


def test_only_the_proxys_xds_helper_imports_grpc_and_nothing_of_the_proxy_imports_the_helper():
    """`meshc proxy --xds-server` runs its xDS client as a separate process (runtime_proxy/xds_client.py,
    spawned by runtime_proxy/net/xds_link.py): the serving process never loads gRPC or the protos
    (about 20 MB of RSS, and gRPC's core is not fork-safe while the proxy forks its config loader)."""
    checked = 0
    for path in python_files("runtime_proxy"):
        here = module_name(path)
        imported = imported_modules(path)
        assert XDS_CLIENT not in imported, f"{here} imports the xDS helper: it runs only as its own process"
        if here == XDS_CLIENT:
            checked += 1
            assert {m for m in imported if m.split(".")[0] == "grpc"}, "the helper is where grpc is imported"
            bad = {m for m in ours(imported) if m.startswith("runtime_proxy.net")}
            assert not bad, f"the xDS helper imports the serving process's I/O: {bad}"
            continue
        bad = {m for m in imported if m.split(".")[0] in GRPC_AND_PROTOS or m.startswith("google.")}
        assert not bad, f"{here} imports {bad}: only {XDS_CLIENT} (its own process) may"
    assert checked == 1


def test_the_backends_do_not_import_each_other():
    for target, other in (("envoy", "native"), ("native", "envoy")):
        for path in python_files(os.path.join("compiler", "backends", target)):
            bad = {m for m in imported_modules(path) if m.startswith(f"compiler.backends.{other}")}
            assert not bad, f"{path} imports {bad}"


def test_proxy_decisions_never_import_its_io():
    files = list(python_files(os.path.join("runtime_proxy", "decide")))
    assert files
    for path in files:
        bad = {m for m in ours(imported_modules(path)) if not m.startswith("runtime_proxy.decide")}
        assert not bad, f"{path}: a decision imports {bad} (decisions import only other decisions)"


def test_the_config_contract_imports_no_io():
    for path in python_files(os.path.join("runtime_proxy", "config")):
        bad = {m for m in ours(imported_modules(path)) if m.startswith("runtime_proxy.net")}
        assert not bad, f"{path} imports {bad}"


def test_the_envoy_evaluator_imports_neither_the_compiler_nor_the_proxy():
    paths = list(python_files("envoy_eval"))
    assert paths, "the evaluator's package envoy_eval is missing"
    for path in paths:
        bad = {m for m in imported_modules(path) if m.split(".")[0] in ("compiler", "runtime_proxy", "tests")}
        assert not bad, f"{path}: the independent Envoy evaluator imports {bad}"


def test_no_import_cycles():
    graph: dict[str, set[str]] = {}
    for path in python_files("compiler", "runtime_proxy"):
        here = module_name(path)
        graph[here] = {m for m in ours(imported_modules(path)) if is_module(m) and m != here}
    # a package's __init__ is imported by its submodules implicitly; only written imports count here
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"
