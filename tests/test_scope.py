"""Per-sidecar scoping (compiler/ir/scope.py, docs/semantics.md "Scope"): which destinations a
sidecar receives, what both backends emit for it, what a request to a destination outside the
scope gets in a real Envoy and in the native proxy, and the file layout of `--proxy all`.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from compiler import api
from compiler.backends.base import Link, Options
from compiler.ir import scope
from tests.envoy_support import requires_envoy
from tests.planes_support import BothPlanes

ROOT = Path(__file__).resolve().parent.parent

# `client` (namespace shop) and the destinations, one per way an authorization can admit it or not.
PROGRAM = '''
mesh { trust_domain "mesh.local" }
service client { port 8000  namespace "shop"  endpoints ["127.0.0.1:@APP@"]
  sidecar { inbound @INBOUND@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@" } }
service other { port 8001  namespace "ops"  endpoints ["127.0.0.1:@OTHER@"] }
service open { port 8010  endpoints ["127.0.0.1:@OPEN@"] }
service allowing { port 8011  endpoints ["127.0.0.1:@ALLOWING@"] }
service by_service { port 8012  endpoints ["127.0.0.1:@BY_SERVICE@"] }
service by_identity { port 8013  endpoints ["127.0.0.1:@BY_IDENTITY@"] }
service by_prefix { port 8014  endpoints ["127.0.0.1:@BY_PREFIX@"] }
service by_namespace { port 8015  endpoints ["127.0.0.1:@BY_NAMESPACE@"] }
service same_ns { port 8016  namespace "shop"  endpoints ["127.0.0.1:@SAME_NS@"] }
service anyone { port 8017  endpoints ["127.0.0.1:@ANYONE@"] }
service denying { port 8018  endpoints ["127.0.0.1:@DENYING@"] }
service closed { port 8020
  subset a { endpoints ["127.0.0.1:@CLOSED@"] }
  subset shadow { endpoints ["127.0.0.1:@SHADOW@"] } }
service deny_only { port 8021  endpoints ["127.0.0.1:@DENY_ONLY@"] }
service other_ns { port 8022  endpoints ["127.0.0.1:@OTHER_NS@"] }
service via { port 8030  endpoints ["127.0.0.1:@VIA@"] }

routes via {
  route to_closed { match { path prefix "/closed" } to closed.a  mirror closed.shadow 100% }
  route rest { to via.default }
}
routes closed { route all { to closed.a } }

authorization allowing { default allow  deny no_client { from service client } }
authorization by_service { default deny  allow a { from service [other, client]  path prefix "/x" } }
authorization by_identity { default deny  allow a { from identity "spiffe://mesh.local/ns/shop/sa/client" } }
authorization by_prefix { default deny  allow a { from identity "spiffe://mesh.local/ns/shop/*" } }
authorization by_namespace { default deny  allow a { from namespace "shop"  method GET } }
authorization same_ns { default deny  allow a { from same_namespace } }
authorization anyone { default deny  allow a { path prefix "/public" } }
authorization denying { default deny  allow a { from service other } }
authorization closed { default deny  allow a { from service other } }
authorization deny_only { default deny  deny a { from service client } }
authorization other_ns { default deny  allow a { from namespace ["ops", "shopping"] } }
authorization via { default deny  allow a { from service client } }
authorization client { default deny }
'''
IN_SCOPE = ["allowing", "anyone", "by_identity", "by_namespace", "by_prefix", "by_service", "open", "other", "same_ns",
            "via"]
OUT_OF_SCOPE = ["client", "closed", "denying", "deny_only", "other_ns"]
UPSTREAMS = ("app", "other", "open", "allowing", "by_service", "by_identity", "by_prefix", "by_namespace", "same_ns",
             "anyone", "denying", "closed", "shadow", "deny_only", "other_ns", "via")


def program_text() -> str:
    text = PROGRAM.replace("@INBOUND@", "15006").replace("@OUTBOUND@", "15001").replace("@ADMIN@", "15000")
    for i, name in enumerate(UPSTREAMS):
        text = text.replace(f"@{name.upper()}@", str(20000 + i))
    return text


@pytest.fixture(scope="module")
def compiled():
    comp = api.compile([api.Text("scope.mesh", program_text())], shard=False)
    assert not [d for d in comp.diagnostics if d.severity == "error"], comp.diagnostics
    return comp


# ---- the derivation ------------------------------------------------------------------------------

def test_the_scope_is_the_destinations_whose_authorization_can_admit_the_caller(compiled):
    """No block or `default allow` (deny rules or not), an allow rule without `from`, `from
    service`, `from identity` exact and `/*`, `from namespace`, `from same_namespace`: in scope.
    `default deny` whose allow rules name others, or with deny rules only: out, the caller
    itself included (`authorization client { default deny }`)."""
    s = scope.scope(compiled.ir, "client")
    assert list(s.hosts) == sorted(IN_SCOPE)
    assert not set(s.hosts) & set(OUT_OF_SCOPE)
    assert not s.full
    # what the routes of `via` send to (a `to` and a mirror of `closed`) is needed, not callable
    assert list(s.services) == sorted([*IN_SCOPE, "closed"])
    program = compiled.ir
    for name in IN_SCOPE:
        assert scope.admits(program.service(name), program.service("client"))
    for name in OUT_OF_SCOPE:
        assert not scope.admits(program.service(name), program.service("client"))


def test_one_scope_per_caller_and_the_full_scope(compiled):
    program = compiled.ir
    every = scope.scopes(program)
    assert set(every) == {s.name for s in program.services}
    assert every["client"] == scope.scope(program, "client")
    # `other` (namespace ops) is admitted by everything but deny_only, client and by_* of shop
    other = every["other"]
    assert "closed" in other.hosts and "denying" in other.hosts and "other_ns" in other.hosts
    assert "by_prefix" not in other.hosts and "client" not in other.hosts
    open_only = api.compile([api.Text("p.mesh", 'service a { port 1  endpoints ["10.0.0.1:1"] }\n'
                                                'service b { port 2  endpoints ["10.0.0.2:1"] }\n')],
                            shard=False).ir
    assert all(s.full and s.hosts == ("a", "b") == s.services for s in scope.scopes(open_only).values())


# ---- the backends ---------------------------------------------------------------------------------

def key(hosts) -> str:
    """names.scope_key, written again: SHA-256 of the destinations' names, one per line."""
    return hashlib.sha256("\n".join(hosts).encode()).hexdigest()[:16]


def test_both_backends_emit_the_scope_and_nothing_else(compiled):
    s = scope.scope(compiled.ir, "client")
    envoy = compiled.emit("envoy", ["client"], Options(bootstrap="xds", xds_dir="/x", output_dir="/x"))
    native = json.loads(compiled.emit("native", ["client"], Options()).files["client.native.json"])
    # Envoy: the files of its scope (not the whole program), no shared ones; a scope of one
    # sidecar (of those compiled) has them in the sidecar's own directory, without a link
    assert "xds/rds-outbound.json" not in envoy.files and "xds/cds.json" not in envoy.files
    assert not [k for k in envoy.files if "/scopes/" in k]
    where = "client"
    (routes,) = json.loads(envoy.files[f"xds/{where}/rds-outbound.json"])["resources"]
    assert [vh["name"] for vh in routes["virtual_hosts"]] == list(s.hosts)
    clusters = [c["name"] for c in json.loads(envoy.files[f"xds/{where}/cds.json"])["resources"]]
    program = compiled.ir
    assert clusters == [sub.cluster for name in s.services for sub in program.service(name).subsets] \
        + ["inbound|client"]
    lds = json.loads(envoy.files["xds/client/lds.json"])["resources"]
    outbound = next(listener for listener in lds if listener["name"] == "outbound")
    rds = outbound["filter_chains"][0]["filters"][0]["typed_config"]["rds"]
    assert rds["config_source"]["path_config_source"]["path"] == f"/x/{where}/rds-outbound.json"
    boot = json.loads(envoy.files["client.envoy.json"])   # its own CDS path: its scope's file itself
    assert boot["dynamic_resources"]["cds_config"]["path_config_source"]["path"] == "/x/client/cds.json"
    assert envoy.links == {}
    # native: the same destinations; `closed`, only reached by via's routes, without domains or routes
    services = {d["name"]: d for d in native["services"]}
    assert list(services) == list(s.services)
    assert [n for n, d in services.items() if d["domains"]] == list(s.hosts)
    assert services["closed"]["domains"] == [] and services["closed"]["routes"] == []
    assert [sub["cluster"] for sub in services["closed"]["subsets"]] == ["outbound|a|closed", "outbound|shadow|closed"]
    # a static bootstrap holds the same scope
    static = json.loads(compiled.emit("envoy", ["client"], Options(bootstrap="static")).files["client.envoy.json"])
    assert [c["name"] for c in static["static_resources"]["clusters"]] == clusters


def test_sidecars_of_one_scope_share_its_files():
    """examples/canary.mesh (mTLS): recommendations admits frontend only, so frontend alone can
    call every service and reads the shared routes; the six others share their scope's routes, but
    checkout, which a route of `cart` names as its `caller`, reads its own.
    Each sidecar has its own clusters (they name its own secrets), holding its own application's."""
    comp = api.compile([str(ROOT / "examples" / "canary.mesh")], shard=False)
    every = scope.scopes(comp.ir)
    assert [n for n, s in every.items() if s.full] == ["frontend"]
    files = comp.emit("envoy", sorted(every), Options(bootstrap="xds", xds_dir="/x", output_dir="/x")).files
    (shared,) = json.loads(files["xds/rds-outbound.json"])["resources"]
    assert [vh["name"] for vh in shared["virtual_hosts"]] == [s.name for s in comp.ir.services]
    others = every["cart"].hosts
    assert sorted(k for k in files if k.endswith("rds-outbound.json")) == [
        "xds/checkout/rds-outbound.json", "xds/rds-outbound.json", f"xds/scopes/{key(others)}/rds-outbound.json"]
    for name, s in every.items():
        assert s.full or s.hosts == others
        boot = json.loads(files[f"{name}.envoy.json"])["dynamic_resources"]["cds_config"]
        assert boot["path_config_source"]["path"] == f"/x/{name}/cds.json"
        cds = [c["name"] for c in json.loads(files[f"xds/{name}/cds.json"])["resources"]]
        assert [c for c in cds if c.startswith("inbound|")] == [f"inbound|{name}"]
        assert ("outbound|v1|recommendations" in cds) == s.full
    # without mTLS, one CDS file per scope too, with the applications of the sidecars sharing it
    plain = api.compile([api.Text("p.mesh", 'service a { port 1  endpoints ["10.0.0.1:1"] }\n'
                                            'service b { port 2  endpoints ["10.0.0.2:1"] }\n'
                                            'service c { port 3  endpoints ["10.0.0.3:1"] }\n'
                                            'authorization a { default deny  allow x { from service c } }\n')],
                        shard=False)
    files = plain.emit("envoy", ["a", "b", "c"], Options(bootstrap="xds", xds_dir="/x", output_dir="/x")).files
    k = key(("b", "c"))
    assert sorted(k for k in files if k.startswith("xds/")) == [
        "xds/a/lds.json", "xds/b/lds.json", "xds/c/lds.json", "xds/cds.json", "xds/rds-outbound.json",
        f"xds/scopes/{k}/cds.json", f"xds/scopes/{k}/rds-outbound.json"]
    assert [c["name"] for c in json.loads(files["xds/cds.json"])["resources"]] == [
        "outbound|default|a", "outbound|default|b", "outbound|default|c", "inbound|c"]
    assert [c["name"] for c in json.loads(files[f"xds/scopes/{k}/cds.json"])["resources"]] == [
        "outbound|default|b", "outbound|default|c", "inbound|a", "inbound|b"]
    assert json.loads(files["b.envoy.json"])["dynamic_resources"]["cds_config"]["path_config_source"]["path"] == \
        "/x/b/cds.json"
    links = plain.emit("envoy", ["a", "b", "c"], Options(bootstrap="xds", xds_dir="/x", output_dir="/x")).links
    scoped = Link(f"../scopes/{k}/cds.json")
    assert links == {"xds/a/cds.json": scoped, "xds/b/cds.json": scoped, "xds/c/cds.json": Link("../cds.json")}


# ---- both planes: the out-of-scope answer --------------------------------------------------------

def send(port: int, host: str, target: str = "/x") -> tuple[int, str | None, bytes]:
    """One GET on a fresh connection: (status, x-backend, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data and (chunk := s.recv(65536)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                       if line.lower().startswith("content-length:")), None)
        while (length is None or len(body) < length) and (chunk := s.recv(65536)):
            body += chunk
    backend = next((line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith("x-backend:")),
                   None)
    return int(lines[0].split()[1]), backend, body


@pytest.fixture(scope="module")
def planes(tmp_path_factory):
    p = BothPlanes(tmp_path_factory.mktemp("scope"), PROGRAM, UPSTREAMS, warnings_allowed=True)
    yield p
    p.close()


@requires_envoy
@pytest.mark.parametrize("plane", ["envoy", "native"])
def test_a_destination_outside_the_scope_gets_what_an_unknown_host_gets(planes, plane):
    port = planes.listener_ports[plane, "outbound"]
    unknown = send(port, "nowhere")
    assert unknown == (404, None, b"")
    for name in OUT_OF_SCOPE:
        for host in (name, f"{name}.default", name.upper()):
            assert send(port, host) == unknown, (plane, host)
    # in scope: routed as before, to the destination's own upstream
    for name in IN_SCOPE:
        status, backend, _ = send(port, name, "/x" if name != "anyone" else "/public")
        assert (status, backend) == (200, name), (plane, name)
    # `via` sends /closed to closed.a, outside the scope by Host but in by its routes
    assert send(port, "via", "/closed/1")[:2] == (200, "closed")
    assert send(port, "closed", "/closed/1") == unknown


@requires_envoy
def test_both_planes_answer_an_out_of_scope_request_byte_for_byte_alike(planes):
    """Status, body and the reply's own headers (but the date) agree."""
    def raw(port: int) -> list[str]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /x HTTP/1.1\r\nhost: closed\r\nconnection: close\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data and (chunk := s.recv(65536)):
                data += chunk
        head = data.partition(b"\r\n\r\n")[0].decode("latin-1").lower().split("\r\n")
        return sorted(line for line in head if not line.startswith("date:"))

    assert raw(planes.listener_ports["envoy", "outbound"]) == raw(planes.listener_ports["native", "outbound"])


# ---- the layout of `--proxy all`: pairs, not the square of the fleet -------------------------------

def fleet_bytes(n: int, mtls: str, tmp: Path, near_dense: bool = False) -> tuple[int, int]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from compile_scale import generate
    finally:
        sys.path.pop(0)
    text = generate(n, mtls=mtls)
    if near_dense:   # every service admits everyone but svc0, which admits svc1 only
        head, sep, rest = text.partition("authorization svc1 {")
        text = head + sep + rest.replace("default deny", "default allow")
    comp = api.compile([api.Text("fleet.mesh", text)], shard=False)
    names = [s.name for s in comp.ir.services]
    files = comp.emit("envoy", names, Options(bootstrap="xds", xds_dir=str(tmp), output_dir=str(tmp))).files
    return len(files), sum(len(b) for b in files.values())


@pytest.mark.parametrize("mtls", ["strict", "disable"])
def test_the_fleet_layout_grows_with_the_pairs(mtls, tmp_path):
    """benchmarks/compile_scale.py's fleet: each service admits one caller, so a sidecar's scope
    is one destination and the output is linear in the fleet (before scoping, with mTLS, each
    sidecar's CDS file held every cluster: 20 -> 40 services multiplied the bytes by about 4)."""
    files20, bytes20 = fleet_bytes(20, mtls, tmp_path)
    files40, bytes40 = fleet_bytes(40, mtls, tmp_path)
    assert files40 == 2 * files20
    assert 1.8 < bytes40 / bytes20 < 2.2


def test_a_nearly_dense_plaintext_fleet_shares_its_scopes_files(tmp_path):
    """svc0 admits svc1 only, every other service everyone: svc1 can call every service, every
    other sidecar every service but svc0. Two scopes, so two RDS and two CDS files, and the
    output stays linear (one file per sidecar would make it the square of the fleet: 20 -> 40
    services, about 4 times the bytes)."""
    files20, bytes20 = fleet_bytes(20, "disable", tmp_path, near_dense=True)
    files40, bytes40 = fleet_bytes(40, "disable", tmp_path, near_dense=True)
    assert files20 == 2 * 20 + 4 and files40 == 2 * 40 + 4
    assert 1.8 < bytes40 / bytes20 < 2.2


def test_check_does_not_load_the_scope():
    """`meshc check` starts as before: the derivation is the backends' (and `--emit ir`'s not)."""
    import subprocess

    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "compiler", "check", "examples/shop.mesh"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert proc.returncode == 0
    assert "compiler.ir.scope" not in proc.stderr


@requires_envoy
def test_every_scoped_file_of_a_fleet_validates(tmp_path):
    """The `--proxy all` layout of PROGRAM (several scopes) and of a program where `a` can call
    nothing (an empty scope: a route table without virtual hosts), and static bootstraps, through
    `envoy --mode validate`: each sidecar's xds files as one static bootstrap (the clusters its
    CDS file holds, the routes its listener names)."""
    from tests.envoy_support import flat_files, static_from_xds, validate

    empty = ('service a { port 1  endpoints ["127.0.0.1:20001"] }\n'
             'service b { port 2  endpoints ["127.0.0.1:20002"] }\n'
             'authorization a { default deny }\nauthorization b { default deny  allow x { from service b } }\n')
    paths = []
    for label, text in (("program", program_text()), ("empty", empty)):
        comp = api.compile([api.Text(f"{label}.mesh", text)], shard=False)
        every = scope.scopes(comp.ir)
        out = tmp_path / label
        files = flat_files(comp.emit("envoy", sorted(every), Options(bootstrap="xds", xds_dir=str(out / "xds"),
                                                                     output_dir=str(out))))
        for rel, data in files.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(data)
        for name in sorted(every):
            path = tmp_path / f"{label}-{name}.json"
            path.write_text(json.dumps(static_from_xds(str(out), name)))
            paths.append(str(path))
        first = sorted(every)[0]
        path = tmp_path / f"{label}-static.json"
        path.write_bytes(comp.emit("envoy", [first], Options(bootstrap="static")).files[f"{first}.envoy.json"])
        paths.append(str(path))
        if label == "empty":
            assert every["a"].hosts == () and len({s.hosts for s in every.values()}) == 2
        else:
            assert len({s.hosts for s in every.values()}) >= 3
    failures = [(p, why) for p in paths for ok, why in [validate(p)] if not ok]
    assert not failures, failures


# ---- a scope change reaches a running file-based Envoy --------------------------------------------

SCOPE_EDIT = '''
service c { port 8000  endpoints ["127.0.0.1:@APP@"]
  sidecar { inbound @INBOUND@  outbound @OUTBOUND@  admin @ADMIN@  app "127.0.0.1:@APP@" } }
service d { port 8001  endpoints ["127.0.0.1:@D@"] }
service e { port 8002  endpoints ["127.0.0.1:@E@"] }
authorization c { default deny  allow x { from service e } }
authorization d { default deny  allow x { from service @D_ADMITS@ } }
'''


@requires_envoy
def test_a_scope_change_reaches_a_running_file_based_envoy_without_restart(tmp_path):
    """`--proxy all` (plaintext, file-based xds bootstraps): c and d share a scope (they can call
    e only). An edit of d's authorization that admits c moves c to a new scope, of c alone:
    recompiled into the same directory, c's running Envoy (same process, no restart) reaches d,
    because its bootstrap names its own CDS path (xds/c/cds.json), a link to its scope's file that
    the compile replaces with the new scope's file itself, and its listeners name the new routes
    file (xds/c/rds-outbound.json); the edit undone, c is back in the first scope (the link again),
    and its own routes file, named by no listener any more, is removed. An edit inside the scope
    (e's endpoint moved to another backend) rewrites the scope's file and replaces the link: the
    running Envoy follows it too."""
    from tests.envoy_support import Backend, Envoy, free_port, request, run_meshc, validate

    d, e, e2, app = Backend("d"), Backend("e"), Backend("e2"), Backend("app")
    ports = {"INBOUND": free_port(), "OUTBOUND": free_port(), "ADMIN": free_port(), "APP": app.port,
             "D": d.port, "E": e.port}
    path, out = tmp_path / "p.mesh", tmp_path / "out"

    def compile_with(admits: str) -> str:
        text = SCOPE_EDIT.replace("@D_ADMITS@", admits)
        for k, v in ports.items():
            text = text.replace(f"@{k}@", str(v))
        path.write_text(text)
        proc = run_meshc("compile", str(path), "--target", "envoy", "--proxy", "all", "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    def call(host: str) -> int:
        return request(ports["OUTBOUND"], "/x", headers={"host": host})[0]

    def backend(host: str) -> str | None:
        return request(ports["OUTBOUND"], "/x", headers={"host": host})[1].get("x-backend")

    def until(what, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert time.monotonic() < deadline, envoy.output()
            time.sleep(0.1)

    compile_with("e")
    link = out / "xds" / "c" / "cds.json"
    d_link = out / "xds" / "d" / "cds.json"
    first = os.readlink(link)
    inode = os.lstat(link).st_ino
    compile_with("e")   # nothing changed: the link is left alone (a watching Envoy reloads nothing)
    assert os.lstat(link).st_ino == inode
    assert first.startswith("../scopes/") and os.readlink(out / "xds" / "d" / "cds.json") == first
    assert json.loads((out / "c.envoy.json").read_text())["dynamic_resources"]["cds_config"][
        "path_config_source"]["path"] == f"{out}/xds/c/cds.json"
    ok, why = validate(str(out / "c.envoy.json"))
    assert ok, why
    envoy = Envoy(str(out / "c.envoy.json"))
    try:
        pid = envoy.proc.pid
        assert call("e") == 200 and call("d") == 404   # d: out of c's scope
        started = time.monotonic()
        compile_with("[e, c]")
        # c and d each alone in a scope now: each scope's files in its sidecar's own directory,
        # renamed over the links (a rename, which the watch sees); the shared scope is unused
        assert not link.is_symlink() and not d_link.is_symlink()
        until(lambda: call("d") == 200)
        print(f"c reaches d {time.monotonic() - started:.2f} s after the recompile started, no restart")
        assert call("e") == 200 and envoy.proc.pid == pid and envoy.proc.poll() is None
        assert not (out / "xds" / os.path.dirname(first[3:])).exists(), "the shared scope is removed"
        assert (out / "xds" / "c" / "rds-outbound.json").is_file()

        stderr = compile_with("e")   # undone: c and d share a scope again, links to its files
        assert os.readlink(link) == first == os.readlink(d_link)
        until(lambda: call("d") == 404)
        assert call("e") == 200 and envoy.proc.pid == pid
        assert not (out / "xds" / "c" / "rds-outbound.json").exists()
        # c's own files, recorded in the output's manifest, removed once the new files are in place
        assert "xds/c/rds-outbound.json" in stderr and "stale file" in stderr, stderr

        ports["E"] = e2.port   # the same scope, its clusters changed: the file rewritten, the link replaced
        compile_with("e")
        assert os.readlink(link) == first
        until(lambda: backend("e") == "e2")
        assert call("d") == 404 and envoy.proc.pid == pid
    finally:
        envoy.stop()
        for b in (d, e, e2, app):
            b.close()


def test_a_partial_compile_keeps_the_scope_of_a_sidecar_under_a_service_named_as_its_namespace(tmp_path):
    """`prod/reviews`'s files stand in xds/prod/reviews/ next to the sidecar `prod`'s (xds/prod/lds.json):
    a later `--proxy secret` into the same directory sweeps the scopes no sidecar uses, and must read
    xds/prod/reviews/ too (it once deleted that sidecar's scope: its cds.json link left dangling)."""

    src = tmp_path / "stale.mesh"
    src.write_text("".join(f'service {name} {{ port {port}  {ns}endpoints ["10.0.{i}.1:{port}"] }}\n'
                           for i, (name, port, ns) in enumerate([
                               ("reviews", 9080, 'namespace "prod"  '), ("reviews", 9080, 'namespace "staging"  '),
                               ("prod", 9000, 'namespace "prod"  '), ("secret", 9100, ""), ("secret2", 9200, ""),
                               ("third", 9300, "")]))
                   # third shares prod/reviews's scope: the scope has files of its own, and the link
                   + "authorization secret { default deny  allow { from service [prod/reviews, third] } }\n"
                   + "authorization secret2 { default deny  allow { from service prod } }\n")
    out = tmp_path / "out"

    from tests.envoy_support import run_meshc

    def compile_(proxy: str) -> str:
        proc = run_meshc("compile", str(src), "--target", "envoy", "--proxy", proxy, "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    compile_("all")
    link = out / "xds" / "prod" / "reviews" / "cds.json"
    assert link.is_symlink() and link.exists()
    compile_("secret")
    assert link.exists(), "the scope of prod/reviews was removed"
    for cds in (out / "xds").rglob("cds.json"):
        assert cds.exists(), cds


def test_a_partial_compile_leaves_the_applications_of_the_sidecars_not_compiled_in_their_scope(tmp_path):
    """A scope's CDS file holds the application clusters of every sidecar sharing it (without mTLS).
    `--proxy a --proxy b --bootstrap xds` into the directory of a `--proxy all` compile, where a, b
    and c share a scope (and d and e the whole program's), once rewrote the shared file with a's and
    b's only: c's Envoy lost `inbound|c`, its inbound listener's cluster. A compile of some sidecars
    now gives each of them its own CDS file and leaves the shared ones as they are."""
    from tests.envoy_support import run_meshc

    src = tmp_path / "p.mesh"
    src.write_text('mesh { mtls disable }\n'
                   + "".join(f'service {n} {{ port {i + 1}  endpoints ["10.0.0.{i + 1}:80"] }}\n'
                             for i, n in enumerate("abcdex"))
                   # a, b, c and x may not call x: their scope is (a, b, c, d, e); d and e may call all
                   + "authorization x { default deny  allow { from service [d, e] } }\n")
    out = tmp_path / "out"

    def compile_(*proxies: str) -> None:
        args = [arg for p in proxies for arg in ("--proxy", p)]
        proc = run_meshc("compile", str(src), "--target", "envoy", *args, "--bootstrap", "xds", "-o", str(out))
        assert proc.returncode == 0, proc.stderr

    def apps(sidecar: str) -> list[str]:
        """The application clusters in the CDS file that the sidecar's bootstrap names."""
        doc = json.loads((out / "xds" / sidecar / "cds.json").read_text())
        return sorted(c["name"] for c in doc["resources"] if c["name"].startswith("inbound|"))

    def snapshot() -> dict[str, bytes | str]:
        return {str(p.relative_to(out)): os.readlink(p) if p.is_symlink() else p.read_bytes()
                for p in out.rglob("*") if p.is_symlink() or p.is_file()}

    compile_("all")
    fresh = snapshot()
    shared = ["inbound|a", "inbound|b", "inbound|c", "inbound|x"]
    assert apps("c") == shared and (out / "xds" / "c" / "cds.json").is_symlink()
    assert apps("d") == ["inbound|d", "inbound|e"]
    compile_("a", "b")
    assert apps("c") == apps("x") == shared   # the shared file as it was
    assert apps("a") == ["inbound|a"] and not (out / "xds" / "a" / "cds.json").is_symlink()
    compile_("d")
    assert apps("e") == ["inbound|d", "inbound|e"] and apps("d") == ["inbound|d"]
    compile_("all")   # every sidecar again: the fleet's layout, as a compile into an empty directory
    assert snapshot() == fresh
