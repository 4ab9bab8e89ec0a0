"""Verification of a policy before it ships (issue 15): the layer that may import the compile API,
the backends' options and the native proxy's decisions and config contract
(tests/test_import_directions.py); only the CLI imports it.

- `asserts.py`: `assert never|always` blocks proven by `meshc check` (docs/testing.md).
- `meshc test`, policy tests run through two independent implementations:
  - `native.py`: the native proxy's own request decision (runtime_proxy/decide) over the
    compiled native config, as the running proxy calls it;
  - the package `envoy_eval`: an evaluator of the emitted Envoy configuration that imports
    neither the compiler nor the proxy;
  - `run.py`: each test's request through the caller's sidecar (outbound: routing) and the
    destination's (inbound: authorization), in both, compared hop by hop, then held to the test's
    expectations; the coverage of routes, split arms, authorization rules and defaults;
  - `live.py` (`--live`): the same requests through a real Envoy and a real native proxy.
"""
