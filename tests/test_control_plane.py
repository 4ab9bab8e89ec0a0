"""`meshc serve` (issue 14, docs/control-plane.md): the Envoy backend's resources served over ADS,
state of the world, to a real Envoy 1.40 and to raw gRPC clients, with no mocks.

`meshc serve` runs as a subprocess (its CLI, its signals); Envoy starts from the bootstrap of
`meshc compile --bootstrap ads`. The policy is tests/envoy/behaviour.mesh.in (the sidecar of
`web` in front of loopback echo backends), whose route `live` the tests switch between subsets.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from compiler import api
from compiler.control import consistency, protos, snapshot
from compiler.control.snapshot import CLUSTER, LISTENER, ROUTE, SECRET
from tests.envoy_support import ROOT, Backend, Envoy, free_port, request, requires_envoy, run_meshc

TEMPLATE = Path(ROOT) / "tests" / "envoy" / "behaviour.mesh.in"
API = {"host": "api:8080"}


def policy(path: Path, ports: dict, live: str = "v1", more_rules: str = "") -> Path:
    text = TEMPLATE.read_text()
    for key, value in {**ports, "LIVE": live, "MORE_RULES": more_rules}.items():
        text = text.replace(f"@{key}@", str(value))
    path.write_text(text)
    return path


def fixed_ports() -> dict:
    return {k: free_port() for k in ("INBOUND", "OUTBOUND", "ADMIN", "APP", "V1", "V2", "SHADOW")}


class Serve:
    """`meshc serve FILE --listen 127.0.0.1:PORT` as a subprocess, its stderr read in a thread."""

    def __init__(self, *files: str, watch: float = 0):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "MESHC_DEBUG"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "compiler", "serve", *files, "--listen", f"127.0.0.1:{self.port}",
             "--watch", str(watch), "--color", "never"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for("serving")

    def _read(self):
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()

    def wait_for(self, text: str, after: int = 0, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines[after:]:
                    if text in line:
                        return line
                if self.proc.poll() is not None and not self.cond.wait(0.2):
                    raise AssertionError(f"meshc serve exited {self.proc.returncode}: {''.join(self.lines)}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"no {text!r} from meshc serve: {''.join(self.lines)}")
                self.cond.wait(0.1)

    def reload(self) -> int:
        """SIGHUP; the index of the next line (for wait_for)."""
        with self.cond:
            mark = len(self.lines)
        self.proc.send_signal(signal.SIGHUP)
        return mark

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


class RawClient:
    """One ADS stream from a plain (synchronous) gRPC client: requests are queued, responses read
    one at a time with a timeout."""

    def __init__(self, port: int):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.requests: queue.Queue = queue.Queue()
        self.responses: queue.Queue = queue.Queue()
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call = stub.StreamAggregatedResources(iter(self.requests.get, None))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for response in self.call:
                self.responses.put(response)
        except grpc.RpcError as err:
            self.responses.put(err)

    def send(self, type_url: str, node: str | None = None, names=(), version: str = "", nonce: str = "",
             error: str | None = None):
        req = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names), version_info=version,
                                             response_nonce=nonce)
        if node is not None:
            req.node.CopyFrom(base_pb2.Node(id=node, cluster=node))
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self.requests.put(req)

    def receive(self, timeout: float = 10):
        item = self.responses.get(timeout=timeout)
        if isinstance(item, Exception):
            raise item
        return item

    def nothing_within(self, seconds: float) -> bool:
        try:
            item = self.responses.get(timeout=seconds)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected: {item}")

    def close(self):
        self.requests.put(None)
        self.channel.close()


# ---- the snapshot, the versions, the consistency check (in process) ------------------------------

def test_a_snapshot_is_the_backends_xds_output_over_ads(tmp_path):
    ports = fixed_ports()
    path = policy(tmp_path / "p.mesh", ports)
    snap = snapshot.build(api.compile([str(path)]), "web")
    assert set(snap.json[LISTENER]) == {"inbound", "outbound"}
    assert "outbound" in snap.json[ROUTE]
    assert not consistency.problems(snap)
    # the only change from the files: references to other xDS resources go over ADS
    hcm = next(f["typed_config"] for c in snap.json[LISTENER]["outbound"]["filter_chains"] for f in c["filters"])
    assert hcm["rds"]["config_source"] == {"ads": {}, "resource_api_version": "V3"}
    for type_url, packed in snap.packed.items():
        for name, resource in packed.items():
            assert resource.type_url == type_url
            assert resource.Unpack(protos.message_class(type_url)())
    # versions are content hashes: another compile of the same sources agrees, an edit changes
    # the routes' version only
    again = snapshot.build(api.compile([str(path)]), "web")
    assert again.versions == snap.versions
    policy(path, ports, live="v2")
    edited = snapshot.build(api.compile([str(path)]), "web")
    assert edited.versions[ROUTE] != snap.versions[ROUTE]
    assert {t: v for t, v in edited.versions.items() if t != ROUTE} == \
        {t: v for t, v in snap.versions.items() if t != ROUTE}


def test_an_inconsistent_snapshot_is_found(tmp_path):
    snap = snapshot.build(api.compile([str(policy(tmp_path / "p.mesh", fixed_ports()))]), "web")
    cluster = sorted(consistency.references(snap)[CLUSTER])[0]   # one the routes send to
    del snap.json[CLUSTER][cluster]
    del snap.json[ROUTE]["outbound"]
    found = consistency.problems(snap)
    assert "web: RouteConfiguration 'outbound' is referenced but not in the snapshot" in found
    assert any(f"Cluster {cluster!r}" in p for p in found), found
