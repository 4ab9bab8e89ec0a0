"""An independent evaluator of the Envoy configuration meshc emits: what Envoy 1.40 decides for
one request (evaluator.py), in the comparable form both evaluators return (decisions.py).

It imports nothing from `compiler` or `runtime_proxy` (tests/test_import_directions.py holds
that), so that it can disagree with both: `meshc test` runs every policy test through it and
through the native proxy's own decision function, and the equivalence suite runs generated
policies through it and real Envoy.
"""
