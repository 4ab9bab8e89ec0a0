"""The sidecar's access log (`sidecar { access_log "/PATH" }`): a file access log on both HTTP
connection managers, one JSON object per request and line.

The native proxy writes the same fields with the same values (runtime_proxy/net/server.py
AccessLog; docs/observability.md lists them and the few values that differ). A field Envoy has no
value for is `null` in both. `route` and `service` come from the matched route's provenance
metadata (`filter_metadata.meshc`), so they are the language's names, not Envoy's route names
(`SERVICE/ROUTE/N`); the inbound route has none (null). An authorization denial's
`response_code_details` names the deciding rule: `rbac_access_denied_matched_policy[RULE]`, or
`[none]` when the default denied.
"""

from __future__ import annotations

from compiler.backends.envoy import names


def json_format(direction: str) -> dict:
    return {
        "start_time": "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
        "direction": direction,
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(:PATH)%",
        "authority": "%REQ(:AUTHORITY)%",
        "response_code": "%RESPONSE_CODE%",
        "response_code_details": "%RESPONSE_CODE_DETAILS%",
        "response_flags": "%RESPONSE_FLAGS%",
        "service": "%METADATA(ROUTE:meshc:service)%",
        "route": "%METADATA(ROUTE:meshc:route)%",
        "upstream_cluster": "%UPSTREAM_CLUSTER%",
        "upstream_host": "%UPSTREAM_HOST%",
        "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
        "duration_ms": "%DURATION%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "peer_identity": "%DOWNSTREAM_PEER_URI_SAN%",
    }


def access_log(path: str, direction: str) -> list[dict]:
    """The HCM's `access_log` for the listener `direction` (`inbound` or `outbound`)."""
    return [{
        "name": names.FILE_ACCESS_LOGGER,
        "typed_config": {"@type": names.FILE_ACCESS_LOG, "path": path,
                         "log_format": {"json_format": json_format(direction)}},
    }]
