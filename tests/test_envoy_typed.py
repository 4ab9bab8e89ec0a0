"""A typed check of the Envoy output with envoy-data-plane (Python classes of Envoy's protos),
and the casing defect of envoy-data-plane 2.2.0 that decides how the project uses it.

The compiler emits plain dicts (docs/architecture.md, "Envoy backend"); here every golden
resource is read into envoy-data-plane's classes, which rejects unknown fields and wrongly typed
values. envoy-data-plane 2.2.0 gets the JSON names of the fields with a digit followed by letters
wrong (`consecutive_5xx` is written `consecutive5Xx`, which Envoy rejects in a bootstrap and
silently drops in dynamic config) and cannot read them in any spelling: those fields are set as
attributes instead, and its output is repaired before Envoy sees it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import envoy_data_plane.envoy.extensions.filters.http.cors.v3
import envoy_data_plane.envoy.extensions.filters.http.fault.v3
import envoy_data_plane.envoy.extensions.filters.http.rbac.v3
import envoy_data_plane.envoy.extensions.filters.http.router.v3
import envoy_data_plane.envoy.extensions.filters.listener.tls_inspector.v3
import envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3  # noqa: F401
import pytest

# The imports cost about a second; this module is the only place that pays it.
from envoy_data_plane.envoy.config.bootstrap.v3 import Bootstrap
from envoy_data_plane.envoy.config.cluster.v3 import Cluster, OutlierDetection
from envoy_data_plane.envoy.config.listener.v3 import Listener
from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import DownstreamTlsContext, Secret, UpstreamTlsContext

from tests.envoy_support import GOLDEN_XDS_DIR, requires_envoy, validate
from tests.test_envoy_golden import EXAMPLES, GOLDEN_DIR, STATIC_PROXY

# The proto JSON names envoy-data-plane 2.2.0 writes wrongly -> the right ones (the seven fields
# of ENVOY_NOTES §8 have these four JSON names). Only the first two occur in meshc's output.
MISCASED = {"consecutive5Xx": "consecutive5xx", "enforcingConsecutive5Xx": "enforcingConsecutive5xx",
            "traceId128Bit": "traceId128bit", "s2AAddress": "s2aAddress"}
# The snake_case fields it cannot read back (`from_dict` raises KeyError on every spelling).
UNREADABLE = ("consecutive_5xx", "enforcing_consecutive_5xx")


def fix_casing(node):
    """envoy-data-plane's `to_dict()` output with the wrong field names repaired."""
    if isinstance(node, dict):
        return {MISCASED.get(k, k): fix_casing(v) for k, v in node.items()}
    if isinstance(node, list):
        return [fix_casing(v) for v in node]
    return node


def typed(cls, resource: dict):
    """The resource as an envoy-data-plane message: the unreadable outlier fields are taken out
    before `from_dict` and set as attributes after it (wherever a cluster sits in the document)."""
    data = copy.deepcopy({k: v for k, v in resource.items() if k != "@type"})
    pending = []

    def strip(node, path):
        if isinstance(node, dict):
            if "outlier_detection" in node:
                od = node["outlier_detection"]
                pending.append((path + ("outlier_detection",), {k: od.pop(k) for k in UNREADABLE if k in od}))
            for k, v in node.items():
                strip(v, path + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                strip(v, path + (i,))

    strip(data, ())
    msg = cls.from_dict(data)
    for path, fields in pending:
        target = msg
        for step in path:
            target = target[step] if isinstance(step, int) else getattr(target, step)
        for name, value in fields.items():
            setattr(target, name, value)
            assert getattr(target, name) == value
    return msg


def resources(path: Path) -> list[dict]:
    return json.loads(path.read_text())["resources"]


@pytest.mark.parametrize("case", EXAMPLES)
def test_every_golden_resource_is_well_typed(case):
    case_dir = GOLDEN_DIR / case
    # one shared, or one per sidecar (mTLS, or a scope that is not the whole program); a cluster
    # differs between files only in whose secrets it names: each is typed once
    cds_files = sorted(case_dir.glob("xds/**/cds.json"))
    assert cds_files
    seen: set[str] = set()
    for path in cds_files:
        for cluster in resources(path):
            key = json.dumps(cluster).replace(f"/{path.parent.name}/sds-", "/SIDECAR/sds-")
            if key in seen:
                continue
            seen.add(key)
            msg = typed(Cluster, cluster)
            assert msg.name == cluster["name"]
            if "outlier_detection" in cluster:
                assert msg.outlier_detection.consecutive_5xx == cluster["outlier_detection"]["consecutive_5xx"]
            if "transport_socket" in cluster:
                tls = msg.transport_socket.typed_config.unpack()
                assert isinstance(tls, UpstreamTlsContext)
                assert tls.sni == cluster["transport_socket"]["typed_config"]["sni"]
    for path in sorted(case_dir.glob("xds/*/sds-*.json")):
        (secret,) = resources(path)  # Envoy takes exactly one secret per SDS file
        msg = typed(Secret, secret)
        assert path.name == f"sds-{msg.name}.json"
        part = msg.tls_certificate if msg.name == "identity" else msg.validation_context
        assert part.watched_directory.path == path.parent.name.join(("/etc/meshc/certs/", ""))
    rds_files = sorted(case_dir.glob("xds/**/rds-outbound.json"))   # shared, or a sidecar's own scope
    assert rds_files
    for path in rds_files:
        (route_config,) = resources(path)
        msg = typed(RouteConfiguration, route_config)
        assert [len(vh.routes) for vh in msg.virtual_hosts] == \
            [len(vh["routes"]) for vh in route_config["virtual_hosts"]]
    for lds in sorted(case_dir.glob("xds/*/lds.json")):
        for listener in resources(lds):
            msg = typed(Listener, listener)
            assert msg.name == listener["name"]
            for chain, raw in zip(msg.filter_chains, listener["filter_chains"]):
                if "transport_socket" in raw:
                    tls = chain.transport_socket.typed_config.unpack()
                    assert isinstance(tls, DownstreamTlsContext) and tls.require_client_certificate
    for boot in sorted(case_dir.glob("*.envoy.json")):
        assert typed(Bootstrap, json.loads(boot.read_text())).node.id == boot.name[: -len(".envoy.json")]


def test_the_casing_defect_is_still_there():
    """A guard: when envoy-data-plane fixes its field names, drop MISCASED and UNREADABLE."""
    assert OutlierDetection(consecutive_5xx=5, enforcing_consecutive_5xx=100).to_dict() == \
        {"consecutive5Xx": 5, "enforcingConsecutive5Xx": 100}
    for spelling in ("consecutive_5xx", "consecutive5xx", "consecutive5Xx"):
        with pytest.raises(KeyError):
            OutlierDetection.from_dict({spelling: 5})


@requires_envoy
def test_envoy_rejects_the_defect_and_accepts_the_repair(tmp_path):
    """A golden bootstrap with outlier detection, through envoy-data-plane and back: as written
    by `to_dict()` Envoy rejects it; with the names repaired it validates."""
    boot_path = GOLDEN_DIR / "shop" / "static" / f"{STATIC_PROXY['shop']}.envoy.json"
    # the SDS files it names must exist: the golden ones
    boot = json.loads(boot_path.read_text().replace(GOLDEN_XDS_DIR, str(GOLDEN_DIR / "shop" / "xds")))
    assert any("outlier_detection" in c for c in boot["static_resources"]["clusters"])
    written = typed(Bootstrap, boot).to_dict()
    assert "consecutive5Xx" in json.dumps(written)
    raw, repaired = tmp_path / "raw.json", tmp_path / "repaired.json"
    raw.write_text(json.dumps(written))
    repaired.write_text(json.dumps(fix_casing(written)))
    ok, out = validate(str(raw))
    assert not ok and "consecutive5Xx" in out
    ok, out = validate(str(repaired))
    assert ok, out
