"""Verification of a policy before it ships (issue 15): the layer that may import the compile API
and the native proxy's decisions (tests/test_import_directions.py); only the CLI imports it.

- `asserts.py`: `assert never|always` blocks proven by `meshc check` (docs/testing-assert.md).
"""
