"""The control plane (`meshc serve`, issue 14, docs/control-plane.md): the Envoy backend's
resources served to each sidecar over ADS (state of the world).

One job per module: `protos` (JSON to Envoy's protobuf types, the `@type` loader), `snapshot`
(a sidecar's resources, from the backend's xds layout), `versions` (content hashes),
`consistency` (every name a snapshot references exists), `ads` (the stream state machine and
the gRPC servicer), `serve` (compile, publish, reload), `status` (`meshc status`: the report on
the server's port and its client). grpcio and xds-protos are imported here only: nothing in the
compiler imports this package, and `meshc check`/`compile` never load it.
"""
