"""One `client` sidecar compiled from one policy and run twice, by a real Envoy and by the native
proxy, next to its upstreams: what the tests that send the same bytes into both planes share.

The policy is a template: `@INBOUND@`, `@OUTBOUND@`, `@ADMIN@` and `@DEAD@` become free ports,
`@NAME@` the port of the upstream `name` (a tests/proxy_backend.Backend each)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.envoy_support import Envoy, free_port
from tests.equivalence.compile import compile_text
from tests.proxy_backend import Backend
from tests.proxy_harness import start_proxy, write_config


def _with_hcm(node, fields: dict):
    """`node` (parsed JSON) with `fields` set in each HttpConnectionManager config in it."""
    if isinstance(node, list):
        return [_with_hcm(x, fields) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _with_hcm(v, fields) for k, v in node.items()}
    if str(out.get("@type", "")).endswith(".HttpConnectionManager"):
        out.update(fields)
    return out


class BothPlanes:
    def __init__(self, tmp: Path, template: str, upstreams: tuple[str, ...], *, warnings_allowed: bool = False,
                 adjust_native=None, envoy_args: tuple[str, ...] = (), bootstrap: dict | None = None,
                 hcm: dict | None = None):
        """`bootstrap`: top-level fields added to Envoy's bootstrap (e.g. `stats_flush_interval`);
        `hcm`: fields set in each HttpConnectionManager of Envoy's listeners (e.g. a shorter
        `delayed_close_timeout`);
        `adjust_native(config)` changes the native config before it is written (an access log's file);
        `envoy_args`: more options of Envoy's command line (`--file-flush-interval-msec`)."""
        self.backends = {name: Backend(name) for name in upstreams}
        self.envoy = self.native = None
        try:
            values = {name.upper(): b.port for name, b in self.backends.items()}
            values.update(DEAD=free_port(), INBOUND=free_port(), OUTBOUND=free_port(), ADMIN=free_port())
            text = template
            for key, value in values.items():
                text = text.replace(f"@{key}@", str(value))
            assert not re.search(r"@[A-Z_]+@", re.sub(r"#.*", "", text)), "a placeholder is left"
            self.text = text
            compiled = compile_text(text, xds_dir=str(tmp / "xds"))
            assert warnings_allowed or not compiled.warnings, compiled.warnings
            self.warnings = compiled.warnings     # ("CODE: message")
            for rel, data in compiled.envoy.items():
                path = tmp / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                if bootstrap and rel == "client.envoy.json":
                    data = json.dumps({**json.loads(data), **bootstrap}).encode()
                if hcm and b"HttpConnectionManager" in data:
                    data = json.dumps(_with_hcm(json.loads(data), hcm)).encode()
                path.write_bytes(data)
            native = dict(compiled.native)
            native["listeners"] = {k: dict(v, port=0) for k, v in native["listeners"].items()}
            if adjust_native is not None:   # what the native config differs in (an access log's file)
                adjust_native(native)
            self.envoy = Envoy(str(tmp / "client.envoy.json"), "--reject-unknown-dynamic-fields", *envoy_args)
            self.native = start_proxy(write_config(tmp / "client.native.json", native), tmp)
            envoy_ports = self.envoy.listener_ports()
            # (plane, listener) -> port
            self.listener_ports = {("envoy", "inbound"): envoy_ports["inbound"],
                                   ("envoy", "outbound"): envoy_ports["outbound"],
                                   ("native", "inbound"): self.native.inbound,
                                   ("native", "outbound"): self.native.outbound}
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        if self.native is not None:
            self.native.stop()
        for b in self.backends.values():
            b.stop()
