"""`meshc diff`'s engine: two compiled programs, every request class that either can tell apart,
and the outcome of each through the native proxy's own decision function.

For each destination service (of OLD or NEW), the candidate requests are the product, over the
dimensions of a request, of one representative per region (compiler/cli/diff_space.py): the
normalised path, the method, each header and query parameter that a route or an authorization rule
of OLD or NEW names (absent, or one value per region), each header a route's request header
changes name (absent, or present), and the caller: every service of OLD or
NEW (its outbound sidecar, then the destination's inbound one, over mTLS when the destination
takes it), an identity outside the program per region of the identities the rules name (straight
to the destination's inbound sidecar, over mTLS), and a caller without an identity (plaintext).
Each candidate is decided by `runtime_proxy.decide.request.decide_request` on the compiled native
tables of OLD and of NEW: the outbound decision at the caller's sidecar, then, with the request
as that sidecar sends it upstream, the inbound decision at the destination's (over mTLS with the
`x-forwarded-client-cert` line its sidecar writes, as `meshc trace` does). An outcome is what a
caller can observe: a local reply's status, or the destination subset (a split: its ordered
weights and key header), the timeout, the retry policy, the fault, the mirror, the request as
sent upstream, the route's response header changes (on a sample response with one line per header
name a route of the destination changes on either side), and the authorization answer. The names of
routes and rules are not part of it (renaming changes nothing), only explained.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

from compiler.cli.diff_space import (
    HEADER_POOL,
    IDENTITY_POOL,
    PATH_POOL,
    QUERY_POOL,
    Condition,
    regions,
)
from compiler.cli.trace_run import stand_in_xfcc
from compiler.ir.names import host_of
from runtime_proxy.decide.http import decode_value, encode_value
from runtime_proxy.decide.request import Draws, Head, decide_request, header_dict
from runtime_proxy.decide.response import response_lines
from runtime_proxy.decide.table import Table, compile_config

MAX_REQUESTS = 20000          # candidate requests per destination, beyond which the answer is "unknown"
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")
_ONE = 1.0 - 2.0 ** -40
UNAUTHENTICATED = "(no identity)"
SAMPLE_VALUE = "sample"      # the value of each response header line of a destination's sample response


class DiffInputError(Exception):
    """A side that cannot be read (a bad revision, a missing path): a usage error, exit 2."""


@dataclass
class Side:
    label: str                         # as written on the command line
    files: list[str]                   # the paths compiled (relative to `root` when a revision)
    root: str | None = None            # a temporary checkout of a revision's .mesh files, else None
    here: str | None = None            # in it, the working directory's place (the files are relative to it)
    comp: Any = None
    ir: Any = None
    tables: dict[str, Table] = field(default_factory=dict)

    def cleanup(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


# ---- reading a side: files, directories, git revisions ------------------------------------------

def _git(args: list[str], **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, **kw)


def is_revision(spec: str) -> bool:
    if os.path.exists(spec):
        return False
    try:
        r = _git(["rev-parse", "--verify", "--quiet", spec + "^{commit}"])
    except OSError:
        return False
    return r.returncode == 0


def from_revision(rev: str, paths: list[str]) -> Side:
    """The .mesh files of `paths` (relative to the working directory) as they were in `rev`, with
    every .mesh file of that revision beside them, so that imports resolve within it."""
    top = _git(["rev-parse", "--show-toplevel"], text=True)
    prefix = _git(["rev-parse", "--show-prefix"], text=True)
    if top.returncode != 0:
        raise DiffInputError(f"`{rev}` is not a path, and this is not a git repository")
    listing = _git(["ls-tree", "-r", "-z", "--full-name", "--name-only", rev])
    if listing.returncode != 0:
        raise DiffInputError(f"not a revision of this repository: {rev}")
    names = [n for n in listing.stdout.decode("utf-8", "replace").split("\0") if n.endswith(".mesh")]
    root = tempfile.mkdtemp(prefix="meshc-diff-")
    try:
        for name in names:
            blob = _git(["show", f"{rev}:{name}"])
            if blob.returncode != 0:
                raise DiffInputError(f"cannot read {name} at {rev}")
            dest = os.path.join(root, name)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as f:
                f.write(blob.stdout)
        here = os.path.join(root, prefix.stdout.strip())
        os.makedirs(here, exist_ok=True)
        files: list[str] = []
        top_real = os.path.realpath(top.stdout.strip())
        for p in paths:
            # a path outside the repository has no version at `rev`: refused, never read from the
            # working tree on both sides
            if os.path.commonpath([os.path.realpath(p), top_real]) != top_real:
                raise DiffInputError(f"{p} is outside the git repository ({top_real}): it has no version at {rev}")
            rel = os.path.normpath(os.path.relpath(os.path.abspath(p), os.getcwd()))
            full = os.path.join(here, rel)
            if os.path.isdir(full):
                found = []
                for dirpath, dirs, fnames in os.walk(full):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    found += [os.path.relpath(os.path.join(dirpath, n), here) for n in sorted(fnames)
                              if n.endswith(".mesh")]
                files += found
            elif os.path.isfile(full):
                files.append(rel)
            else:
                raise DiffInputError(f"{p} does not exist at {rev}")
        if not files:
            raise DiffInputError(f"no .mesh files in {', '.join(paths)} at {rev}")
        return Side(rev, files, root, here)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def compile_side(side: Side) -> list:
    """Compile a side; its diagnostics (errors make the diff an input error, exit 1)."""
    from compiler import api

    here = side.here
    cwd = os.getcwd()
    if here is not None:
        os.chdir(here)   # the revision's paths read as the working tree's
    try:
        comp = api.compile(side.files, shard=False)
        side.comp = comp
        if comp.has_errors:
            return comp.diagnostics
        side.ir = comp.ir
        # one table per service, by its name (a workload's sidecar decides as its service's: language §5.9)
        emitted = comp.emit("native", [s.name for s in side.ir.services])
    finally:
        os.chdir(cwd)
    errors = [d for d in emitted.diagnostics if d.severity == "error"]
    if errors:
        return errors
    for path, data in emitted.files.items():
        if path.endswith(".native.json"):
            side.tables[path[:-len(".native.json")]] = compile_config(json.loads(data))
    return []


# ---- the request space ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    query: tuple[tuple[str, str], ...]

    @property
    def target(self) -> str:
        if not self.query:
            return self.path
        return self.path + "?" + "&".join(f"{n}={v}" for n, v in self.query)

    def size(self) -> tuple[int, int, int, str]:
        return (len(self.headers) + len(self.query), len(self.target), sum(len(v) for _, v in self.headers),
                self.show())

    def show(self) -> str:
        text = f"{self.method} {self.target}"
        for n, v in self.headers:
            text += f"  {n}: {v}"
        return text

    def to_data(self) -> dict:
        return {"method": self.method, "path": self.path, "query": dict(self.query), "headers": dict(self.headers)}


@dataclass
class Space:
    requests: list[Request]
    identities: list[str]          # identities outside the program, one per region of the rules' principals
    complete: bool = True
    reasons: list[str] = field(default_factory=list)


def _changed_names(changes: Any) -> list[str]:
    return [*changes.remove, *(n for n, _ in changes.set), *(n for n, _ in changes.add)]


def sample_response(dest: str, sides: list[Side]) -> list[bytes]:
    """The response the destination's routes' response header changes are applied to: one line
    per header name that a route of `dest` on either side removes, sets or adds (none else, so an
    edit elsewhere changes nothing here)."""
    names: set[str] = set()
    for side in sides:
        svc = None if side.ir is None else next((s for s in side.ir.services if s.name == dest), None)
        for route in svc.routes if svc is not None else ():
            names.update(_changed_names(route.response_headers))
            for t in route.split.targets if route.split is not None else ():   # a destination's own
                if t.response_headers is not None:
                    names.update(_changed_names(t.response_headers))
    return [f"{n}: {SAMPLE_VALUE}\r\n".encode("latin-1") for n in sorted(names)]


def _cond(kind: str, value: str, ignore_case: bool = False) -> Condition:
    return Condition(kind, value, ignore_case)


def space_for(dest: str, sides: list[Side], services: dict[str, str]) -> Space:
    """The candidate requests to `dest` (see the module's docstring)."""
    paths: list[Condition] = []
    methods: set[str] = set()
    headers: dict[str, list[Condition]] = {}
    queries: dict[str, list[Condition]] = {}
    principals: list[Condition] = []

    def take_path(p: Any) -> None:
        if p is not None:
            paths.append(_cond(p.kind, p.value, p.ignore_case))

    def take_headers(hs: Any) -> None:
        for h in hs:
            conds = headers.setdefault(h.name, [])
            if h.value is not None:
                conds.append(_cond(h.kind, h.value, h.ignore_case))

    for side in sides:
        if side.ir is None:
            continue
        svc = next((s for s in side.ir.services if s.name == dest), None)
        if svc is None:
            continue
        for route in svc.routes:
            for m in route.matches:
                take_path(m.path)
                methods.update(m.methods or ())
                take_headers(m.headers)
                for q in m.query:
                    conds = queries.setdefault(q.name, [])
                    if q.value is not None:
                        conds.append(_cond(q.kind, q.value))
            if route.split is not None and route.split.key_header:
                headers.setdefault(route.split.key_header, [])
            # a header the route (or one of its split destinations) removes, sets or adds: absent,
            # or present with a value
            arms = [t.request_headers for t in (route.split.targets if route.split is not None else ())
                    if t.request_headers is not None]
            for changes in (route.request_headers, *arms):
                for name in _changed_names(changes):
                    headers.setdefault(name, [])
        for rule in svc.authorization.rules:
            take_path(rule.path)
            methods.update(rule.methods or ())
            for excluded in rule.not_paths:     # `not path` / `not method` tell requests apart too
                take_path(excluded)
            methods.update(rule.not_methods)
            take_headers(rule.headers)
            for pr in rule.principals or ():
                principals.append(_cond(pr.kind, pr.value))
    space = Space([], [])
    path_regions = regions(paths, PATH_POOL, path=True)
    _note(space, path_regions, "path")
    method_list = sorted(methods) + [next(m for m in METHODS if m not in methods)] if len(methods) < len(METHODS) \
        else sorted(methods)
    if "GET" not in method_list:
        method_list.insert(0, "GET")
    header_dims: list[list[tuple[tuple[str, str], ...]]] = []
    for name in sorted(headers):
        r = regions(headers[name], HEADER_POOL)
        _note(space, r, f"header `{name}`")
        header_dims.append(_header_options(space, name, len(set(headers[name])), r.values))
    query_dims: list[list[tuple[tuple[str, str], ...]]] = []
    for name in sorted(queries):
        r = regions(queries[name], QUERY_POOL)
        _note(space, r, f"query parameter `{name}`")
        query_dims.append([()] + [((name, v),) for v in r.values])
    ident = regions(principals, IDENTITY_POOL)
    _note(space, ident, "caller identity")
    known = set(services.values())
    space.identities = [v for v in ident.values if v and v not in known] if principals else []
    total = len(path_regions.values) * len(method_list)
    for dim in header_dims + query_dims:
        total *= len(dim)
    if total > MAX_REQUESTS:
        space.complete = False
        space.reasons.append(f"{total} request classes, more than {MAX_REQUESTS}: only a sample is compared")
    count = 0
    for hs in itertools.product(*header_dims) if header_dims else [()]:
        for qs in itertools.product(*query_dims) if query_dims else [()]:
            for method in method_list:
                for path in path_regions.values:
                    space.requests.append(Request(method, path, tuple(h for group in hs for h in group),
                                                  tuple(q for group in qs for q in group)))
                    count += 1
                    if count >= MAX_REQUESTS:
                        return space
    return space


MAX_HEADER_OPTIONS = 64


def _header_options(space: Space, name: str, conditions: int, values: list[str]) -> list[tuple[tuple[str, str], ...]]:
    """A header's options: absent, one line per region, and, as a header sent several times is
    tested value by value (a condition holds when one value passes; `not header` when none does),
    the lines of every set of up to `conditions` distinct regions: each combination of conditions
    that several lines can meet is one of these unions."""
    options: list[tuple[tuple[str, str], ...]] = [()]
    for k in range(1, max(1, conditions) + 1):
        for combo in itertools.combinations(values, k):
            options.append(tuple((name, v) for v in combo))
            if len(options) > MAX_HEADER_OPTIONS:
                space.complete = False
                space.reasons.append(f"header `{name}`: more than {MAX_HEADER_OPTIONS} combinations of repeated "
                                     "lines, only those of fewer lines are compared")
                return options
    return options


def _note(space: Space, r: Any, what: str) -> None:
    if not r.complete:
        space.complete = False
        space.reasons.append(f"{what}: {r.reason}")


# ---- outcomes ------------------------------------------------------------------------------------

def _head(inbound: bool, method: str, target: str, host: str, headers: list[tuple[bytes, bytes]],
          peer: str | None, xfcc: bytes | None = None) -> Head:
    hdict, raw = header_dict([(b"host", host.encode("latin-1")), *headers])
    return Head(inbound, method, target, raw, hdict, None, False, 0, peer, xfcc)


def _draws(x: float) -> Draws:
    return Draws(x, x, 0, x, b"-")


def _subset(cluster: str) -> str:
    parts = cluster.split("|")   # outbound|SUBSET|SERVICE
    return f"{parts[2]}.{parts[1]}" if len(parts) == 3 else cluster


def outbound(table: Table | None, dest_host: str, req: Request, sample: list[bytes]) -> dict:
    """What the caller's sidecar does with `req` (an outcome dict; `_route` and `_up` are kept apart
    for the explanation and the inbound hop, not compared). `sample` is the destination's sample
    response (`sample_response`), whose header lines the route's response changes are applied to."""
    if table is None:
        return {"reply": "no sidecar"}
    head = _head(False, req.method, req.target, dest_host, [(n.encode(), encode_value(v)) for n, v in req.headers],
                 None)
    low = decide_request(table, head, _draws(0.0))
    high = decide_request(table, head, _draws(_ONE))
    route = high.route
    if route is None:
        return {"status": high.status}
    out: dict[str, Any] = {"_route": route.name}
    if route.split is not None:
        s = route.split
        out["to"] = "split " + " ".join(f"{_subset(t.subset.cluster)} {t.weight}" for t in s.targets) + \
            (f" by header {s.key_header}" if s.key_header else "")
    elif route.to is None:   # the route answers itself: a redirect (its location) or a direct response
        out["to"] = "answers " + (decode_value(high.extra).strip() if high.extra else repr(high.body.decode("latin-1")))
    else:
        out["to"] = _subset(route.to.subset.cluster)
    out["timeout_ms"] = route.timeout_ms
    r = route.retry
    out["retry"] = None if r is None else (f"{r.num_retries} on {','.join(r.retry_on)}"
                                           + (f" {','.join(map(str, r.retriable_status_codes))}"
                                              if r.retriable_status_codes else "")
                                           + f" per try {r.per_try_timeout_ms}ms backoff {r.backoff_base_ms}-"
                                           f"{r.backoff_max_ms}ms")
    f = route.fault
    out["fault"] = None if f is None else (f"abort {f.abort_status} {f.abort_percent}% delay {f.delay_ms}ms "
                                           f"{f.delay_percent}%")
    out["mirror"] = ", ".join(f"{_subset(m.subset.cluster)} {m.percent}%" for m in route.mirrors) or None
    if high.status:
        out["status"] = high.status
        return out
    out["status"] = f"abort {low.status} sometimes" if low.status else 0
    out["request"] = decode_value(high.up_head)
    out["response_headers"] = b"".join(response_lines(route, list(sample), [], high.arm_response)).decode("latin-1")
    out["_up"] = high.up_head
    return out


def inbound(table: Table | None, up_head: bytes, peer: str | None, tls: bool, host: str) -> dict:
    """The destination's sidecar: the connection's acceptance, then authorization."""
    if table is None:
        return {"authz": "no sidecar"}
    from runtime_proxy.decide.identity import accepts

    if not accepts(table.mtls_mode, tls):
        return {"authz": "connection refused"}
    lines = up_head.split(b"\r\n")
    method, target, _ = lines[0].decode("latin-1").split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            n, _, v = line.partition(b": ")
            if n.lower() != b"host":
                headers.append((n, v))
    # over mTLS the sidecar writes the `x-forwarded-client-cert` line for the caller, as `meshc
    # trace` does (its stand-in certificate), before authorization reads the headers
    xfcc = stand_in_xfcc(table.identity, peer) if tls and peer is not None else None
    d = decide_request(table, _head(True, method, target, host, headers, peer if tls else None, xfcc),
                       _draws(0.0))
    return {"authz": "allowed" if d.status == 0 else f"denied {d.status}", "_rule": d.rule}


def _request_line(req: Request, host: str) -> bytes:
    head = f"{req.method} {req.target} HTTP/1.1\r\nhost: {host}\r\n".encode("latin-1")
    return head + b"".join(n.encode() + b": " + encode_value(v) + b"\r\n" for n, v in req.headers)


def delta(a: dict, b: dict) -> tuple:
    """The observable fields that differ, (field, old, new) each; () when none does. The request
    sent upstream is compared too, but its text names the request, so it counts as one kind."""
    keys = sorted({k for k in a if not k.startswith("_")} | {k for k in b if not k.startswith("_")})
    out = []
    for k in keys:
        if a.get(k) != b.get(k):
            out.append((k, "" if k == "request" else a.get(k), "" if k == "request" else b.get(k)))
    return tuple(out)


def observable(o: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in o.items() if not k.startswith("_")))


# ---- the diff ------------------------------------------------------------------------------------

@dataclass
class Change:
    callers: list[str]
    dest: str
    request: Request
    old: dict
    new: dict
    classes: int = 1        # request classes with the same change, of which `request` is the smallest


# a service's settings that no request decision reads (the state decisions, the connections, the
# sidecar's own listeners and limits): compared as data, without source locations
SETTINGS = ("subsets", "limits", "outlier", "retry_budget", "upstream", "sidecar", "mtls", "port", "namespace",
            "identity")


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "source"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _flat(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(v, f"{prefix}.{k}" if prefix else k, out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
        for v in value:
            _flat(v, f"{prefix}[{v['name']}]", out)
    else:
        out[prefix] = value


def settings_changes(old: Side, new: Side) -> list[tuple[str, str, Any, Any]]:
    """(service, setting, old, new) for every setting of SETTINGS that differs; a service only on
    one side is reported once, as `service`."""
    from compiler.ir.serialize import to_data

    def services(side: Side) -> dict[str, dict[str, Any]]:
        if side.ir is None:
            return {}
        out = {}
        for svc in side.ir.services:
            data = _strip(to_data(svc))
            assert isinstance(data, dict)
            flat: dict[str, Any] = {}
            for key in SETTINGS:
                _flat(data.get(key), key, flat)
            out[svc.name] = flat
        return out

    a, b = services(old), services(new)
    changes: list[tuple[str, str, Any, Any]] = []
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            changes.append((name, "service", "declared" if name in a else "absent",
                            "declared" if name in b else "absent"))
            continue
        for key in sorted(set(a[name]) | set(b[name])):
            if a[name].get(key) != b[name].get(key):
                changes.append((name, key, a[name].get(key), b[name].get(key)))
    return changes


@dataclass
class Result:
    changes: list[Change]
    unknown: dict[str, list[str]]       # destination -> why its answer is not complete
    compared: int = 0                   # (caller, request) pairs decided on both sides
    unreplayed: int = 0                 # differences the witness alone did not show again (a bug if not 0)
    settings: list[tuple[str, str, Any, Any]] = field(default_factory=list)   # settings_changes
    destinations: int = 0


def services_of(side: Side) -> dict[str, str]:
    return {} if side.ir is None else {s.name: s.identity for s in side.ir.services}


def diff(old: Side, new: Side) -> Result:
    result = Result([], {})
    result.settings = settings_changes(old, new)
    ids_old, ids_new = services_of(old), services_of(new)
    services = {**ids_old, **ids_new}
    for dest in sorted(services):
        space = space_for(dest, [old, new], services)
        sample = sample_response(dest, [old, new])
        if not space.complete:
            result.unknown[dest] = space.reasons
        result.destinations += 1
        host = host_of(dest)
        found: dict[tuple, Change] = {}
        # a service on one side only calls nothing on the other: it is listed under settings
        # (`service: absent → declared`), its own requests are not compared
        callers: list[tuple[str, str | None, bool]] = [(c, None, False) for c in sorted(services)
                                                       if c in ids_old and c in ids_new]
        callers += [(f"identity {i}", i, True) for i in space.identities]
        callers.append((UNAUTHENTICATED, None, False))
        cache: dict[tuple, dict] = {}
        for caller, ext_id, ext_tls in callers:
            for req in space.requests:
                outs = []
                for side, ids in ((old, ids_old), (new, ids_new)):
                    dest_table = side.tables.get(dest)
                    if caller in services:
                        table = side.tables.get(caller)
                        # the outbound decision reads, of the caller's table, only whether the
                        # destination answers to its Host there (its scope), its routes there (the
                        # same in every table but for caller-specific ones: language §7), the path
                        # normalisation and the body limit
                        mine = table.services.get(dest) if table is not None else None
                        key = (id(side), req) if table is None else \
                            (id(side), req, table.service_for_host(host) is not None, table.escaped_slashes,
                             table.proxy.max_request_body_bytes,
                             tuple(r.source for r in mine.routes) if mine is not None else ())
                        o = cache.get(key)
                        if o is None:
                            o = cache[key] = outbound(table, host, req, sample)
                        o = dict(o)
                        up = o.pop("_up", None)
                        if up is not None:
                            svc = table.services.get(dest) if table is not None else None
                            tls = bool(svc is not None and svc.mtls)
                            o.update(inbound(dest_table, up, ids.get(caller), tls, host))
                    else:
                        o = inbound(dest_table, _request_line(req, host), ext_id, ext_tls, host)
                    outs.append(o)
                result.compared += 1
                d = delta(outs[0], outs[1])
                if not d:
                    continue
                prev = found.get((d, caller))
                if prev is None:
                    found[(d, caller)] = Change([caller], dest, req, outs[0], outs[1])
                    continue
                prev.classes += 1
                if req.size() < prev.request.size():
                    prev.request, prev.old, prev.new = req, outs[0], outs[1]
        merged: dict[tuple, Change] = {}
        for (d, caller), ch in found.items():
            if not replay(old, new, ch, caller):   # never reported unless the witness alone shows it
                result.unreplayed += 1
                continue
            m = merged.get((d, ch.request))
            if m is None:
                merged[(d, ch.request)] = ch
            else:
                m.callers.append(caller)
                m.classes += ch.classes
        result.changes += merged.values()
    return result


def replay(old: Side, new: Side, change: Change, caller: str) -> bool:
    """Decide the witness again, alone, on both sides: True when the outcomes still differ."""
    services = {**services_of(old), **services_of(new)}
    sample = sample_response(change.dest, [old, new])
    host = host_of(change.dest)
    outs = []
    for side in (old, new):
        ids = services_of(side)
        dest_table = side.tables.get(change.dest)
        if caller in services:
            table = side.tables.get(caller)
            o = outbound(table, host, change.request, sample)
            up = o.pop("_up", None)
            if up is not None:
                svc = table.services.get(change.dest) if table is not None else None
                o.update(inbound(dest_table, up, ids.get(caller), bool(svc is not None and svc.mtls),
                                 host))
        elif caller == UNAUTHENTICATED:
            o = inbound(dest_table, _request_line(change.request, host), None, False, host)
        else:
            ident = caller.removeprefix("identity ")
            o = inbound(dest_table, _request_line(change.request, host), ident, True, host)
        outs.append(observable(o))
    return outs[0] != outs[1]
