"""Every resource the Envoy backend emits is a valid protobuf message of Envoy's own types
(xds-protos): the control plane (issue 14, docs/control-plane.md) serves the backend's resources
as they are, through `google.protobuf.json_format`, with no second translator.

`ParseDict` runs with `ignore_unknown_fields=False` (its default): a field name Envoy does not
know, a wrongly typed value, an enum name that does not exist or an `@type` naming no message all
raise. An `Any` resolves only once the module defining its type is imported (the protobuf
default pool is filled by imports), so the `@type` URLs of a document are collected first and
the modules of their packages imported (compiler/control/protos.py, the loader the server
uses): no list of modules has to follow the backend.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import orjson
import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from compiler import api
from compiler.backends.base import Options
from compiler.control import protos
from compiler.control.protos import message_class
from tests.envoy_support import ROOT

# the example policies, not their tests (*_test.mesh)
EXAMPLES = sorted(p.stem for p in (Path(ROOT) / "examples").glob("*.mesh") if not p.stem.endswith("_test"))


def parse(doc: dict, message):
    """`doc` read into `message` strictly, every `@type` in it resolved (compiler/control/protos.py,
    the server's own loader); the message survives a round trip through its binary form (what
    goes on the wire)."""
    protos.parse(doc, message)
    again = type(message)()
    again.ParseFromString(message.SerializeToString())
    assert again == message
    return message


def emitted(example: str, proxies: list[str] | None, bootstrap: str | None, tmp_path: Path) -> dict[str, bytes]:
    with contextlib.chdir(ROOT):
        result = api.compile([f"examples/{example}.mesh"])
        assert not result.has_errors, [d.message for d in result.diagnostics]
        names = [s.name for s in result.ir.services]
        options = Options(bootstrap=bootstrap, xds_dir=str(tmp_path / "xds"), output_dir=str(tmp_path),
                          certs_dir="/etc/meshc/certs",
                          xds_servers=(("127.0.0.1", 18000),) if bootstrap == "ads" else ())
        out = result.emit("envoy", names if proxies is None else proxies, options)
    assert not out.has_errors, [d.message for d in out.diagnostics]
    return out.files


def check_files(files: dict[str, bytes]) -> int:
    """Every emitted file parsed: bootstraps as `Bootstrap`, xDS files as `DiscoveryResponse`
    whose every resource unpacks into the message of its `@type`. The number of resources."""
    count = 0
    for path, data in files.items():
        doc = orjson.loads(data)
        if path.endswith(".envoy.json"):
            parse(doc, bootstrap_pb2.Bootstrap())
            count += 1
            continue
        response = parse(doc, discovery_pb2.DiscoveryResponse())
        assert response.resources, path
        for resource, source in zip(response.resources, doc["resources"], strict=True):
            assert resource.type_url == source["@type"]
            typed = message_class(resource.type_url)()
            assert resource.Unpack(typed), path
            assert json_format.MessageToDict(typed, preserving_proto_field_name=True)["name"] == source["name"]
            count += 1
    return count


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_xds_file_and_bootstrap_parses_into_envoys_protobuf_types(example, tmp_path):
    """`--proxy all` (the xds layout: LDS, CDS, RDS and, with mTLS, SDS files)."""
    assert check_files(emitted(example, None, None, tmp_path)) > 0


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_static_bootstrap_parses_into_envoys_protobuf_types(example, tmp_path):
    """Named proxies: self-contained static bootstraps (listeners, routes inline, clusters)."""
    with contextlib.chdir(ROOT):
        names = [s.name for s in api.compile([f"examples/{example}.mesh"]).ir.services]
    files = emitted(example, names, "static", tmp_path)
    assert check_files({p: d for p, d in files.items() if p.endswith(".envoy.json")}) == len(names)


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_ads_bootstrap_parses_into_envoys_protobuf_types(example, tmp_path):
    files = emitted(example, None, "ads", tmp_path)
    assert all(p.endswith(".envoy.json") for p in files)
    assert check_files(files) == len(files)


def test_an_unknown_field_or_type_is_refused():
    """The check is strict: what Envoy would refuse, ParseDict refuses too."""
    cluster = {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "a",
               "connect_timeout": "1s"}
    check_files({"xds/cds.json": orjson.dumps({"resources": [cluster], "version_info": "1"})})
    with pytest.raises(json_format.ParseError):
        parse({"resources": [{**cluster, "no_such_field": 1}]}, discovery_pb2.DiscoveryResponse())
    with pytest.raises(json_format.ParseError):
        parse({"resources": [{**cluster, "type": "NO_SUCH_TYPE"}]}, discovery_pb2.DiscoveryResponse())
    with pytest.raises(json_format.ParseError, match="Can not find message descriptor"):
        unknown = {**cluster, "@type": "type.googleapis.com/envoy.config.cluster.v3.NoSuch"}
        json_format.ParseDict({"resources": [unknown]}, discovery_pb2.DiscoveryResponse())
