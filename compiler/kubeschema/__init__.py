"""Offline validation of Kubernetes objects against the vendored CRDs (crds/: Istio's and Gateway
API's, see crds/README.md): the `openAPIV3Schema` as a JSON Schema (jsonschema) and every
`x-kubernetes-validations` CEL rule (cel-python with Kubernetes' extension functions).

    from compiler.kubeschema import validate
    report = validate(objects, channel="standard")   # parsed YAML documents
    report.problems, report.rule_evaluations, len(report.rules)

This package imports only the core (and jsonschema, and cel-python from the `kubernetes` extra,
only when an object with rules is validated): `meshc check` without `--target` never loads it.
"""

from __future__ import annotations

from compiler.kubeschema.validate import (  # noqa: F401
    CHANNELS,
    SOURCE_ANNOTATION,
    Problem,
    Report,
    validate,
)
