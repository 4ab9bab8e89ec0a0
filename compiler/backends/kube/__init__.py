"""What the Kubernetes targets share (`--target istio`, `--target gateway-api`): objects, their
deterministic YAML, the file layout and Kubernetes' name rules.

A Kubernetes backend implements `KubeTarget` (a name, the kinds it writes in their order, and
`build(program, sources)`: its objects and its diagnostics); `emit_kube` runs it: the name checks
first (a name Kubernetes would reject is an error: nothing is built), then the target, then the
files (`layout`), each a multi-document YAML file rendered by `render`. Like every backend this
package reads only the IR and the shared diagnostic types.
"""

from __future__ import annotations

from compiler.backends.kube.names import (  # noqa: F401
    check_dns_label,
    check_dns_subdomain,
    check_label_key,
    check_label_value,
    check_program_names,
    is_dns_label,
    is_dns_subdomain,
)
from compiler.backends.kube.objects import (  # noqa: F401
    SOURCE_ANNOTATION,
    KubeObject,
    KubeTarget,
    emit_kube,
    layout,
    render,
)
