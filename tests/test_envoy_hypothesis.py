"""Generated policies (tests/strategies.py `valid_modules`) compile for Envoy, and the real
`envoy --mode validate` accepts the result.

Each example is one program of up to three services with routes (every kind of match,
destination, timeout, retry, fault, mirror and header change) and authorization; the static
bootstrap of one sidecar holds every route and cluster of the program, and its listeners carry
that sidecar's authorization, so it is what gets validated. The sample is bounded (a CI run
pays about 0.1 s per example); `MESHC_ENVOY_EXAMPLES=N` draws N instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

from hypothesis import HealthCheck, given, settings

from compiler import api, backends
from compiler.ir.workloads import proxy_names
from compiler.syntax import render
from tests import strategies as S
from tests.envoy_support import requires_envoy, validate

EXAMPLES = int(os.environ.get("MESHC_ENVOY_EXAMPLES", "25"))


@requires_envoy
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(S.valid_modules())
def test_generated_policies_validate(module):
    text = render.module(module)
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        with open("generated.mesh", "w", encoding="utf-8") as fh:
            fh.write(text)
        result = api.compile(["generated.mesh"])
        assert not result.has_errors, [(d.code, d.message) for d in result.diagnostics] + [text]
        services = [s.name for s in result.ir.services]
        proxy = services[0]
        for svc in result.ir.services:  # the sidecar with the most authorization rules
            if len(svc.authorization.rules) > len(result.ir.service(proxy).authorization.rules):
                proxy = svc.name
        # a workload's own sidecar when the service has one (language §5.9)
        proxy = next((p for p in proxy_names(result.ir) if p.startswith(proxy + ".")), proxy)
        emitted = result.emit("envoy", [proxy], backends.Options(bootstrap="static", output_dir=tmp))
        assert not emitted.has_errors, [(d.code, d.message) for d in emitted.diagnostics]
        boot = json.loads(emitted.files[f"{proxy}.envoy.json"])
        boot["admin"]["address"]["socket_address"]["port_value"] = 0
        for listener in boot["static_resources"]["listeners"]:
            listener["address"]["socket_address"]["port_value"] = 0
        with open("bootstrap.json", "w") as fh:
            json.dump(boot, fh)
        for rel, data in emitted.files.items():  # the SDS files the bootstrap names (mTLS) must exist
            if "/sds-" in rel:
                os.makedirs(os.path.dirname(rel), exist_ok=True)
                with open(rel, "wb") as fh:
                    fh.write(data)
        ok, out = validate(os.path.abspath("bootstrap.json"))
        assert ok, f"{out}\n--- policy:\n{text}"
