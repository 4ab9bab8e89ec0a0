"""The ADS stream state machine (state of the world) and its grpc.aio servicer.

Per stream and per type URL a `TypeState` keeps the subscribed names, the version and nonce last
sent, the version last acknowledged, and the last rejection (/work/shared/XDS_NOTES.md):

- every response has the type's content-hash version and a fresh nonce;
- a request whose `response_nonce` is the last nonce sent is an ACK, or a NACK when it carries
  `error_detail`: the rejected version is recorded with its message and never sent again on
  that stream (the proxy keeps its last good config; a newer snapshot is sent when one comes);
- a request with a stale nonce acknowledges nothing, but its subscription change is honoured;
- clusters go first: a listener, route or secret request is answered only once clusters were
  sent on the stream; on a new snapshot the types are pushed in the order clusters, secrets,
  listeners, routes (clusters last when the new snapshot removes clusters already sent; when it
  adds clusters too, make before break: first the old and new clusters together, a version of
  its own, then the others, then exactly the new clusters);
- the native proxy's config (`NATIVE`, one resource named by the node id) references no other
  resource and is answered at once; a stream that asked for it is a native proxy's, whose
  secrets are answered without clusters (it asks for none), before its config on a push;
- clusters and listeners are sent whole (a missing one is deleted), route configurations and
  secrets by the names asked for;
- the node id is `SERVICE` or `SERVICE.SUBSET`: a workload's (a subset with its own sidecar,
  docs/language.md §5.9) gets its own resources; another subset's sidecar gets its service's
  resources, its native config under the name it asks for, its node id; one naming no service
  or no subset of it, a node id that changes on the stream, or a type URL that is not served,
  ends that stream alone with a gRPC error status, and so does a reload that removes the
  node's service or subset from the program (NOT_FOUND);
- with an admission (`meshc serve --ca`), a stream records the identity it was admitted with and
  is never sent a snapshot of another (PERMISSION_DENIED), whatever request or publish led to it;
- limits (`Limits`): a stream that sends requests faster than its token bucket allows ends with
  RESOURCE_EXHAUSTED, and so does a stream opened while the server already has `max_streams`;
  a stream's requests are read at most `INFLIGHT` ahead of the ones handled, so a flooder is
  held back by HTTP/2 flow control rather than queued in memory.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from dataclasses import dataclass, field

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf.message import DecodeError

from compiler.control.snapshot import CLUSTER, LISTENER, NATIVE, ROUTE, SECRET, TYPES, WILDCARD_TYPES, NodeSnapshot
from compiler.control.versions import version_of

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"


@dataclass(frozen=True)
class Undecodable:
    """What the stream reads for a message that is not a DiscoveryRequest: the deserializer never
    raises, so the stream (not gRPC) ends with a clear status."""
    size: int
    error: str


def _request(data: bytes):
    try:
        return discovery_pb2.DiscoveryRequest.FromString(data)
    except DecodeError as err:
        return Undecodable(len(data), str(err) or "cannot be decoded")


def add_to_server(servicer: AdsServicer, server) -> None:
    """Register ADS (state of the world; delta is answered UNIMPLEMENTED with a message) on a
    grpc.aio server, with the lenient deserializer above."""
    handlers = {
        "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            servicer.StreamAggregatedResources, request_deserializer=_request,
            response_serializer=discovery_pb2.DiscoveryResponse.SerializeToString),
        "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
            servicer.DeltaAggregatedResources, request_deserializer=bytes,
            response_serializer=discovery_pb2.DeltaDiscoveryResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


def resolve(node: str, snapshots: dict[str, NodeSnapshot]) -> tuple[str | None, str]:
    """The sidecar whose resources node id `node` (`SERVICE` or `SERVICE.SUBSET`) gets, or None
    and why not. Service and subset names never hold a dot."""
    if node in snapshots:
        return node, ""
    service, dot, subset = node.partition(".")
    snap = snapshots.get(service)
    if snap is None:   # (without a dot, `node` is `service`)
        own = sorted(n for n in snapshots if n.startswith(service + "."))   # workloads with their own sidecar
        if own:
            return None, f"service {service!r} has no sidecar of its own for that name (workloads: {', '.join(own)})"
        # a name several namespaces declare: its sidecars' node ids are NAMESPACE/NAME[.SUBSET]
        twins = sorted({n.partition(".")[0] for n in snapshots if n.partition(".")[0].rpartition("/")[2] == service
                        and "/" not in service and "/" in n})
        if twins:
            return None, (f"service {service!r} is declared in several namespaces: name one as NAMESPACE/NAME "
                          f"({', '.join(t + dot + subset for t in twins)})")
        return None, f"no service {service!r} in the program" if dot else "no service of that name in the program"
    if subset in snap.subsets:
        return service, ""
    return None, f"service {service!r} has no subset {subset!r} (subsets: {', '.join(snap.subsets) or 'none'})"


class StreamError(Exception):
    """A request that ends its own stream: the gRPC status code and a one-line message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What one server accepts (`meshc serve --max-streams`, `--max-request-rate`)."""
    max_streams: int = 10_000    # concurrent ADS streams; one more is refused
    request_rate: float = 100.0  # requests per second per stream, on average ...
    burst: int = 1_000           # ... with this many at once (a real proxy sends a few per push)


INFLIGHT = 16   # requests read from a stream ahead of the one being handled
REFUSING = 1_000   # refused streams that may wait (1 s at most) for their first request at once

# Lines about streams that end on a client's error are logged at most this many per second
# (a client that opens thousands of bad streams must not flood the server's log); the rest are
# counted and said in one line.
LOG_LINES_PER_SECOND = 10


class TokenBucket:
    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class TypeState:
    names: set[str] = field(default_factory=set)   # asked-for names (ignored for wildcard types)
    requested: bool = False                        # the proxy asked for this type on this stream
    sent_version: str | None = None
    sent_nonce: str | None = None
    sent_names: frozenset[str] | None = None       # the names of the last response
    sent: dict | None = None                       # its resources, by name (make before break)
    acked_version: str | None = None
    rejected_version: str | None = None
    error: str | None = None                       # the last NACK's error_detail.message
    acks: int = 0
    nacks: int = 0


@dataclass
class Stream:
    """One proxy's ADS stream: its node and a `TypeState` per type URL."""
    id: int
    node: str | None = None        # the node id, as the proxy sent it
    service: str | None = None     # whose resources it gets (the node id's service)
    agent: str | None = None   # the node's user_agent_name (envoy, or another client)
    # --ca: the SPIFFE ID the admission checked (the client certificate's); a snapshot of another
    # identity is never sent on the stream (PERMISSION_DENIED), even for a request queued before
    # an edit changed the node's identity was published
    admitted: str | None = None
    since: float = field(default_factory=time.time)
    types: dict[str, TypeState] = field(default_factory=dict)
    rejections: list[tuple[str, str | None, str]] = field(default_factory=list)   # not yet reported

    def on_request(self, request, snapshots: dict[str, NodeSnapshot]) -> list[discovery_pb2.DiscoveryResponse]:
        """Apply one DiscoveryRequest; the responses to send now, in order."""
        if isinstance(request, Undecodable):
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"a message of {request.size} bytes that is not a DiscoveryRequest ({request.error})")
        if self.node is None:
            if not request.node.id:
                raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "the first request carries no node id")
            service, why = resolve(request.node.id, snapshots)
            if service is None:
                raise StreamError(grpc.StatusCode.NOT_FOUND, f"unknown node {request.node.id!r}: {why}")
            self.node, self.service = request.node.id, service
            self.agent = request.node.user_agent_name or None
        elif request.node.id and request.node.id != self.node:
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"the node id changed on the stream ({self.node!r}, then {request.node.id!r}): "
                              "one stream serves one node")
        if request.type_url not in TYPES:
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"type URL {request.type_url!r} is not served (ADS serves: {', '.join(TYPES)})")
        state = self.types.setdefault(request.type_url, TypeState())
        state.requested = True
        if request.response_nonce and request.response_nonce == state.sent_nonce:
            if request.HasField("error_detail"):   # NACK
                state.rejected_version = state.sent_version
                state.error = request.error_detail.message
                state.nacks += 1
                self.rejections.append((request.type_url, state.sent_version, state.error))
            else:                                   # ACK
                state.acked_version = request.version_info
                state.acks += 1
        state.names = set(request.resource_names)
        return self.pending(snapshots)

    def pending(self, snapshots: dict[str, NodeSnapshot]) -> list[discovery_pb2.DiscoveryResponse]:
        """What this stream must be sent now for the current snapshot, in the order of adding
        (clusters last when the snapshot removes clusters the proxy has). Raises StreamError
        (NOT_FOUND) when a reload removed the node from the program."""
        if self.node is None:
            return []
        service, why = resolve(self.node, snapshots)
        if service is None:
            raise StreamError(grpc.StatusCode.NOT_FOUND,
                              f"node {self.node!r} was removed from the program by a reload: {why}")
        self.service = service
        snap = snapshots[service]
        if self.admitted is not None and snap.identity != self.admitted:
            raise StreamError(grpc.StatusCode.PERMISSION_DENIED,
                              f"node {self.node!r} is now {snap.identity}, and this stream was admitted as "
                              f"{self.admitted}: a stream may only name a node of its own identity")
        order = list(TYPES)
        out = []
        sent = self.types.get(CLUSTER)
        new = set(snap.packed.get(CLUSTER, {}))
        if sent is not None and sent.sent_names and not sent.sent_names <= new:
            # removals: the references go first, the clusters last; with additions too, make before
            # break (XDS_NOTES.md): first the old clusters and the new ones together (a version
            # of its own), so that the routes sent next find the clusters they name
            order = [SECRET, LISTENER, ROUTE, CLUSTER, NATIVE]
            if not new <= sent.sent_names and sent.sent is not None and sent.requested:
                union = self._union(sent, snap)
                if union is not None:
                    out.append(union)
        for type_url in order:
            response = self._response(type_url, snap)
            if response is not None:
                out.append(response)
        return out

    def _union(self, state: TypeState, snap: NodeSnapshot):
        """The clusters the proxy has and the snapshot's together (the snapshot's win for a name
        in both), as one response with its own content-hash version; None when that is what was
        last sent or rejected, or when the proxy rejected the clusters last sent (it holds an
        older set, which the stream does not know: the removals-last order alone then)."""
        if state.rejected_version is not None and state.rejected_version == state.sent_version:
            return None
        union = {**(state.sent or {}), **snap.packed.get(CLUSTER, {})}
        version = version_of(union)
        if version in (state.sent_version, state.rejected_version):
            return None
        state.sent_version, state.sent_names, state.sent = version, frozenset(union), union
        state.sent_nonce = secrets.token_hex(8)
        return discovery_pb2.DiscoveryResponse(version_info=version, type_url=CLUSTER, nonce=state.sent_nonce,
                                               resources=[union[n] for n in sorted(union)])

    def _response(self, type_url: str, snap: NodeSnapshot):
        state = self.types.get(type_url)
        if state is None or not state.requested:
            return None
        clusters = self.types.get(CLUSTER)
        waits = type_url in (LISTENER, ROUTE) or (type_url == SECRET and NATIVE not in self.types)
        if waits and (clusters is None or clusters.sent_version is None):
            return None   # clusters first: answered once the clusters were sent (Envoy's types)
        if type_url == NATIVE and NATIVE not in snap.versions:
            return None   # not built yet (meshc serve builds native configs on demand): sent once it is
        version = snap.versions.get(type_url, "")
        have = snap.packed.get(type_url, {})
        if type_url == NATIVE and self.node is not None and self.node != self.service and self.service in have:
            # a `SERVICE.SUBSET` node asks for its config by its node id: the service's config
            have = {**have, self.node: have[self.service]}
        names = frozenset(have) if type_url in WILDCARD_TYPES else frozenset(n for n in state.names if n in have)
        if version == state.sent_version and names == state.sent_names:
            return None   # nothing new for this proxy
        if version == state.rejected_version and names == state.sent_names:
            return None   # never re-send what the proxy rejected
        state.sent_version, state.sent_names = version, names
        state.sent = {n: have[n] for n in names}
        state.sent_nonce = secrets.token_hex(8)
        return discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=state.sent_nonce,
                                               resources=[have[n] for n in sorted(names)])

    def status(self) -> dict:
        return {"node": self.node, "since": self.since,
                "types": {t: {"sent": s.sent_version, "acked": s.acked_version, "rejected": s.rejected_version,
                              "error": s.error, "acks": s.acks, "nacks": s.nacks} for t, s in self.types.items()}}


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """The servicer: every stream reads the current snapshots; `publish` replaces them and
    wakes every stream, which sends what changed for its node."""

    def __init__(self, snapshots: dict[str, NodeSnapshot], log=None, limits: Limits = Limits(), admit=None,
                 native=None):
        self.snapshots = snapshots
        self.log = log or (lambda line: None)   # one line per event worth an operator's eye
        self.limits = limits
        # `meshc serve --ca` (compiler/control/sds.py): awaited with the node id and the gRPC
        # context before a stream's first request is applied, and again before each new snapshot
        # is sent on it; raises StreamError (PERMISSION_DENIED) for a node that is not (or no
        # longer) the client certificate's, and issues the node's certificate. Nothing is sent on
        # the stream before it returns. It returns the identity checked (kept as the stream's
        # `admitted`), or None for a node it does not know, which then ends with NOT_FOUND.
        self.admit = admit
        # Called with a service whose native config a stream asked for and the snapshot does not
        # hold (meshc serve builds native configs on demand); the config is sent when published.
        self.native = native
        self.streams: dict[int, Stream] = {}
        self._queues: dict[int, asyncio.Queue] = {}
        self._ids = itertools.count(1)
        self.refused = {"streams": 0, "rate": 0}   # streams ended by a limit, since the start
        self._log_second, self._log_lines, self._log_dropped = 0, 0, 0
        self._refusing = 0   # refused streams waiting for their first request (at most REFUSING)

    def publish(self, snapshots: dict[str, NodeSnapshot]) -> None:
        """Serve `snapshots` from now on (call on the server's event loop). Only the streams whose
        node's snapshot is another object are woken: the snapshot builder keeps the same object
        for a sidecar that an edit does not touch, so nothing is computed or sent for it."""
        before, self.snapshots = self.snapshots, snapshots
        for stream_id, queue in self._queues.items():
            stream = self.streams[stream_id]
            node = stream.service or stream.node   # (whose snapshot it reads)
            if node is None or before.get(node) is not snapshots.get(node):
                queue.put_nowait(("update", None))

    def log_limited(self, line: str) -> None:
        """`log`, at most LOG_LINES_PER_SECOND lines a second; the lines left out are counted and
        said with the next line logged."""
        second = int(time.monotonic())
        if second != self._log_second:
            self._log_second, self._log_lines = second, 0
        if self._log_lines >= LOG_LINES_PER_SECOND:
            self._log_dropped += 1
            return
        self._log_lines += 1
        if self._log_dropped:
            line += f" ({self._log_dropped} similar line(s) left out)"
            self._log_dropped = 0
        self.log(line)

    async def DeltaAggregatedResources(self, request_iterator, context):   # gRPC's method name
        self.log_limited("a delta xDS stream refused: only state of the world is served")
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "delta xDS is not served: meshc serve serves ADS state "
                            "of the world (ads_config api_type GRPC, as `meshc compile --bootstrap ads` writes)")

    async def StreamAggregatedResources(self, request_iterator, context):   # gRPC's method name
        stream = Stream(next(self._ids))
        if len(self.streams) >= self.limits.max_streams:
            self.refused["streams"] += 1
            message = (f"the server serves at most {self.limits.max_streams} streams (meshc serve --max-streams); "
                       "try again later or another replica")
            self.log_limited(f"stream {stream.id} refused: {message}")
            if self._refusing < REFUSING:
                # Read the client's first request before ending the stream: a gRPC client whose
                # request is still being sent when the status arrives reports its own INTERNAL
                # error instead of the status (measured with grpc.aio).
                self._refusing += 1
                try:
                    await asyncio.wait_for(request_iterator.__anext__(), 1.0)
                except (TimeoutError, StopAsyncIteration, grpc.RpcError):
                    pass
                finally:
                    self._refusing -= 1
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
            return
        queue = asyncio.Queue()   # ("request" | "update" | "error" | "end", the item)
        slots = asyncio.Semaphore(INFLIGHT)      # requests read but not yet handled
        bucket = TokenBucket(self.limits.request_rate, self.limits.burst)

        async def read():
            try:
                async for request in request_iterator:
                    if not bucket.take():
                        await queue.put(("error", StreamError(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"more than {self.limits.request_rate:g} requests per second on one stream "
                            f"(a burst of {self.limits.burst} allowed; meshc serve --max-request-rate)")))
                        return
                    await slots.acquire()
                    await queue.put(("request", request))
            except grpc.RpcError:
                pass   # the client went away: the stream ends
            finally:
                await queue.put(("end", None))

        reader = asyncio.ensure_future(read())
        self.streams[stream.id] = stream
        self._queues[stream.id] = queue
        try:
            while True:
                kind, item = await queue.get()
                if kind == "end":
                    return
                try:
                    if kind == "error":
                        if item.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                            self.refused["rate"] += 1
                        raise item
                    if kind == "request":
                        slots.release()
                        if stream.node is None and self.admit is not None \
                                and not isinstance(item, Undecodable) and item.node.id:
                            stream.admitted = await self.admit(item.node.id, context)
                            if stream.admitted is None:   # a node the admission does not know is never
                                # served unchecked (a reload that removes it may not be published yet)
                                why = resolve(item.node.id, self.snapshots)[1] or "not in the program being published"
                                raise StreamError(grpc.StatusCode.NOT_FOUND, f"unknown node {item.node.id!r}: {why}")
                        responses = stream.on_request(item, self.snapshots)
                        if item.type_url == NATIVE and self.native is not None and stream.service is not None \
                                and NATIVE not in self.snapshots[stream.service].versions:
                            self.native(stream.service)
                    else:
                        if self.admit is not None and stream.node is not None:
                            await self.admit(stream.node, context)   # an edit may have changed its identity
                        responses = stream.pending(self.snapshots)
                except StreamError as err:
                    self.log_limited(f"stream {stream.id} ({stream.node or 'no node yet'}) ended: {err.message}")
                    await context.abort(err.code, err.message)
                    return
                for type_url, version, message in stream.rejections:
                    self.log(f"{stream.node} rejected {type_url.rpartition('.')[2]} version {version} (kept its "
                             f"last good one; this version is not sent again): {message}")
                stream.rejections.clear()
                for response in responses:
                    yield response
        finally:
            reader.cancel()
            self.streams.pop(stream.id, None)
            self._queues.pop(stream.id, None)
