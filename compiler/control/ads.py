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
  listeners, routes (clusters last when the new snapshot removes clusters already sent);
- clusters and listeners are sent whole (a missing one is deleted), route configurations and
  secrets by the names asked for;
- a node id naming no sidecar of the program, or a type URL that is not served, ends that
  stream alone with a gRPC error status.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from dataclasses import dataclass, field

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from compiler.control.snapshot import CLUSTER, LISTENER, ROUTE, SECRET, TYPES, WILDCARD_TYPES, NodeSnapshot


class StreamError(Exception):
    """A request that ends its own stream: the gRPC status code and a one-line message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class TypeState:
    names: set[str] = field(default_factory=set)   # asked-for names (ignored for wildcard types)
    requested: bool = False                        # the proxy asked for this type on this stream
    sent_version: str | None = None
    sent_nonce: str | None = None
    sent_names: frozenset[str] | None = None       # the names of the last response
    acked_version: str | None = None
    rejected_version: str | None = None
    error: str | None = None                       # the last NACK's error_detail.message
    acks: int = 0
    nacks: int = 0


@dataclass
class Stream:
    """One proxy's ADS stream: its node and a `TypeState` per type URL."""
    id: int
    node: str | None = None
    agent: str | None = None   # the node's user_agent_name (envoy, or another client)
    since: float = field(default_factory=time.time)
    types: dict[str, TypeState] = field(default_factory=dict)
    rejections: list[tuple[str, str | None, str]] = field(default_factory=list)   # not yet reported

    def on_request(self, request, snapshots: dict[str, NodeSnapshot]) -> list[discovery_pb2.DiscoveryResponse]:
        """Apply one DiscoveryRequest; the responses to send now, in order."""
        if self.node is None:
            if not request.node.id:
                raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "the first request carries no node id")
            if request.node.id not in snapshots:
                raise StreamError(grpc.StatusCode.NOT_FOUND,
                                  f"unknown node {request.node.id!r}: no service of that name in the program")
            self.node = request.node.id
            self.agent = request.node.user_agent_name or None
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
        (clusters last when the snapshot removes clusters the proxy has)."""
        snap = snapshots.get(self.node or "")
        if snap is None:
            return []
        order = list(TYPES)
        sent = self.types.get(CLUSTER)
        if sent is not None and sent.sent_names and not sent.sent_names <= set(snap.packed.get(CLUSTER, {})):
            order = [SECRET, LISTENER, ROUTE, CLUSTER]   # removals: the references go first
        out = []
        for type_url in order:
            response = self._response(type_url, snap)
            if response is not None:
                out.append(response)
        return out

    def _response(self, type_url: str, snap: NodeSnapshot):
        state = self.types.get(type_url)
        if state is None or not state.requested:
            return None
        clusters = self.types.get(CLUSTER)
        if type_url != CLUSTER and (clusters is None or clusters.sent_version is None):
            return None   # clusters first: answered once the clusters were sent
        version = snap.versions.get(type_url, "")
        have = snap.packed.get(type_url, {})
        names = frozenset(have) if type_url in WILDCARD_TYPES else frozenset(n for n in state.names if n in have)
        if version == state.sent_version and names == state.sent_names:
            return None   # nothing new for this proxy
        if version == state.rejected_version and names == state.sent_names:
            return None   # never re-send what the proxy rejected
        state.sent_version, state.sent_names = version, names
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

    def __init__(self, snapshots: dict[str, NodeSnapshot], log=None):
        self.snapshots = snapshots
        self.log = log or (lambda line: None)   # one line per event worth an operator's eye
        self.streams: dict[int, Stream] = {}
        self._queues: dict[int, asyncio.Queue] = {}
        self._ids = itertools.count(1)

    def publish(self, snapshots: dict[str, NodeSnapshot]) -> None:
        """Serve `snapshots` from now on (call on the server's event loop). Only the streams whose
        node's snapshot is another object are woken: the snapshot builder keeps the same object
        for a sidecar that an edit does not touch, so nothing is computed or sent for it."""
        before, self.snapshots = self.snapshots, snapshots
        for stream_id, queue in self._queues.items():
            stream = self.streams[stream_id]
            node = getattr(stream, "service", None) or stream.node   # (whose snapshot it reads)
            if node is None or before.get(node) is not snapshots.get(node):
                queue.put_nowait(("update", None))

    async def StreamAggregatedResources(self, request_iterator, context):   # gRPC's method name
        stream = Stream(next(self._ids))
        queue = asyncio.Queue()   # ("request" or "update" or "end", the request)

        async def read():
            try:
                async for request in request_iterator:
                    await queue.put(("request", request))
            finally:
                await queue.put(("end", None))

        reader = asyncio.ensure_future(read())
        self.streams[stream.id] = stream
        self._queues[stream.id] = queue
        try:
            while True:
                kind, request = await queue.get()
                if kind == "end":
                    return
                try:
                    if kind == "request":
                        responses = stream.on_request(request, self.snapshots)
                    else:
                        responses = stream.pending(self.snapshots)
                except StreamError as err:
                    self.log(f"stream {stream.id} ({stream.node or 'no node yet'}) ended: {err.message}")
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
