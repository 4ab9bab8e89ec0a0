"""`mesh { tracing { … } }` on two sidecars in a chain, in both planes: a client calls the `front`
sidecar's outbound listener, which routes to the `back` sidecar's inbound listener, which
forwards to back's application (an echo). Each plane runs both sidecars (two real Envoys, or two
native proxies), compiled from one policy, and sends its spans to a real OTLP/HTTP receiver in
this test (a small HTTP server on a port from the OS that accepts POST /v1/traces).

The receiver decodes what it gets with the OTLP message classes: Envoy's `application/x-protobuf`
with the `opentelemetry.proto.*_pb2` modules installed here, which come from xds-protos and are an
older revision of the OTLP protos (ResourceSpans' field 2 is `instrumentation_library_spans`
there, wire-compatible with today's `scope_spans`); the native proxy's `application/json` with
`opentelemetry-proto-json` (`opentelemetry.proto_json`). Both become the same `Span` records, so
one set of assertions holds both planes to the same span structure and header behaviour
(docs/observability.md, "Tracing").
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.envoy_support import ENVOY, Envoy, flat_files, free_ports
from tests.proxy_backend import Backend
from tests.proxy_harness import get, start_proxy

pytestmark = pytest.mark.requires_envoy

POLICY = """
mesh {
@TRACING@
}

service front {
  port @FRONT_APP@
  endpoints ["127.0.0.1:@FRONT_IN@"]
  sidecar { inbound @FRONT_IN@  outbound @FRONT_OUT@  admin @FRONT_ADMIN@ }
}

service back {
  port @APP@
  endpoints ["127.0.0.1:@BACK_IN@"]
  sidecar { inbound @BACK_IN@  outbound @BACK_OUT@  admin @BACK_ADMIN@  app "127.0.0.1:@APP@" }
}
"""

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
UUID_UNTRACED = "5cce2907-455e-40b7-94b9-d7a84cdb2641"   # a UUIDv4: character 14 is `4` (no trace reason)
UUID_SAMPLED = "5cce2907-455e-90b7-94b9-d7a84cdb2641"    # the same id marked `9` (sampled) by a sidecar


# ---- the OTLP/HTTP receiver ------------------------------------------------------------------------

@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: str              # SERVER | CLIENT
    trace_id: str          # hex
    span_id: str
    parent: str            # "" for a root span
    attributes: dict


def _decode_protobuf(body: bytes) -> list[Span]:
    # xds-protos' copy of the OTLP protos (see the module's docstring)
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    req = trace_service_pb2.ExportTraceServiceRequest()
    req.ParseFromString(body)
    out = []
    for rs in req.resource_spans:
        service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
        for ils in rs.instrumentation_library_spans:
            for s in ils.spans:
                out.append(Span(service, s.name, trace_pb2.Span.SpanKind.Name(s.kind).removeprefix("SPAN_KIND_"),
                                s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                                {a.key: a.value.string_value for a in s.attributes}))
    return out


def _decode_json(body: bytes) -> list[Span]:
    from opentelemetry.proto_json.collector.trace.v1.trace_service import ExportTraceServiceRequest

    req = ExportTraceServiceRequest.from_json(body)
    out = []
    for rs in req.resource_spans:
        service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(Span(service, s.name, s.SpanKind(s.kind).name.removeprefix("SPAN_KIND_"),
                                s.trace_id.hex(), s.span_id.hex(), (s.parent_span_id or b"").hex(),
                                {a.key: a.value.string_value for a in s.attributes}))
    return out


class Receiver:
    """POST /v1/traces on 127.0.0.1 (a port from the OS): every span received, by content type."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.content_types: set[str] = set()
        self.errors: list[str] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    body = b""
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        body += self.rfile.read(size)
                        self.rfile.readline()
                else:
                    body = self.rfile.read(int(self.headers.get("content-length", "0")))
                ctype = self.headers.get("content-type", "")
                try:
                    if self.path != "/v1/traces":
                        raise ValueError(f"POST to {self.path}")
                    spans = _decode_protobuf(body) if ctype == "application/x-protobuf" else _decode_json(body)
                except Exception as err:    # reported by the test, not swallowed
                    receiver.errors.append(f"{ctype}: {err!r}")
                    spans = []
                with receiver.lock:
                    receiver.content_types.add(ctype)
                    receiver.spans.extend(spans)
                answer = b"{}" if "json" in ctype else b""
                self.send_response(200)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def of_trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for(self, trace_id: str, count: int, timeout: float = 8.0) -> list[Span]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.of_trace(trace_id)
            if len(spans) >= count:
                return spans
            time.sleep(0.05)
        return self.of_trace(trace_id)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---- the two sidecars, in one plane ------------------------------------------------------------------

# Spans are flushed every 100 ms in the tests that run the sidecars instead of every second (the
# bootstraps' and the native proxy's interval; test_envoy_tracing_output_is_valid... holds the 1 s): Envoy's
# through the runtime key of its bootstrap, the native proxy's through its test-only variable.
TEST_FLUSH, TEST_FLUSH_MS = "MESHC_PROXY_TEST_TRACE_FLUSH_MS", 100
FLUSH_KEY = "tracing.opentelemetry.flush_interval_ms"


def _short_flush(rel: str, data: bytes) -> bytes:
    """An Envoy bootstrap with the runtime's flush interval at TEST_FLUSH_MS (other files as they are)."""
    if not rel.endswith(".envoy.json") or FLUSH_KEY.encode() not in data:
        return data
    boot = json.loads(data)
    for layer in boot["layered_runtime"]["layers"]:
        if FLUSH_KEY in layer.get("static_layer", {}):
            layer["static_layer"][FLUSH_KEY] = TEST_FLUSH_MS
    return json.dumps(boot).encode()


class Chain:
    """front and back, compiled from POLICY with `tracing` (None: no tracing block) and run by `plane`."""

    def __init__(self, tmp: Path, plane: str, tracing: str | None, receiver: Receiver | None, extra: str = "") -> None:
        from compiler import api
        from compiler.backends.base import Options

        self.app = Backend("back-app")
        self.procs: list = []
        keys = ("FRONT_APP", "FRONT_IN", "FRONT_OUT", "FRONT_ADMIN", "BACK_IN", "BACK_OUT", "BACK_ADMIN")
        ports = dict(zip(keys, free_ports(len(keys))))
        ports["APP"] = self.app.port
        block = "" if tracing is None else "  tracing {\n    " + tracing.replace(
            "@OTLP@", str(receiver.port if receiver else 0)) + "\n  }"
        text = POLICY.replace("@TRACING@", block) + extra
        for key, value in ports.items():
            text = text.replace(f"@{key}@", str(value))
        comp = api.compile([api.Text("tracing.mesh", text)], shard=False)
        assert not comp.has_errors, [d.message for d in comp.diagnostics]
        self.front_out = ports["FRONT_OUT"]
        try:
            if plane == "envoy":   # the fleet layout: the collector's cluster is in the shared CDS file
                emitted = comp.emit("envoy", ["front", "back"], Options(bootstrap="xds", xds_dir=str(tmp / "xds"),
                                                                         output_dir=str(tmp)))
                assert not emitted.has_errors
                for rel, data in flat_files(emitted).items():
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    (tmp / rel).write_bytes(_short_flush(rel, data))
                for name in ("back", "front"):
                    self.procs.append(Envoy(str(tmp / f"{name}.envoy.json")))
            else:
                emitted = comp.emit("native", ["front", "back"], Options())
                for name in ("back", "front"):
                    path = tmp / f"{name}.native.json"
                    path.write_bytes(emitted.files[f"{name}.native.json"])
                    saved = os.environ.get(TEST_FLUSH)
                    os.environ[TEST_FLUSH] = str(TEST_FLUSH_MS)
                    try:
                        self.procs.append(start_proxy(str(path), tmp))
                    finally:
                        if saved is None:
                            del os.environ[TEST_FLUSH]
                        else:
                            os.environ[TEST_FLUSH] = saved
        except BaseException:
            self.close()
            raise

    def call(self, headers: dict | None = None) -> dict[str, str]:
        """A request through both sidecars: the headers back's application received (one value each)."""
        resp = get(self.front_out, "/orders", host="back", headers=headers)
        assert resp.status == 200, resp
        return {n.lower(): v for n, v in resp.json()["headers"]}

    def close(self) -> None:
        for p in self.procs:
            p.stop()
        self.app.stop()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


PLANES = ["envoy", "native"]
if ENVOY is None:   # (requires_envoy skips the Envoy cases; the native ones still run)
    PLANES = ["native"]


def _tp(headers: dict[str, str]) -> tuple[str, str, str, str]:
    return tuple(headers["traceparent"].split("-"))   # type: ignore[return-value]


@pytest.mark.parametrize("plane", PLANES)
def test_sampled_traces_cross_both_sidecars_as_one_trace(plane, tmp_path, receiver):
    chain = Chain(tmp_path, plane, 'sampling 100%\n    otlp "http://127.0.0.1:@OTLP@/v1/traces"', receiver, DENY_ADMIN)
    try:
        # 1. a request without trace headers: front starts a trace, back continues it
        got = chain.call()
        version, trace_id, app_parent, flags = _tp(got)
        assert (version, flags) == ("00", "01") and len(trace_id) == 32 and len(app_parent) == 16
        assert got["tracestate"] == ""
        rid = got["x-request-id"]
        assert len(rid) == 36 and rid[14] == "9", rid       # created, and marked sampled
        spans = receiver.wait_for(trace_id, 2)
        assert len(spans) == 2, spans
        egress = next(s for s in spans if s.service == "front")
        ingress = next(s for s in spans if s.service == "back")
        assert (egress.name, egress.kind, egress.parent) == ("egress back", "CLIENT", "")   # Envoy adds the Host
        assert (ingress.name, ingress.kind) == ("ingress", "SERVER")
        assert ingress.parent == egress.span_id           # back's span is the child of front's
        assert ingress.span_id == app_parent              # and the app's parent is back's span
        for s in spans:
            assert s.attributes["http.status_code"] == "200"
            assert s.attributes["http.method"] == "GET"
            assert s.attributes["guid:x-request-id"] == rid
        assert egress.attributes["upstream_cluster"] == "outbound|default|back"
        assert ingress.attributes["upstream_cluster"] == "inbound|back"

        # 2. an incoming traceparent is continued, its tracestate kept, a given x-request-id kept
        got = chain.call({"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "congo=t61rcWkgMzE",
                          "x-request-id": UUID_UNTRACED})
        version, trace_id, app_parent, flags = _tp(got)
        assert (trace_id, flags) == (TRACE, "01")
        assert got["tracestate"] == "congo=t61rcWkgMzE"
        assert got["x-request-id"] == UUID_SAMPLED           # the same id, with its trace reason
        spans = receiver.wait_for(TRACE, 2)
        egress = next(s for s in spans if s.service == "front")
        ingress = next(s for s in spans if s.service == "back")
        assert egress.parent == PARENT and ingress.parent == egress.span_id and ingress.span_id == app_parent

        # 3. a caller that decided not to sample: propagated, nothing exported
        got = chain.call({"traceparent": f"00-{'1' * 32}-{PARENT}-00"})
        assert _tp(got)[1:] == ("1" * 32, _tp(got)[2], "00")

        # 4. an x-request-id that is not a UUID is kept as it is, and is not traced
        got = chain.call({"x-request-id": "my-own-id"})
        assert got["x-request-id"] == "my-own-id" and _tp(got)[3] == "00"
        untraced = _tp(got)[1]

        # 5. a traceparent that does not parse is forwarded untouched, with no span
        got = chain.call({"traceparent": "garbage", "tracestate": "a=b"})
        assert (got["traceparent"], got["tracestate"]) == ("garbage", "a=b")

        # 6. a local reply is traced too: an unknown Host, 404 NR, one egress span
        lost = "0" * 29 + "abc"
        resp = get(chain.front_out, "/x", host="nowhere", headers={"traceparent": f"00-{lost}-{PARENT}-01"})
        assert resp.status == 404
        (local,) = receiver.wait_for(lost, 1)
        assert (local.name, local.attributes["http.status_code"], local.attributes["response_flags"]) == \
            ("egress nowhere", "404", "NR")

        # 7. an authorization denial at back: 403, and no response flag (Envoy's RBAC filter sets none)
        denied = "0" * 29 + "def"
        resp = get(chain.front_out, "/admin/x", host="back", headers={"traceparent": f"00-{denied}-{PARENT}-01"})
        assert resp.status == 403
        spans = receiver.wait_for(denied, 2)
        assert sorted((s.service, s.attributes["http.status_code"], s.attributes["response_flags"]) for s in spans) \
            == [("back", "403", "-"), ("front", "403", "-")]

        # a later sampled request: once its spans are in, the ones before it would be too
        sentinel = _tp(chain.call())[1]
        assert len(receiver.wait_for(sentinel, 2)) == 2
        assert receiver.of_trace("1" * 32) == [] and receiver.of_trace(untraced) == []
        assert not receiver.errors, receiver.errors
        assert receiver.content_types == {"application/x-protobuf" if plane == "envoy" else "application/json"}
    finally:
        chain.close()


@pytest.mark.parametrize("plane", PLANES)
def test_sampling_zero_exports_nothing_but_propagates(plane, tmp_path, receiver):
    chain = Chain(tmp_path, plane, 'sampling 0%\n    otlp "http://127.0.0.1:@OTLP@/v1/traces"', receiver)
    try:
        got = chain.call()
        assert _tp(got)[3] == "00" and got["x-request-id"][14] == "4"
        unsampled = _tp(got)[1]
        # a sampled caller is not sampled here: the sidecar's own decision is no
        got = chain.call({"traceparent": f"00-{TRACE}-{PARENT}-01"})
        assert _tp(got)[1:4:2] == (TRACE, "00")
        # a request id a sidecar already marked sampled is traced at every hop, whatever its sampling
        got = chain.call({"x-request-id": UUID_SAMPLED})
        assert _tp(got)[3] == "01" and got["x-request-id"] == UUID_SAMPLED
        forced = _tp(got)[1]
        assert len(receiver.wait_for(forced, 2)) == 2
        assert receiver.of_trace(unsampled) == [] and receiver.of_trace(TRACE) == []
        assert not receiver.errors, receiver.errors
    finally:
        chain.close()


DENY_ADMIN = """
authorization back {
  default allow
  deny admin { path prefix "/admin" }
}
"""

ROUTE_CHANGES = """
routes back {
  route all {
    match { path prefix "/" }
    to back.default
    request_headers {
      set "x-request-id" "route-set"
      set "traceparent" "00-11111111111111111111111111111111-2222222222222222-01"
      add "tracestate" "r=1"
    }
  }
}
"""


@pytest.mark.parametrize("plane", PLANES)
def test_a_routes_header_changes_and_the_tracer(plane, tmp_path, receiver):
    """As Envoy: a route's changes apply to the hop's x-request-id (so `set` wins, and the next hop
    finds no UUID: not traced), and the tracer writes traceparent and tracestate after them."""
    chain = Chain(tmp_path, plane, 'sampling 100%\n    otlp "http://127.0.0.1:@OTLP@/v1/traces"', receiver,
                  ROUTE_CHANGES)
    try:
        got = chain.call()
        assert got["x-request-id"] == "route-set" and got["tracestate"] == ""
        _, trace_id, _, flags = _tp(got)
        assert trace_id != "1" * 32 and flags == "00"      # front's trace; back does not trace "route-set"
        got = chain.call({"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "a=b"})
        assert got["x-request-id"] == "route-set" and got["tracestate"] == "a=b"
        assert _tp(got)[1] == TRACE
        assert len(receiver.wait_for(TRACE, 1)) == 1       # front's egress span only
    finally:
        chain.close()


@pytest.mark.parametrize("plane", PLANES)
def test_a_routes_request_id_change_without_tracing(plane, tmp_path):
    """Without tracing too, the connection manager writes x-request-id before the route's changes:
    a route's `set` replaces the one made for a request without one (one line, not two)."""
    chain = Chain(tmp_path, plane, None, None, ROUTE_CHANGES)
    try:
        for headers in ({}, {"x-request-id": UUID_UNTRACED}):
            resp = get(chain.front_out, "/orders", host="back", headers=headers)
            lines = [v for n, v in resp.json()["headers"] if n.lower() == "x-request-id"]
            assert lines == ["route-set"], lines
    finally:
        chain.close()


@pytest.mark.parametrize("plane", PLANES)
def test_without_tracing_only_the_request_id_is_added(plane, tmp_path):
    chain = Chain(tmp_path, plane, None, None)
    try:
        got = chain.call()
        assert len(got["x-request-id"]) == 36 and got["x-request-id"][14] == "4"   # a plain UUIDv4
        assert "traceparent" not in got and "tracestate" not in got
        got = chain.call({"traceparent": f"00-{TRACE}-{PARENT}-01", "x-request-id": UUID_SAMPLED})
        assert got["traceparent"] == f"00-{TRACE}-{PARENT}-01"   # untouched
        assert "tracestate" not in got
        assert got["x-request-id"] == UUID_SAMPLED
    finally:
        chain.close()


_BLOCK_OPENTELEMETRY = '''
import sys

class _NoOpenTelemetry:
    """The proxy process as on a machine without meshc[tracing]: `opentelemetry` cannot be imported."""
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoOpenTelemetry())
'''


def test_span_export_without_the_tracing_extra_is_refused_at_start(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from compiler import api
    from compiler.backends.base import Options

    text = POLICY.replace("@TRACING@", '  tracing { otlp "http://127.0.0.1:4318/v1/traces" }')
    keys = ("FRONT_APP", "FRONT_IN", "FRONT_OUT", "FRONT_ADMIN", "BACK_IN", "BACK_OUT", "BACK_ADMIN", "APP")
    for key, port in zip(keys, free_ports(len(keys))):
        text = text.replace(f"@{key}@", str(port))
    comp = api.compile([api.Text("tracing.mesh", text)], shard=False)
    config = tmp_path / "back.native.json"
    config.write_bytes(comp.emit("native", ["back"], Options()).files["back.native.json"])
    (tmp_path / "sitecustomize.py").write_text(_BLOCK_OPENTELEMETRY)
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), root]))
    proc = subprocess.run([sys.executable, "-m", "runtime_proxy", str(config)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "install meshc[tracing]" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    # without `otlp` the sidecar propagates headers only, and runs without any OpenTelemetry package
    comp = api.compile([api.Text("tracing.mesh", text.replace('otlp "http://127.0.0.1:4318/v1/traces"',
                                                              "sampling 1%"))], shard=False)
    config.write_bytes(comp.emit("native", ["back"], Options()).files["back.native.json"])
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    proxy = start_proxy(str(config), tmp_path)
    # serving: (an admin request also makes sure its loop runs before SIGTERM: a proxy signalled
    # right after it wrote its ports file may miss the signal, on main too; reported)
    assert proxy.admin_get("/ready")[0] == 200
    assert proxy.stop() == 0


@pytest.mark.parametrize("bootstrap", ["static", "xds", "ads"])
def test_envoy_tracing_output_is_valid_and_typed_in_every_layout(bootstrap, tmp_path):
    """The connection managers' tracing, the collector's cluster (static bootstrap or CDS) and the
    flush interval, parsed strictly into Envoy's protobuf types; `envoy --mode validate` on the
    static bootstrap (the xds and ads layouts load the same resources from files or the server)."""
    import json

    from compiler import api
    from compiler.backends.base import Options
    from tests.envoy_support import validate
    from tests.test_envoy_protobuf import check_files

    text = POLICY.replace("@TRACING@", '  tracing {\n    sampling 0.5%\n    otlp "http://collector.local:4318"\n  }')
    for n, key in enumerate(("FRONT_APP", "FRONT_IN", "FRONT_OUT", "FRONT_ADMIN", "BACK_IN", "BACK_OUT",
                             "BACK_ADMIN", "APP")):
        text = text.replace(f"@{key}@", str(20000 + n))
    comp = api.compile([api.Text("tracing.mesh", text)], shard=False)
    out = comp.emit("envoy", ["front", "back"], Options(
        bootstrap=bootstrap, xds_dir=str(tmp_path / "xds"), output_dir=str(tmp_path),
        xds_servers=(("127.0.0.1", 18000),) if bootstrap == "ads" else ()))
    assert not out.has_errors
    assert check_files(out.files) > 0
    docs = {p: json.loads(d) for p, d in out.files.items()}
    front = docs["front.envoy.json"]
    layer = front["layered_runtime"]["layers"][0]["static_layer"]
    assert layer["tracing.opentelemetry.flush_interval_ms"] == 1000
    if bootstrap == "ads":
        return   # the listeners and clusters come from the server (the served equivalence runs them)
    if bootstrap == "static":
        listeners = front["static_resources"]["listeners"]
        clusters = front["static_resources"]["clusters"]
        path = tmp_path / "front.envoy.json"
        path.write_bytes(out.files["front.envoy.json"])
        ok, message = validate(str(path))
        assert ok, message
    else:
        listeners = docs["xds/front/lds.json"]["resources"]
        clusters = docs["xds/cds.json"]["resources"]
    collector = next(c for c in clusters if c["name"] == "otlp_collector")
    assert collector["type"] == "STRICT_DNS"
    assert collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == \
        {"socket_address": {"address": "collector.local", "port_value": 4318}}
    for listener in listeners:
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        tracing = hcm["tracing"]
        assert listener["traffic_direction"] == listener["name"].upper()
        assert tracing["random_sampling"] == {"value": 0.5}
        provider = tracing["provider"]["typed_config"]
        assert provider["service_name"] == "front"
        assert provider["http_service"]["http_uri"] == {
            "uri": "http://collector.local:4318/v1/traces", "cluster": "otlp_collector", "timeout": "1s"}
