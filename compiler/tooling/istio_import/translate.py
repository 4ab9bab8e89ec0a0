"""Istio YAML -> .mesh: the translation of `meshc import istio`, with Istio's own semantics.

Each rule below cites the Istio reference it follows (istio.io/latest/docs/reference/config/…,
and istio/api `networking/v1alpha3/*.proto`, `security/v1beta1/*.proto`, v1.30):

- Kubernetes `Service` and Istio `ServiceEntry` declare the services (a Service's pods are its
  DNS name, `NAME.NAMESPACE.svc.cluster.local:PORT`; a ServiceEntry's static endpoints are
  addresses). A `Deployment`'s pod template says which labels and service account the pods of
  a Service have (the identity `spiffe://cluster.local/ns/NS/sa/ACCOUNT`).
- `DestinationRule` (destination-rule): subsets; `connectionPool` → `limits`, whose unwritten
  values are Istio's defaults (2^32-1 each: Istio sets every circuit-breaker threshold to
  MaxUint32), `outlierDetection` → `outlier`, `retryBudget` → `retry_budget`.
- `VirtualService` (virtual-service): `http` routes in order, the first that matches wins;
  `uri.prefix` is a plain string prefix (`raw_prefix`); an unwritten `timeout` is none; an
  unwritten `retries` is Istio's default retry policy (2 attempts on
  `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes` with 503), so it
  becomes a `retry` too (W1002 for what meshc lacks of it); `attempts: 0` is no retry; an
  unwritten fault `percentage` injects nothing; an unwritten `mirrorPercentage` mirrors all.
- `AuthorizationPolicy` (authorization-policy): DENY policies deny when one of their rules
  matches; when any ALLOW policy applies to a workload, a request that none of their rules
  matches is denied; a policy without rules matches nothing (an ALLOW policy without rules
  therefore denies everything, a DENY policy without rules does nothing).
- `PeerAuthentication` (peer_authentication): the mode of the workload, else of its namespace,
  else of the root namespace (istio-system), else PERMISSIVE.

What meshc cannot say is an error located at the field (E1005), never dropped; what it says
approximately is a warning (W1002, W1003).
"""

from __future__ import annotations

import re

from compiler.core.diagnostics import Collector, Label
from compiler.core.source import Span
from compiler.tooling.istio_import.fields import spec_fields
from compiler.tooling.istio_import.nodes import Node, Seen, leftovers
from compiler.tooling.istio_import.yaml_source import Document, YamlError, read_yaml

ROOT_NAMESPACE = "istio-system"
UINT32_MAX = 2**32 - 1
ISTIO_KINDS = {"VirtualService", "DestinationRule", "AuthorizationPolicy", "PeerAuthentication", "ServiceEntry"}
ISTIO_GROUPS = ("networking.istio.io/", "security.istio.io/")
# Kubernetes kinds that carry no mesh policy: skipped with a note (W1001).
# Istio kinds `meshc compile --target istio` writes beside the policy, derived from it: the scope of
# each sidecar (Sidecar) and its connection-manager settings (EnvoyFilter). Skipped with a note.
DERIVED_KINDS = {"Sidecar", "EnvoyFilter"}
NO_POLICY_KINDS = {
    "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod", "Job", "CronJob", "ServiceAccount",
    "ConfigMap", "Secret", "Namespace", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding",
    "HorizontalPodAutoscaler", "PodDisruptionBudget", "Endpoints", "EndpointSlice", "NetworkPolicy",
    "PersistentVolumeClaim", "LimitRange", "ResourceQuota",
}
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
DEFAULT_RETRY_ON = ("connect-failure", "refused-stream", "503")
RETRY_WORDS = {"5xx", "gateway-error", "reset", "connect-failure", "refused-stream", "retriable-4xx"}
GRPC_RETRY = {"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_DURATION = re.compile(r"(?:([0-9]+)h)?(?:([0-9]+)m(?!s))?(?:([0-9]+(?:\.[0-9]+)?)s)?(?:([0-9]+)ms)?\Z")


class Obj:
    """One Kubernetes object read from a file."""

    def __init__(self, node: Node, kind: str, name: str, namespace: str):
        self.node, self.kind, self.name, self.namespace = node, kind, name, namespace

    @property
    def name_span(self) -> Span:
        return self.node.doc.where(self.node.path + ("metadata", "name"))

    def spec(self) -> Node | None:
        return self.node.at("spec")


class Service:
    def __init__(self, name: str, namespace: str, port: int, span: Span, kube: bool):
        self.name, self.namespace, self.port, self.span, self.kube = name, namespace, port, span, kube
        self.ref = name   # how the program names it: NAMESPACE/NAME when another namespace has the name too
        self.endpoints: list[str] = []
        self.endpoint_labels: list[dict] = []     # ServiceEntry endpoints: their labels
        self.selector: dict[str, str] = {}
        self.pod_labels: list[dict] = []          # of the Deployments whose pods this service selects
        self.account: str | None = None
        self.subsets: list[tuple[str, dict, Span]] = []
        self.limits: dict[str, int] | None = None
        self.outlier: dict[str, object] | None = None
        self.budget: dict[str, object] | None = None
        self.mtls: tuple[str, Span] | None = None
        self.routes: list[list[tuple[str, Span]]] | None = None
        self.routes_span: Span | None = None
        self.deny: list[tuple[str, Span]] = []
        self.allow: list[tuple[str, Span]] = []
        self.allow_policies = 0
        self.rule_names: set[str] = set()
        self.hosts: set[str] = set()
        self.written_hosts: list[tuple[str, Span]] = []   # a VirtualService's other hosts: `hosts [...]`
        self.uses_all = False
        self.internal = True          # a ServiceEntry: MESH_INTERNAL (its endpoints are workloads of the mesh)
        self.dr_tls: str | None = None  # the DestinationRule's `tls.mode`: what callers connect with

    @property
    def all_name(self) -> str:
        """The subset of every endpoint (Istio: a destination without `subset`)."""
        return _ALL if all(s[0] != _ALL for s in self.subsets) else f"{_ALL}-pods"


class Importer:
    def __init__(self) -> None:
        self.diags: Collector = _ImportCollector()
        self.seen = Seen()
        self.objects: list[Obj] = []
        self.services: dict[str, Service] = {}
        self.by_host: dict[str, Service] = {}
        self.mesh_mtls: tuple[str, Span] | None = None
        self.trust_domain = "cluster.local"   # Istio's is the mesh config's `trustDomain` (--trust-domain)

    # ---- reading -------------------------------------------------------------------------

    def read(self, path: str, text: str | None = None) -> None:
        try:
            _, docs = read_yaml(path, text)
        except YamlError as err:
            self.diags.add(err.code, err.message, err.span, err.hint, path=path if err.span is None else None)
            return
        except OSError as err:
            self.diags.add("E1001", f"cannot read `{path}`: {err.strerror or err}", None, path=path)
            return
        for doc in docs:
            root = Node(doc, (), doc.value, self.seen)
            if doc.value is None:
                continue
            if not isinstance(doc.value, dict):
                self.diags.add("E1003", "a YAML document that is not a Kubernetes object (a mapping with `kind`)",
                               root.span)
                continue
            kind = doc.value.get("kind")
            items = root.at("items")
            if isinstance(kind, str) and kind.endswith("List") and items is not None:
                for item in items.items():   # `kubectl get -o yaml`: a List of objects
                    self._object(item)
            else:
                self._object(root)

    def _object(self, node: Node) -> None:
        if not isinstance(node.raw, dict):
            self.diags.add("E1003", "a list item that is not a Kubernetes object (a mapping with `kind`)", node.span)
            return
        kind_node, api_node = node.at("kind"), node.at("apiVersion")
        kind = kind_node.raw if kind_node is not None else None
        if not isinstance(kind, str) or api_node is None or not isinstance(api_node.raw, str):
            self.diags.add("E1003", "an object without `apiVersion` and `kind`", node.span,
                           "every Kubernetes object says what it is: `apiVersion: networking.istio.io/v1`, "
                           "`kind: VirtualService`")
            return
        meta = node.at("metadata")
        name = meta.at("name") if meta is not None else None
        ns = meta.at("namespace") if meta is not None else None
        if meta is not None:
            meta.consume()
        node.at("status") and node.at("status").consume()  # type: ignore[union-attr]
        if name is None or not isinstance(name.raw, str):
            self.diags.add("E1003", f"{kind} without `metadata.name`", kind_node.span)  # type: ignore[union-attr]
            return
        namespace = ns.raw if ns is not None and isinstance(ns.raw, str) else "default"
        api = api_node.raw
        if kind in ISTIO_KINDS and api.startswith(ISTIO_GROUPS):
            self.objects.append(Obj(node, kind, name.raw, namespace))
        elif (kind == "Service" and api == "v1") or (kind == "Deployment" and api.startswith("apps/")):
            self.objects.append(Obj(node, kind, name.raw, namespace))
            if kind == "Deployment":
                self.diags.add("W1001", f"Deployment `{name.raw}` carries no mesh policy: skipped (its pod labels "
                               "and service account are read)", kind_node.span)  # type: ignore[union-attr]
        elif kind in DERIVED_KINDS and api.startswith(ISTIO_GROUPS):
            self.diags.add("W1001", f"{kind} `{name.raw}` is not read: meshc derives each sidecar's scope and "
                           "settings from the policy", kind_node.span)  # type: ignore[union-attr]
        elif kind in NO_POLICY_KINDS:
            self.diags.add("W1001", f"{kind} `{name.raw}` carries no mesh policy: skipped",
                           kind_node.span)  # type: ignore[union-attr]
        else:
            self.diags.add("E1003", f"kind `{kind}` (`{api}`) cannot be imported",
                           kind_node.span,  # type: ignore[union-attr]
                           "meshc imports VirtualService, DestinationRule, AuthorizationPolicy, PeerAuthentication, "
                           "ServiceEntry and Service, and skips workloads and configuration (Deployment, ConfigMap, …)")

    # ---- translation ---------------------------------------------------------------------

    def translate(self) -> None:
        order = ("Service", "ServiceEntry", "Deployment", "DestinationRule", "PeerAuthentication",
                 "AuthorizationPolicy", "VirtualService")
        rejected = self._validate()
        for kind in order:
            if kind == "Deployment":
                self._qualify()
            for obj in self.objects:
                if obj.kind == kind and id(obj) not in rejected:
                    getattr(self, f"_{kind.lower()}")(obj)
                    if kind in ISTIO_KINDS and obj.spec() is not None:
                        leftovers(obj.spec(), spec_fields(kind), kind, self.diags)  # type: ignore[arg-type]
                    for key, _ in obj.node.entries():
                        if key not in ("apiVersion", "kind", "metadata", "spec", "status"):
                            child = obj.node.at(key)
                            if obj.kind in ISTIO_KINDS and child is not None:
                                self.diags.add("E1004", f"unknown field `{key}` in {kind}", child.span)

    def _validate(self) -> set[int]:
        """The Istio objects against the real CRD schemas and their CEL rules (compiler/kubeschema, the
        validator `meshc compile --target istio` runs on its output): what the API server would
        reject is E1011 at the field, and the object is not translated. Returns the rejected ones."""
        istio = [o for o in self.objects if o.kind in ISTIO_KINDS]
        if not istio:
            return set()
        from compiler.kubeschema import validate

        report = validate([o.node.raw for o in istio])
        rejected = set()
        for problem in report.problems:
            obj = istio[problem.index]
            if problem.kind == "schema" and problem.message.startswith("unknown field"):
                continue   # E1004, with a "did you mean", from the walk of the translated object
            rejected.add(id(obj))
            what = {"rule": "a validation rule of the CRD rejects it",
                    "validator": "the validator cannot evaluate a rule of the CRD"}.get(problem.kind, "")
            self.diags.add("E1011", f"{obj.kind} `{obj.name}`: {problem.message}",
                           obj.node.doc.where(obj.node.path + _field_path(problem.path)),
                           f"{what}: `{problem.rule}`" if problem.rule else
                           "the Kubernetes API server would reject this object (Istio's CRD schema, v1.30.3)")
        return rejected

    def _declare(self, svc: Service, hosts: list[str]) -> None:
        key = f"{svc.namespace}/{svc.name}"   # (one name in several namespaces: language §5.1)
        if key in self.services:
            first = self.services[key]
            self.diags.add("E1009", f"two services named `{svc.name}` in namespace `{svc.namespace}`", svc.span,
                           "a meshc service name is unique in its namespace", (Label(first.span, "the first"),))
            return
        self.services[key] = svc
        for host in hosts:
            self.by_host[host] = svc
            svc.hosts.add(host)

    def _qualify(self) -> None:
        """Every service declared (Services and ServiceEntries come first): a name several namespaces
        declare is written `NAMESPACE/NAME` wherever the program names the service."""
        spaces: dict[str, int] = {}
        for svc in self.services.values():
            spaces[svc.name] = spaces.get(svc.name, 0) + 1
        for svc in self.services.values():
            if spaces[svc.name] > 1:
                svc.ref = f"{svc.namespace}/{svc.name}"

    def _named(self, name: str, namespace: str) -> Service | None:
        """The service `name` seen from `namespace`: its own namespace's, else the only one of that name."""
        found = self.services.get(f"{namespace}/{name}")
        if found is None:
            others = [s for s in self.services.values() if s.name == name]
            found = others[0] if len(others) == 1 else None
        return found

    def _service(self, obj: Obj) -> None:
        spec = obj.spec()
        if spec is None:
            return
        spec.consume()
        if not _NAME.match(obj.name):
            self.diags.add("E1006", f"service name `{obj.name}` is not a meshc name", obj.node.at("metadata").span)  # type: ignore[union-attr]
            return
        ports = spec.at("ports")
        port_items = ports.items() if ports is not None else []
        first = port_items[0].raw if port_items else None
        if not isinstance(first, dict) or "port" not in first:
            self.diags.add("E1006", f"Service `{obj.name}` has no port", spec.span)
            return
        given = first["port"]
        if type(given) is not int or not 1 <= given <= 65535:  # not `true`, `"8080"` or a huge number
            port_node = port_items[0].at("port")
            self.diags.add("E1006", f"Service `{obj.name}` has port {_short(given)}: a port is a whole number "
                           "from 1 to 65535", (port_node or port_items[0]).span)
            return
        if len(port_items) > 1:
            self.diags.add("W1003", f"Service `{obj.name}` has {len(port_items)} ports: only the first, "
                           f"{port_items[0].raw['port']}, is imported", port_items[1].span,
                           "a meshc service has one port")
        port = port_items[0].raw["port"]
        svc = Service(obj.name, obj.namespace, port, obj.name_span, kube=True)
        svc.endpoints = [f"{obj.name}.{obj.namespace}.svc.cluster.local:{port}"]
        selector = spec.raw.get("selector") if isinstance(spec.raw, dict) else None
        svc.selector = {str(k): str(v) for k, v in selector.items()} if isinstance(selector, dict) else {}
        self._declare(svc, _host_forms(obj.name, obj.namespace))

    def _serviceentry(self, obj: Obj) -> None:
        spec = obj.spec()
        if spec is None:
            return
        hosts = spec.at("hosts")
        host_items = hosts.items() if hosts is not None else []
        if len(host_items) != 1 or not isinstance(host_items[0].raw, str):
            self.diags.add("E1005", "a ServiceEntry with other than one host cannot be translated",
                           (hosts or spec).span, "write one ServiceEntry per host: each becomes a meshc service")
            return
        host = host_items[0].raw
        loc = spec.at("location")
        if loc is not None and loc.raw not in ("MESH_EXTERNAL", "MESH_INTERNAL"):
            self.diags.add("E1006", f"unknown location `{loc.raw}`", loc.span)
        ports = spec.at("ports")
        port_items = ports.items() if ports is not None else []
        if len(port_items) != 1 or not isinstance(port_items[0].raw, dict):
            self.diags.add("E1005", "a ServiceEntry with other than one port cannot be translated",
                           (ports or spec).span, "a meshc service has one port")
            return
        pnode = port_items[0]
        number, pname = pnode.at("number"), pnode.at("name")
        for key in ("protocol", "targetPort"):
            sub = pnode.at(key)
            if key == "protocol" and sub is not None and str(sub.raw).upper() not in ("HTTP", "HTTP2", "GRPC"):
                self.diags.add("E1005", f"protocol `{sub.raw}` cannot be translated", sub.span, "meshc routes HTTP")
        if number is None or not isinstance(number.raw, int):
            self.diags.add("E1006", "ServiceEntry port without a `number`", pnode.span)
            return
        target = pnode.raw.get("targetPort", number.raw)
        resolution = spec.at("resolution")
        res = resolution.raw if resolution is not None else "NONE"
        svc = Service(obj.name, obj.namespace, number.raw, obj.name_span, kube=False)
        svc.internal = loc is not None and loc.raw == "MESH_INTERNAL"
        eps = spec.at("endpoints")
        if res == "STATIC" or (res == "DNS" and eps is not None):
            for ep in (eps.items() if eps is not None else []):
                account = ep.at("serviceAccount")
                if account is not None and isinstance(account.raw, str):
                    if svc.account not in (None, account.raw):
                        self.diags.add("E1005", "endpoints with different service accounts cannot be translated",
                                       account.span, "a meshc service has one identity")
                    svc.account = account.raw
                addr = ep.at("address")
                if addr is None or not isinstance(addr.raw, str):
                    self.diags.add("E1006", "endpoint without an `address`", ep.span)
                    continue
                eport = target
                ports_map = ep.at("ports")
                if ports_map is not None and isinstance(ports_map.raw, dict) and pname is not None:
                    p = ports_map.at(pname.raw)
                    eport = p.raw if p is not None else eport
                    ports_map.consume()
                labels = ep.at("labels")
                lab = labels.consume() if labels is not None else {}
                if not isinstance(lab, dict):
                    self.diags.add("E1006", "`labels` is a mapping", ep.span)
                    lab = {}
                svc.endpoint_labels.append(lab)
                a = addr.raw
                svc.endpoints.append(f"[{a}]:{eport}" if ":" in a else f"{a}:{eport}")
            if not svc.endpoints:
                self.diags.add("E1005", "a STATIC ServiceEntry without endpoints cannot be translated",
                               (resolution or spec).span, "meshc needs the addresses of a service's endpoints")
                return
        elif res == "DNS":
            svc.endpoints = [f"{host}:{target}"]
        else:
            self.diags.add("E1005", f"resolution `{res}` cannot be translated", (resolution or spec).span,
                           "meshc needs endpoints: write `resolution: DNS` or STATIC endpoints")
            return
        if not _NAME.match(obj.name):
            self.diags.add("E1006", f"service name `{obj.name}` is not a meshc name", obj.node.span)
            return
        self._declare(svc, [host])

    def _deployment(self, obj: Obj) -> None:
        spec = obj.spec()
        if spec is None:
            return
        spec.consume()
        template = spec.raw.get("template") if isinstance(spec.raw, dict) else None
        if not isinstance(template, dict):
            return
        meta, pod = template.get("metadata"), template.get("spec")
        labels = meta.get("labels") if isinstance(meta, dict) else None
        account = pod.get("serviceAccountName") if isinstance(pod, dict) else None
        if not isinstance(labels, dict):
            return
        labels = {str(k): str(v) for k, v in labels.items()}
        for svc in self.services.values():
            if svc.kube and svc.namespace == obj.namespace and svc.selector and \
                    all(labels.get(k) == v for k, v in svc.selector.items()):
                svc.pod_labels.append(labels)
                if isinstance(account, str) and account != svc.name:
                    svc.account = account

    # ---- DestinationRule -----------------------------------------------------------------

    def _resolve(self, host: Node, namespace: str) -> Service | None:
        name = host.raw
        if not isinstance(name, str):
            self.diags.add("E1006", "a host is a string", host.span)
            return None
        svc = self.by_host.get(name) or self.by_host.get(f"{name}.{namespace}")
        if svc is None:
            from compiler.core.diagnostics import did_you_mean

            self.diags.add("E1007", f"host `{name}` is not a service of the imported files", host.value_span,
                           did_you_mean(name, [h for h in self.by_host if "." not in h])
                           or "import its Kubernetes Service or ServiceEntry too")
        return svc

    def _destinationrule(self, obj: Obj) -> None:
        spec = obj.spec()
        host = spec.at("host") if spec is not None else None
        if spec is None or host is None:
            self.diags.add("E1006", "DestinationRule without `spec.host`", obj.node.span)
            return
        svc = self._resolve(host, obj.namespace)
        if svc is None:
            spec.consume()
            return
        policy = spec.at("trafficPolicy")
        if policy is not None:
            self._traffic_policy(svc, policy)
        subsets = spec.at("subsets")
        for sub in (subsets.items() if subsets is not None else []):
            name = sub.at("name")
            if name is None or not isinstance(name.raw, str) or not _NAME.match(name.raw):
                self.diags.add("E1006", "a subset needs a `name` that is a meshc name", sub.span)
                continue
            labels = sub.at("labels")
            lab = labels.consume() if labels is not None else {}
            if not isinstance(lab, dict):
                self.diags.add("E1006", "`labels` is a mapping", sub.span)
                continue
            svc.subsets.append((name.raw, lab, sub.span))
            tp = sub.at("trafficPolicy")
            if tp is not None:
                before = (svc.limits, svc.outlier, svc.budget)
                self._traffic_policy(svc, tp)
                if (svc.limits, svc.outlier, svc.budget) != before and policy is not None:
                    self.diags.add("E1005", f"subset `{name.raw}` has a traffic policy of its own",
                                   tp.span, "meshc's limits, outlier detection and retry budget are the same for "
                                   "every subset of a service")

    def _traffic_policy(self, svc: Service, tp: Node) -> None:
        pool = tp.at("connectionPool")
        limits = {"connections": UINT32_MAX, "pending": UINT32_MAX, "requests": UINT32_MAX, "retries": UINT32_MAX}
        if pool is not None:
            for path, key in ((("tcp", "maxConnections"), "connections"),
                              (("http", "http1MaxPendingRequests"), "pending"),
                              (("http", "http2MaxRequests"), "requests"), (("http", "maxRetries"), "retries")):
                part = pool.at(path[0])
                value = part.at(path[1]) if part is not None else None
                if value is not None:
                    v = self._int(value, 1, UINT32_MAX)
                    if v is not None:
                        limits[key] = v
            # meshc's sidecars connect within 1 s and close a pooled connection idle for 1 h (the
            # values `--target istio` writes): only those are exact
            for part_name, key, want, what in (("tcp", "connectTimeout", 1000, "1s"),
                                             ("http", "idleTimeout", 3_600_000, "1h")):
                part = pool.at(part_name)
                value = part.at(key) if part is not None else None
                if value is not None and self._duration(value) not in (want, None):
                    self.diags.add("E1005", f"`{key}: {value.raw}` cannot be translated", value.span,
                                   f"meshc's sidecars use {what}")
        svc.limits = limits
        lb = tp.at("loadBalancer")
        if lb is not None:
            simple = lb.at("simple")
            if simple is not None and simple.raw == "ROUND_ROBIN" and len(lb.raw) == 1:
                lb.consume()   # meshc balances round robin; anything else is reported as untranslated
        tls = tp.at("tls")
        if tls is not None:
            mode = tls.at("mode")
            if mode is not None and mode.raw in ("ISTIO_MUTUAL", "DISABLE") and len(tls.raw) == 1:
                svc.dr_tls = mode.raw
                tls.consume()  # the caller's side of the destination's mTLS mode (PeerAuthentication)
        od = tp.at("outlierDetection")
        if od is not None:
            out: dict[str, object] = {}
            for field, key in (("consecutive5xxErrors", "consecutive_5xx"),
                               ("consecutiveGatewayErrors", "consecutive_gateway_errors")):
                f = od.at(field)
                if f is not None:
                    n = self._int(f, 0, UINT32_MAX)
                    if n == 0 and key == "consecutive_5xx":
                        self.diags.add("E1005", "`consecutive5xxErrors: 0` (no ejection on 5xx) cannot be translated",
                                       f.span, "meshc's outlier detection always ejects on consecutive 5xx")
                    elif n:
                        out[key] = n
            for field, key in (("interval", "interval"), ("baseEjectionTime", "ejection")):
                f = od.at(field)
                if f is not None:
                    ms = self._duration(f)
                    if ms is not None:
                        out[key] = f"{ms}ms"
            f = od.at("maxEjectionPercent")
            if f is not None:
                n = self._int(f, 0, 100)
                if n is not None:
                    out["max_ejected"] = f"{n}%"
            mh = od.at("minHealthPercent")
            if mh is None or mh.raw != 50:
                self.diags.add("W1003", "Istio turns Envoy's panic threshold off (`minHealthPercent` "
                               f"{mh.raw if mh is not None else 0}%); meshc keeps Envoy's 50%", (mh or od).span,
                               "with fewer than half of a subset's endpoints in service, meshc sends traffic to "
                               "every endpoint again; write `minHealthPercent: 50` to say so in Istio too")
            svc.outlier = out
        rb = tp.at("retryBudget")
        if rb is not None:
            budget: dict[str, object] = {}
            p = rb.at("percent")
            if p is not None:
                if isinstance(p.raw, (int, float)) and not isinstance(p.raw, bool) and 0 <= p.raw <= 100:
                    budget["percent"] = _percent(float(p.raw))
                else:
                    self.diags.add("E1006", "`percent` is a number from 0 to 100", p.span)
            m = rb.at("minRetryConcurrency")
            if m is not None:
                n = self._int(m, 0, UINT32_MAX)
                if n is not None:
                    budget["min_concurrency"] = n
            svc.budget = budget

    # ---- PeerAuthentication --------------------------------------------------------------

    def _peerauthentication(self, obj: Obj) -> None:
        spec = obj.spec()
        if spec is None:
            return
        mtls = spec.at("mtls")
        mode = mtls.at("mode") if mtls is not None else None
        modes = {"STRICT": "strict", "PERMISSIVE": "permissive", "DISABLE": "disable", "UNSET": None}
        if mode is None:
            return
        if not isinstance(mode.raw, str) or mode.raw not in modes:
            self.diags.add("E1006", f"unknown mTLS mode `{mode.raw}`", mode.value_span, "STRICT, PERMISSIVE, DISABLE "
                           "or UNSET")
            return
        value = modes[mode.raw]
        if value is None:
            return
        selector = spec.at("selector")
        if selector is None:
            if obj.namespace == ROOT_NAMESPACE:
                self.mesh_mtls = (value, mode.span)
            else:
                for svc in self._namespace_services(obj.namespace):
                    if svc.mtls is None or svc.mtls[0] == "":
                        svc.mtls = (value, mode.span)
            return
        for svc in self._selected(selector, obj):
            svc.mtls = (value, mode.span)

    def _namespace_services(self, namespace: str) -> list[Service]:
        return [s for s in self.services.values() if (s.kube or s.internal) and s.namespace == namespace]

    def _selected(self, selector: Node, obj: Obj) -> list[Service]:
        """The services whose every pod the selector selects; E1005 for one it selects some pods of."""
        match = selector.at("matchLabels")
        labels = match.consume() if match is not None else {}
        if not isinstance(labels, dict):
            return []
        found = []
        for svc in self._namespace_services(obj.namespace):
            pods = svc.pod_labels or ([svc.selector] if svc.kube else svc.endpoint_labels)
            hits = [all(p.get(k) == str(v) for k, v in labels.items()) for p in pods]
            if all(hits):
                found.append(svc)
            elif any(hits):
                self.diags.add("E1005", f"the selector selects some of the pods of service `{svc.name}`",
                               selector.span, "meshc's policies apply to every pod of a service")
        if not found:
            self.diags.add("W1003", f"{obj.kind} `{obj.name}` selects no service of the imported files: skipped",
                           selector.span)
        return found

    # ---- AuthorizationPolicy -------------------------------------------------------------

    def _authorizationpolicy(self, obj: Obj) -> None:
        spec = obj.spec()
        raw = spec.raw if spec is not None else {}
        if spec is None:
            targets = self._namespace_services(obj.namespace) if obj.namespace != ROOT_NAMESPACE else \
                [s for s in self.services.values() if s.kube]
            action = "ALLOW"
            rules: list[Node] = []
        else:
            act = spec.at("action")
            action = act.raw if act is not None else "ALLOW"
            if action not in ("ALLOW", "DENY"):
                if act is not None:
                    self.diags.add("E1005", f"action `{action}` cannot be translated", act.value_span,
                                   "meshc rules allow or deny (AUDIT and CUSTOM have no meshc form)")
                return
            selector = spec.at("selector")
            if selector is not None:
                targets = self._selected(selector, obj)
            elif obj.namespace == ROOT_NAMESPACE:
                targets = [s for s in self.services.values() if s.kube]
            else:
                targets = self._namespace_services(obj.namespace)
            rules_node = spec.at("rules")
            rules = rules_node.items() if rules_node is not None else []
        del raw
        lines: list[tuple[str, Span]] = []
        count = 0
        for rule in rules:
            for conds in self._rule(rule):
                count += 1
                lines.append((conds, rule.span))
        for svc in targets:
            if action == "ALLOW":
                svc.allow_policies += 1
            dest = svc.allow if action == "ALLOW" else svc.deny
            for i, (conds, span) in enumerate(lines, start=1):
                name = obj.name if len(lines) == 1 else f"{obj.name}-{i}"
                if not _NAME.match(name):
                    name = f"{action.lower()}-{name}"
                if name in svc.rule_names:
                    name = f"{obj.namespace}-{name}"
                svc.rule_names.add(name)
                dest.append((f"{action.lower()} {name} {{ {conds} }}", span))

    def _rule(self, rule: Node) -> list[str]:
        """One Istio rule as meshc rules (their OR): the cross product of its sources and operations."""
        froms: list[str] = [""]
        tos: list[str] = [""]
        when_parts: list[str] = []
        src = rule.at("from")
        if src is not None:
            froms = []
            for s in src.items():
                source = s.at("source")
                froms += self._source(source) if source is not None else [""]
        to = rule.at("to")
        if to is not None:
            tos = []
            for t in to.items():
                op = t.at("operation")
                tos += self._operation(op) if op is not None else [""]
        when = rule.at("when")
        for w in (when.items() if when is not None else []):
            part = self._when(w)
            if part is not None:
                when_parts.append(part)
        when_text = "  ".join(when_parts)
        return ["  ".join(p for p in (f, t, when_text) if p) for f in froms for t in tos]

    def _source(self, source: Node) -> list[str]:
        parts = []
        principals = source.at("principals")
        if principals is not None:
            ids = []
            for p in principals.items():
                v = p.raw
                if not isinstance(v, str) or "*" in v[:-1] or v in ("*", "") or \
                        (v.endswith("*") and not v.endswith("/*")):
                    self.diags.add("E1005", f"principal `{v}` cannot be translated", p.span,
                                   "meshc identities are exact, or a prefix ending in `/*`")
                    continue
                ids.append(_string(f"spiffe://{v}"))
            if ids:
                parts.append(f"from identity {_one_or_list(ids)}")
        namespaces = source.at("namespaces")
        if namespaces is not None:
            names = []
            for n in namespaces.items():
                if not isinstance(n.raw, str) or "*" in n.raw:
                    self.diags.add("E1005", f"namespace pattern `{n.raw}` cannot be translated", n.span,
                                   "meshc namespaces are exact")
                    continue
                names.append(_string(n.raw))
            if names:
                parts.append(f"from namespace {_one_or_list(names)}")
        if len(parts) > 1:
            self.diags.add("E1005", "a source with both `principals` and `namespaces` cannot be translated",
                           source.span, "a meshc rule has one `from`; a principal names its namespace already")
            return [parts[0]]
        return parts or [""]

    def _operation(self, op: Node) -> list[str]:
        methods = op.at("methods")
        method = ""
        if methods is not None:
            ms = [m.raw for m in methods.items()]
            bad = [m for m in methods.items() if m.raw not in METHODS]
            for m in bad:
                self.diags.add("E1005", f"method `{m.raw}` cannot be translated", m.span,
                               f"meshc methods are {', '.join(METHODS)}")
            if not bad:
                method = f"method {ms[0]}" if len(ms) == 1 else f"method [{', '.join(ms)}]"
        exclusions = self._exclusions(op)
        paths = op.at("paths")
        if paths is None:
            return ["  ".join(c for c in (method, exclusions) if c)]
        out = []
        written = [p.raw for p in paths.items()]
        for p in paths.items():
            v = p.raw
            if not isinstance(v, str):
                self.diags.add("E1006", "a path is a string", p.span)
                continue
            if v.endswith("/*") and v[:-2] in written and v[:-2]:
                continue          # folded into the segment-aware prefix of its exact path, below
            if v + "/*" in written and "*" not in v:
                cond = f"path prefix {_string(v)}"   # `X` or `X/*`: meshc's segment-aware prefix
            elif v == "*":
                cond = ""
            elif v.endswith("*") and "*" not in v[:-1]:
                cond = f"path raw_prefix {_string(v[:-1])}"
            elif "*" in v:
                self.diags.add("E1005", f"path pattern `{v}` cannot be translated", p.span,
                               "meshc paths are exact or prefixes (`/api/*`); a suffix pattern has no meshc form")
                continue
            else:
                cond = f"path exact {_string(v)}"
            out.append("  ".join(c for c in (cond, method, exclusions) if c))
        return out

    def _exclusions(self, op: Node) -> str:
        """`notPaths` and `notMethods` as meshc's `not path` and `not method` (the rule holds when
        the path is none of them and the method none of them: Istio's semantics)."""
        out = []
        not_methods = op.at("notMethods")
        if not_methods is not None:
            ms = [m.raw for m in not_methods.items()]
            bad = [m for m in not_methods.items() if m.raw not in METHODS]
            for m in bad:
                self.diags.add("E1005", f"method `{m.raw}` cannot be translated", m.span,
                               f"meshc methods are {', '.join(METHODS)}")
            if ms and not bad:
                out.append(f"not method {ms[0]}" if len(ms) == 1 else f"not method [{', '.join(ms)}]")
        not_paths = op.at("notPaths")
        if not_paths is not None:
            written = [p.raw for p in not_paths.items()]
            for p in not_paths.items():
                v = p.raw
                if not isinstance(v, str):
                    self.diags.add("E1006", "a path is a string", p.span)
                    continue
                if v.endswith("/*") and v[:-2] in written and v[:-2]:
                    continue      # folded into the segment-aware prefix of its exact path
                if v + "/*" in written and "*" not in v:
                    out.append(f"not path prefix {_string(v)}")
                elif v.endswith("*") and "*" not in v[:-1] and v != "*":
                    out.append(f"not path raw_prefix {_string(v[:-1])}")
                elif "*" in v:
                    self.diags.add("E1005", f"path pattern `{v}` cannot be translated", p.span,
                                   "meshc's `not path` is exact or a prefix (`/api/*`)")
                else:
                    out.append(f"not path exact {_string(v)}")
        return "  ".join(out)

    def _when(self, w: Node) -> str | None:
        key = w.at("key")
        k = key.raw if key is not None else None
        m = re.fullmatch(r"request\.headers\[([^\]]+)\]", k) if isinstance(k, str) else None
        if m is None:
            self.diags.add("E1005", f"condition `{k}` cannot be translated", (key or w).span,
                           "meshc rules test request headers (`request.headers[NAME]`), sources and operations")
            w.consume()
            return None
        name = m.group(1).lower()
        values = w.at("values")
        vals = [v.raw for v in values.items()] if values is not None else []
        not_node = w.at("notValues")
        nots = [v.raw for v in not_node.items()] if not_node is not None else []
        if not vals and nots == ["*"]:
            return f"header {_string(name)} absent"   # none of "any value": the header is absent
        if not vals or not all(isinstance(v, str) for v in vals + nots):
            self.diags.add("E1005", "a condition without `values` cannot be translated", w.span,
                           "`notValues` alone means \"absent or none of\", which a meshc header test cannot say")
            return None
        if nots:
            # `values: ["*"]` and `notValues`: present, and no value is one of them (meshc's `not header`)
            if vals != ["*"]:
                self.diags.add("E1005", "`notValues` beside values other than `*` cannot be translated",
                               not_node.span)  # type: ignore[union-attr]
                return None
            test = self._value_test(name, nots, not_node)  # type: ignore[arg-type]
            return f"not {test}" if test is not None else None
        return self._value_test(name, vals, values)  # type: ignore[arg-type]

    def _value_test(self, name: str, vals: list[str], where: Node) -> str | None:
        """`header NAME …` for Istio's values of one condition (any of them)."""
        if len(vals) == 1:
            v = vals[0]
            if v == "*":
                return f"header {_string(name)} present"
            if v.endswith("*") and "*" not in v[:-1]:
                return f"header {_string(name)} prefix {_string(v[:-1])}"
            if v.startswith("*") and "*" not in v[1:]:
                return f"header {_string(name)} suffix {_string(v[1:])}"
            if "*" in v:
                self.diags.add("E1005", f"value pattern `{v}` cannot be translated", where.span)
                return None
            return f"header {_string(name)} exact {_string(v)}"
        if any("*" in v for v in vals):
            self.diags.add("E1005", "several values with `*` patterns cannot be translated", where.span)
            return None
        return f"header {_string(name)} regex {_string('|'.join(_re2_literal(v) for v in vals))}"

    # ---- VirtualService ------------------------------------------------------------------

    def _virtualservice(self, obj: Obj) -> None:
        spec = obj.spec()
        if spec is None:
            return
        gateways = spec.at("gateways")
        if gateways is not None and [g.raw for g in gateways.items()] == ["mesh"]:
            gateways.consume()
        export = spec.at("exportTo")
        if export is not None and [e.raw for e in export.items()] == ["*"]:
            export.consume()
        hosts = spec.at("hosts")
        targets = []
        others = []
        for h in (hosts.items() if hosts is not None else []):
            known = isinstance(h.raw, str) and (h.raw in self.by_host or f"{h.raw}.{obj.namespace}" in self.by_host)
            if isinstance(h.raw, str) and not known and _WRITTEN_HOST.fullmatch(h.raw) \
                    and not re.search(r"\.svc(\.|$)", h.raw):
                others.append(h)      # a name of the service beside its Kubernetes names: `hosts [...]`
                continue
            svc = self._resolve(h, obj.namespace)
            if svc is not None and svc not in targets:
                targets.append(svc)
        if others and len(targets) != 1:
            for h in others:
                self.diags.add("E1007", f"host `{h.raw}` is not a service of the imported files", h.value_span,
                               "a VirtualService's other hosts become `hosts [...]` of its one service: "
                               "name one service of the imported files beside them")
        elif others:
            targets[0].written_hosts += [(str(h.raw).lower(), h.span) for h in others]
        http = spec.at("http")
        if http is None:
            return
        routes: list[list[tuple[str, Span]]] = []
        for i, route in enumerate(http.items(), start=1):
            routes.append(self._route(route, i, obj))
        for svc in targets:
            if svc.routes is not None:
                self.diags.add("E1009", f"two VirtualServices for service `{svc.name}`", obj.node.span,
                               "Istio merges them only on gateways: write the routes in one VirtualService",
                               (Label(svc.routes_span, "the first"),) if svc.routes_span else ())
                continue
            svc.routes, svc.routes_span = routes, obj.node.span

    def _route(self, route: Node, index: int, obj: Obj) -> list[tuple[str, Span]]:
        out: list[tuple[str, Span]] = []
        if not isinstance(route.raw, dict):
            self.diags.add("E1006", f"`{route.field}` is an HTTP route (a mapping)", route.span)
            return out
        name_node = route.at("name")
        name = name_node.raw if name_node is not None and isinstance(name_node.raw, str) \
            and _NAME.match(name_node.raw) else f"route-{index}"
        out.append((f"route {name} {{", route.span))
        matches = route.at("match")
        parts = [(alt, m.span) for m in (matches.items() if matches is not None else [])
                 for alt in self._match(m, obj.namespace)]
        for (path, methods, rest), span in _fold_matches(parts):
            method = "" if methods is None else f"method {methods[0]}" if len(methods) == 1 else \
                f"method [{', '.join(methods)}]"
            callers = [c for c in rest if c.startswith("caller ")]
            others = [c for c in rest if not c.startswith("caller ")]
            out.append((f"match {{ {'  '.join(c for c in (*callers, path, *others, method) if c)} }}", span))
        dests = route.at("route")
        items = dests.items() if dests is not None else []
        redirect, direct = route.at("redirect"), route.at("directResponse")
        if redirect is not None:
            out.append((self._redirect(redirect), redirect.span))
        elif direct is not None:
            out.append((self._direct_response(direct), direct.span))
        if not items:
            if redirect is None and direct is None and "delegate" not in route.raw:
                self.diags.add("E1005", "an HTTP route without `route` destinations cannot be translated", route.span,
                               "meshc routes forward to a destination, redirect or answer themselves")
            if redirect is not None or direct is not None:
                headers = route.at("headers")
                if headers is not None:
                    for side, keyword in (("request", "request_headers"), ("response", "response_headers")):
                        part = headers.at(side)
                        if part is not None:
                            out.append((f"{keyword} {{ {self._header_ops(part)} }}", part.span))
                out.append(("}", route.span))
                return out
        elif len(items) == 1 and items[0].at("weight") is None and items[0].at("headers") is None:
            d = self._destination(items[0], obj)
            if d:
                out.append((f"to {d}", items[0].span))
        else:
            entries = []
            for item in items:
                d = self._destination(item, obj)
                w = item.at("weight")
                weight = self._int(w, 0, UINT32_MAX) if w is not None else 0
                if len(items) == 1 and not weight:
                    weight = 100   # a lone destination takes everything (Istio ignores its weight)
                if d:
                    entries.append(f"{d} {weight or 0}{self._destination_headers(item, route, len(items) == 1)}")
            out.append((f"split {{ {'  '.join(entries)} }}", route.span if dests is None else dests.span))
        rewrite = route.at("rewrite")
        if rewrite is not None:
            text = self._rewrite(rewrite, route)
            if text:
                out.append((text, rewrite.span))
        timeout = route.at("timeout")
        ms = self._duration(timeout) if timeout is not None else 0
        out.append(("timeout none" if not ms else f"timeout {ms}ms", (timeout or route).span))
        out += self._retries(route)
        fault = route.at("fault")
        if fault is not None:
            out.append((self._fault(fault), fault.span))
        mirror = route.at("mirror")
        mirrors = route.at("mirrors")
        if mirror is not None:
            d = self._destination_of(mirror, obj)
            pct = route.at("mirrorPercentage")
            value = pct.at("value") if pct is not None else None
            share = self._share(pct, value)
            if d:
                out.append((f"mirror {d} {share}", mirror.span))
        elif mirrors is not None:   # several mirrors: one `mirror` each, in order (language §12)
            for each in mirrors.items():
                dest = each.at("destination")
                d = self._destination_of(dest, obj) if dest is not None else None
                pct = each.at("percentage")
                value = pct.at("value") if pct is not None else None
                share = self._share(pct, value)
                if d:
                    out.append((f"mirror {d} {share}", each.span))
        headers = route.at("headers")
        if headers is not None:
            for side, keyword in (("request", "request_headers"), ("response", "response_headers")):
                part = headers.at(side)
                if part is not None:
                    out.append((f"{keyword} {{ {self._header_ops(part)} }}", part.span))
        cors = route.at("corsPolicy")
        if cors is not None:
            line = self._cors(cors)
            if line:
                out.append((line, cors.span))
        out.append(("}", route.span))
        return out

    def _cors(self, cors: Node) -> str:
        """A `corsPolicy` as meshc's `cors { … }` (language §13a): the same origin matchers, lists,
        max age and credentials; `unmatchedPreflights: IGNORE` has no meshc form (meshc forwards
        a preflight from an origin it does not allow, as Istio's default FORWARD)."""
        origins = []
        for item in (cors.at("allowOrigins").items() if cors.at("allowOrigins") is not None else []):  # type: ignore[union-attr]
            kind, value = self._string_match(item, ("exact", "prefix", "regex"))
            if kind:
                origins.append(f"{kind} {_string(value)}")
        for item in (cors.at("allowOrigin").items() if cors.at("allowOrigin") is not None else []):  # type: ignore[union-attr]
            if isinstance(item.raw, str):   # the deprecated form: exact origins
                origins.append(f"exact {_string(item.raw)}")
        parts = [f"origins [{', '.join(origins)}]"] if origins else []
        methods = cors.at("allowMethods")
        if methods is not None:
            names = [m.raw for m in methods.items() if isinstance(m.raw, str)]
            if any(not re.fullmatch(r"[A-Z]+", n) for n in names):
                self.diags.add("E1005", f"CORS methods {names} cannot be translated", methods.span,
                               "meshc lists the methods by name, such as `GET`, `POST`")
                names = [n for n in names if re.fullmatch(r"[A-Z]+", n)]
            if names:
                parts.append(f"methods [{', '.join(names)}]")
        for field, keyword in (("allowHeaders", "headers"), ("exposeHeaders", "expose")):
            node = cors.at(field)
            values = [h.raw for h in node.items() if isinstance(h.raw, str)] if node is not None else []
            if values:
                parts.append(f"{keyword} [{', '.join(_string(v) for v in values)}]")
        age = cors.at("maxAge")
        if age is not None:
            ms = self._duration(age)
            if ms is not None:
                parts.append(f"max_age {ms // 1000}s" if ms % 1000 == 0 and ms else f"max_age {ms}ms")
        credentials = cors.at("allowCredentials")
        if credentials is not None and credentials.raw is True:
            parts.append("credentials")
        unmatched = cors.raw.get("unmatchedPreflights") if isinstance(cors.raw, dict) else None
        if unmatched in ("FORWARD", "UNSPECIFIED"):
            cors.at("unmatchedPreflights")   # meshc's own behaviour (read; anything else is E1005)
        if not origins:
            self.diags.add("E1005", "a `corsPolicy` without origins cannot be translated", cors.span,
                           "meshc's `cors` lists the origins it allows (Istio then allows none)")
            return ""
        return "cors { " + "  ".join(parts) + " }"

    def _match(self, m: Node, namespace: str) -> list[tuple[str, tuple[str, ...] | None, tuple[str, ...]]]:
        """(the path condition, the methods or None, the other conditions) of each meshc match block
        one Istio match becomes (usually one)."""
        conds = []
        path = ""
        methods: tuple[str, ...] | None = None
        m.at("name")
        ignore = m.at("ignoreUriCase")
        uri = m.at("uri")
        if uri is not None:
            kind, value = self._string_match(uri, ("exact", "prefix", "regex"))
            if kind:
                form = {"exact": "exact", "prefix": "raw_prefix", "regex": "regex"}[kind]
                cond = f"path {form} {_string(value)}"
                if ignore is not None and ignore.raw is True:
                    if kind == "regex":
                        self.diags.add("E1005", "`ignoreUriCase` on a regex cannot be translated", ignore.span,
                                       "write `(?i)` in the regex")
                    cond += " ignore_case"
                path = cond
        # Istio's `withoutHeaders` inverts with treat_missing_header_as_empty: an absent header passes
        # it. Beside `headers: {NAME: {}}` (present) it is meshc's `not header`; alone, it is "absent,
        # or present and no value passes": two match blocks.
        hs, without = m.at("headers"), m.at("withoutHeaders")
        present = {n for n, h in (hs.entries() if hs is not None else []) if isinstance(h.raw, dict) and not h.raw}
        inverted = {n for n, h in (without.entries() if without is not None else [])
                    if not (isinstance(h.raw, dict) and not h.raw)}
        alternatives: list[tuple[str, str]] = []
        for key, negate in (("headers", ""), ("withoutHeaders", "not ")):
            part = hs if key == "headers" else without
            for hname, h in (part.entries() if part is not None else []):
                part.at(hname)  # type: ignore[union-attr]
                name = _string(hname.lower())
                if isinstance(h.raw, dict) and not h.raw:
                    if not negate and hname in inverted:
                        continue          # the presence half of a `not header`
                    conds.append(f"{negate}header {name} present")
                    continue
                kind, value = self._string_match(h, ("exact", "prefix", "regex"))
                if not kind:
                    continue
                test = f"{kind} {_string(value)}"
                if kind == "regex":
                    decoded = _literal_regex(value)
                    if decoded is not None:
                        test = f"{decoded[0]} {_string(decoded[1])}" + (" ignore_case" if decoded[2] else "")
                if negate and hname not in present:
                    alternatives.append((f"header {name} absent", f"not header {name} {test}"))
                else:
                    conds.append(f"{negate}header {name} {test}")
        qs = m.at("queryParams")
        for qname, q in (qs.entries() if qs is not None else []):
            qs.at(qname)  # type: ignore[union-attr]
            if isinstance(q.raw, dict) and not q.raw:   # "only the name: presence of the key is checked"
                conds.append(f"query {_string(qname)} present")
                continue
            kind, value = self._string_match(q, ("exact", "regex"))
            if kind:
                conds.append(f"query {_string(qname)} {kind} {_string(value)}")
        source = m.at("sourceLabels")
        if source is not None:
            caller = self._caller(source, namespace)
            if caller:
                conds.insert(0, f"caller {caller}")
        method = m.at("method")
        if method is not None:
            kind, value = self._string_match(method, ("exact", "regex"))
            names = value.split("|") if kind == "regex" else [value]
            if kind and all(n in METHODS for n in names):
                methods = tuple(names)
            elif kind:
                self.diags.add("E1005", f"method match `{value}` cannot be translated", method.span,
                               f"meshc methods are {', '.join(METHODS)}, or an alternation of them (`GET|HEAD`)")
        out = [(path, methods, tuple(conds))]
        for a, b in alternatives:
            out = [(p, ms, rest + (c,)) for p, ms, rest in out for c in (a, b)]
        return out

    def _caller(self, source: Node, namespace: str) -> str:
        """`sourceLabels: {app: NAME}` as meshc's `caller NAME`, which `--target istio`
        writes so (language §7): NAME must be a service of the imported files whose every pod has the label
        `app: NAME`; other labels are E1005 (meshc names callers by service only)."""
        raw = source.raw
        name = raw.get("app") if isinstance(raw, dict) and len(raw) == 1 else None
        svc = self._named(name, namespace) if isinstance(name, str) else None
        pods = (svc.pod_labels or ([svc.selector] if svc.kube else svc.endpoint_labels)) if svc else []
        if svc is None or not (svc.kube or svc.internal) or not pods or \
                any(p.get("app") != name for p in pods):
            source.consume()
            self.diags.add("E1005", f"`{source.field}` cannot be translated", source.span,
                           "meshc's `caller NAME` is `sourceLabels: {app: NAME}`, NAME a service of the "
                           "imported files whose every pod has the label `app: NAME`")
            return ""
        source.consume()
        return svc.ref

    def _string_match(self, node: Node, kinds: tuple[str, ...]) -> tuple[str, str]:
        if not isinstance(node.raw, dict) or len(node.raw) != 1:
            self.diags.add("E1006", f"`{node.field}` is a string match: one of {', '.join(kinds)}", node.span)
            return "", ""
        (kind, value), = node.raw.items()
        sub = node.at(kind)
        if kind not in kinds:
            if kind in ("exact", "prefix", "regex"):
                self.diags.add("E1005", f"`{kind}` match of `{node.field}` cannot be translated",
                               sub.span if sub else node.span,
                               f"meshc's forms here are {', '.join(kinds)}")
            return "", ""
        if not isinstance(value, str):
            self.diags.add("E1006", f"`{node.field}.{kind}` is a string", node.span)
            return "", ""
        return kind, value

    def _destination(self, item: Node, obj: Obj) -> str | None:
        dest = item.at("destination")
        if dest is None:
            self.diags.add("E1006", "a route destination without `destination`", item.span)
            return None
        return self._destination_of(dest, obj)

    def _destination_headers(self, item: Node, route: Node, lone: bool) -> str:
        """A destination's `headers` as its own `request_headers`/`response_headers` in the split,
        which meshc applies before the route's, as Istio does with several destinations. With one,
        Istio applies them after the route's: a header the destination sets or adds and the route
        also changes cannot be translated (E1005)."""
        hs = item.at("headers")
        if hs is None:
            return ""
        out = ""
        for side, keyword in (("request", "request_headers"), ("response", "response_headers")):
            part = hs.at(side)
            if part is None:
                continue
            if lone:
                mine = {str(n).lower() for key in ("set", "add") for n, _ in
                        (part.at(key).entries() if part.at(key) is not None else [])}  # type: ignore[union-attr]
                theirs_node = route.at("headers")
                theirs = theirs_node.at(side) if theirs_node is not None else None
                names: set[str] = set()
                if theirs is not None and isinstance(theirs.raw, dict):
                    for key, value in theirs.raw.items():
                        if (key == "remove" and isinstance(value, list)) or isinstance(value, dict):
                            names |= {str(v).lower() for v in value}
                common = sorted(mine & names)
                if common:
                    self.diags.add("E1005", f"header `{common[0]}` changed by the only destination and by the "
                                   "route cannot be translated", part.span,
                                   "with one destination Istio applies its changes after the route's; meshc "
                                   "applies a destination's first")
            out += f" {keyword} {{ {self._header_ops(part)} }}"
        return out

    def _redirect(self, node: Node) -> str:
        """HTTPRedirect as `redirect { ... }`: `uri` the whole path, `authority` the host, `scheme`,
        `port`, `redirectCode` the status (Istio's 301 by default, meshc's too)."""
        parts = []
        for key, word in (("scheme", "scheme"), ("authority", "host"), ("uri", "path")):
            v = node.at(key)
            if v is not None and isinstance(v.raw, str) and v.raw:
                parts.append(f"{word} {_string(v.raw)}")
        port = node.at("port")
        if port is not None:
            n = self._int(port, 1, 65535)
            if n:
                parts.append(f"port {n}")
        derive = node.at("derivePort")
        if derive is not None:
            self.diags.add("E1005", f"`derivePort: {derive.raw}` cannot be translated", derive.span,
                           "meshc keeps the request's port unless `port` is written")
        code = node.at("redirectCode")
        if code is not None:
            n = self._int(code, 0, UINT32_MAX)
            if n is not None and n not in (0, 301, 302, 303, 307, 308):
                self.diags.add("E1005", f"redirect code `{n}` cannot be translated", code.span,
                               "meshc redirects with 301, 302, 303, 307 or 308 (Istio drops any other)")
            elif n not in (None, 0, 301):
                parts.append(f"status {n}")
        return f"redirect {{ {'  '.join(parts)} }}"

    def _direct_response(self, node: Node) -> str:
        status = node.at("status")
        n = self._int(status, 200, 599) if status is not None else None
        if status is None:
            self.diags.add("E1006", "a direct response needs a `status`", node.span)
        body = node.at("body")
        text = ""
        if body is not None:
            string, raw = body.at("string"), body.at("bytes")
            if raw is not None:
                self.diags.add("E1005", "a direct response body in `bytes` cannot be translated", raw.span,
                               "write it as `string`")
            elif string is not None and isinstance(string.raw, str):
                text = f" {_string(string.raw)}"
        return f"respond {n or 200}{text}"

    def _rewrite(self, node: Node, route: Node) -> str:
        """HTTPRewrite: `uriRegexRewrite` a regex rewrite, `authority` the host; `uri` (Envoy's
        prefix_rewrite of the matched prefix) a `prefix` where every match is one Istio prefix, a
        `path` where every match is exact, else E1005."""
        parts = []
        regex, uri = node.at("uriRegexRewrite"), node.at("uri")
        if regex is not None:
            m, r = regex.at("match"), regex.at("rewrite")
            if m is not None and r is not None and isinstance(m.raw, str) and isinstance(r.raw, str):
                parts.append(_regex_rewrite(m.raw, r.raw, route))
            else:
                self.diags.add("E1006", "`uriRegexRewrite` needs `match` and `rewrite` strings", regex.span)
        elif uri is not None and isinstance(uri.raw, str):
            matches = route.raw.get("match") if isinstance(route.raw, dict) else None
            kinds = {next(iter(m["uri"]), "") for m in matches or [] if isinstance(m, dict)
                     and isinstance(m.get("uri"), dict) and m["uri"]}
            uris = [m.get("uri") for m in matches or [] if isinstance(m, dict)]
            if matches and kinds == {"prefix"} and len({str(u) for u in uris}) == 1:
                parts.append(f"prefix {_string(uri.raw)}")
            elif matches and kinds == {"exact"} and all(uris):
                parts.append(f"path {_string(uri.raw)}")
            else:
                self.diags.add("E1005", "`rewrite.uri` of a route not matched by one prefix or by exact paths cannot "
                               "be translated", uri.span, "Envoy replaces the prefix that matched; write "
                               "`uriRegexRewrite`")
        authority = node.at("authority")
        if authority is not None and isinstance(authority.raw, str) and authority.raw:
            parts.append(f"host {_string(authority.raw)}")
        return f"rewrite {{ {'  '.join(parts)} }}" if parts else ""

    def _destination_of(self, dest: Node, obj: Obj) -> str | None:
        host = dest.at("host")
        if host is None:
            self.diags.add("E1006", "a destination without `host`", dest.span)
            return None
        svc = self._resolve(host, obj.namespace)
        port = dest.at("port")
        if port is not None:
            number = port.at("number")
            if svc is not None and (number is None or number.raw != svc.port):
                self.diags.add("E1005", f"port `{number.raw if number else port.raw}` is not the port of service "
                               f"`{svc.name}`", port.span, "a meshc service has one port")
        if svc is None:
            return None
        subset = dest.at("subset")
        if subset is None:
            svc.uses_all = True
            return f"{svc.ref}.{svc.all_name}"
        if not any(s[0] == subset.raw for s in svc.subsets):
            from compiler.core.diagnostics import did_you_mean

            self.diags.add("E1008", f"service `{svc.name}` has no subset `{subset.raw}`", subset.value_span,
                           did_you_mean(str(subset.raw), [s[0] for s in svc.subsets])
                           or "declare it in the service's DestinationRule")
            return None
        return f"{svc.ref}.{subset.raw}"

    def _retries(self, route: Node) -> list[tuple[str, Span]]:
        r = route.at("retries")
        if r is None:
            self.diags.add("W1002", "Istio's default retry policy applies to this route: it becomes "
                           "`retry { attempts 2  on [connect-failure, refused-stream, 503] }`", route.span,
                           "meshc retries no gRPC status (Istio's default adds `unavailable` and `cancelled`) and may "
                           "retry on the same endpoint; write `retries: {attempts: 0}` for none")
            return [("retry { attempts 2  on [connect-failure, refused-stream, 503] }", route.span)]
        attempts = r.at("attempts")
        n = self._int(attempts, 0, 100) if attempts is not None else 2
        if not n:
            for key in ("perTryTimeout", "retryOn", "retryIgnorePreviousHosts", "retryRemoteLocalities", "backoff"):
                sub = r.at(key)
                if sub is not None:
                    sub.consume()
            return [("retry none", r.span)]
        parts = [f"attempts {n}"]
        on_node = r.at("retryOn")
        words: list[str] = []
        grpc: list[str] = []
        if on_node is not None and isinstance(on_node.raw, str) and on_node.raw.strip():
            for token in (t.strip() for t in on_node.raw.split(",")):
                if token in RETRY_WORDS or (token.isdigit() and 100 <= int(token) <= 599):
                    words.append(token)
                elif token == "retriable-status-codes":
                    pass   # the status codes are the numbers written beside it
                elif token in GRPC_RETRY:
                    grpc.append(token)
                else:
                    self.diags.add("E1005", f"retry condition `{token}` cannot be translated", on_node.span,
                                   "meshc retries on 5xx, gateway-error, reset, connect-failure, refused-stream, "
                                   "retriable-4xx and status codes")
        else:
            words = list(DEFAULT_RETRY_ON)
            grpc = ["unavailable", "cancelled"]
        if grpc:
            self.diags.add("W1002", f"gRPC retry conditions {', '.join(f'`{g}`' for g in grpc)} are left out",
                           (on_node or r).span, "meshc retries on HTTP outcomes; a gRPC status in a 200 response "
                           "is not retried")
        if not words:
            return [("retry none", r.span)]
        parts.append(f"on [{', '.join(dict.fromkeys(words))}]")
        per_try = r.at("perTryTimeout")
        if per_try is not None:
            ms = self._duration(per_try)
            if ms:
                parts.append(f"per_try_timeout {ms}ms")
        backoff = r.at("backoff")
        if backoff is not None:
            ms = self._duration(backoff)
            if ms:
                parts.append(f"backoff {ms}ms")
        prev = r.at("retryIgnorePreviousHosts")
        if prev is None or prev.raw is not False:
            self.diags.add("W1002", "Istio retries on another endpoint (`retryIgnorePreviousHosts`); meshc may retry "
                           "on the same one", (prev or r).span,
                           "write `retryIgnorePreviousHosts: false` to say what meshc does")
        remote = r.at("retryRemoteLocalities")
        if remote is not None and remote.raw is True:
            self.diags.add("E1005", "`retryRemoteLocalities` cannot be translated", remote.span,
                           "meshc has no localities")
        return [(f"retry {{ {'  '.join(parts)} }}", r.span)]

    def _fault(self, fault: Node) -> str:
        parts = []
        delay = fault.at("delay")
        if delay is not None:
            fixed = delay.at("fixedDelay")
            ms = self._duration(fixed) if fixed is not None else None
            if fixed is None:
                self.diags.add("E1005", "a delay without `fixedDelay` cannot be translated", delay.span)
            if ms:
                parts.append(f"delay {ms}ms {self._fault_percent(delay)}")
        abort = fault.at("abort")
        if abort is not None:
            status = abort.at("httpStatus")
            if status is None:
                self.diags.add("E1005", "an abort without `httpStatus` cannot be translated", abort.span,
                               "meshc aborts with an HTTP status")
            else:
                code = self._int(status, 200, 599)
                if code is not None:
                    parts.append(f"abort {code} {self._fault_percent(abort)}")
        return f"fault {{ {'  '.join(parts)} }}"

    def _fault_percent(self, node: Node) -> str:
        pct = node.at("percentage")
        if pct is not None:
            value = pct.at("value")
            if value is not None and isinstance(value.raw, (int, float)) and 0 <= value.raw <= 100:
                return _percent(float(value.raw))
            self.diags.add("E1006", "`percentage.value` is a number from 0 to 100", pct.span)
            return "0%"
        old = node.at("percent")
        if old is not None:
            n = self._int(old, 0, 100)
            return f"{n or 0}%"
        return "0%"   # Istio: "If left unspecified, no request will be delayed" (aborted)

    def _share(self, pct: Node | None, value: Node | None) -> str:
        """A mirror's percentage: 100% when unwritten (Istio: "If this field is absent, all the
        traffic (100%) will be mirrored")."""
        if pct is None:
            return "100%"
        if value is None or isinstance(value.raw, bool) or not isinstance(value.raw, (int, float)) \
                or not 0 <= value.raw <= 100:
            self.diags.add("E1006", "`value` is a number from 0 to 100", (value or pct).span)
            return "100%"
        return _percent(float(value.raw))

    def _header_ops(self, part: Node) -> str:
        ops = []
        remove = part.at("remove")
        for r in (remove.items() if remove is not None else []):
            ops.append(f"remove {_string(str(r.raw).lower())}")
        for key in ("set", "add"):
            sub = part.at(key)
            for name, value in (sub.entries() if sub is not None else []):
                sub.at(name)  # type: ignore[union-attr]
                text = _envoy_header_value(str(value.raw))
                if text is None:
                    self.diags.add("E1005", f"header value `{value.raw}` has a `%` that Envoy reads as a format "
                                   "command (`%…%`), which meshc cannot express", value.value_span,
                                   "Istio hands the value to Envoy, which replaces `%NAME%` per request (`%%` is "
                                   "one `%`); a meshc header value is sent as written")
                    continue
                ops.append(f"{key} {_string(name.lower())} {_string(text)}")
        return "  ".join(ops)

    # ---- values --------------------------------------------------------------------------

    def _int(self, node: Node, low: int, high: int) -> int | None:
        v = node.raw
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            self.diags.add("E1006", f"`{node.field}` is an integer from {low} to {high}", node.value_span)
            return None
        return v

    def _duration(self, node: Node) -> int | None:
        """Milliseconds of a protobuf Duration as Kubernetes writes it (`1.5s`, `300ms`, `1m`, `2h`)."""
        v = node.raw
        m = _DURATION.match(v) if isinstance(v, str) and v else None
        if m is None or not any(m.groups()):
            self.diags.add("E1006", f"`{node.field}` is not a duration", node.value_span,
                           "write `300ms`, `1.5s` or `2m`")
            return None
        h, mi, s, ms = m.groups()
        total = int(h or 0) * 3_600_000 + int(mi or 0) * 60_000 + int(ms or 0)
        if s:
            whole, _, frac = s.partition(".")
            total += int(whole) * 1000 + int((frac + "000")[:3])
            if len(frac) > 3 and int(frac[3:]):
                self.diags.add("E1005", f"`{v}` is finer than a millisecond", node.value_span,
                               "meshc durations are whole milliseconds")
        return total

    # ---- output --------------------------------------------------------------------------

    def render(self) -> dict[str, list[tuple[str, Span | None]]]:
        """The .mesh files (by name), as lines with the YAML span each one comes from."""
        files: dict[str, list[tuple[str, Span | None]]] = {}
        mode = self.mesh_mtls or ("permissive", None)
        domain = "" if self.trust_domain == "cluster.local" else f"trust_domain {_string(self.trust_domain)}  "
        files["mesh.mesh"] = [("# meshc import istio: mesh-wide settings", None),
                              (f"mesh {{ {domain}mtls {mode[0]} }}", mode[1])]
        for svc in sorted(self.services.values(), key=lambda s: (s.namespace, s.name)):
            lines = files.setdefault(f"{svc.namespace}.mesh", [])
            lines += self._service_lines(svc)
        return files

    def _service_lines(self, svc: Service) -> list[tuple[str, Span | None]]:
        out: list[tuple[str, Span | None]] = [("", None), (f"service {svc.name} {{", svc.span),
                                              (f"port {svc.port}", svc.span),
                                              (f"namespace {_string(svc.namespace)}", svc.span)]
        if svc.written_hosts:
            names = list(dict.fromkeys(h for h, _ in svc.written_hosts))
            out.append((f"hosts [{', '.join(_string(h) for h in names)}]", svc.written_hosts[0][1]))
        if svc.account:
            identity = f"spiffe://{self.trust_domain}/ns/{svc.namespace}/sa/{svc.account}"
            out.append((f"identity {_string(identity)}", svc.span))
        if not svc.kube and svc.dr_tls != "ISTIO_MUTUAL":
            # a ServiceEntry's endpoints lack the `security.istio.io/tlsMode` label: Istio's auto mTLS
            # sends them plaintext unless a DestinationRule says ISTIO_MUTUAL
            out.append(("mtls disable", svc.span))
        elif svc.mtls:
            out.append((f"mtls {svc.mtls[0]}", svc.mtls[1]))
        if svc.uses_all or svc.routes is None or not svc.subsets:
            if svc.kube and svc.selector and label_subsets():   # every pod of the Service: its selector
                body = " ".join(f"{_string(k)} {_string(v)}" for k, v in svc.selector.items())
                out.append((f"subset {svc.all_name} {{ labels {{ {body} }} }}", svc.span))
            else:
                out.append((f"subset {svc.all_name} {{ endpoints [{', '.join(_string(e) for e in svc.endpoints)}] }}",
                            svc.span))
        for name, labels, span in svc.subsets:
            if svc.kube and not label_subsets():
                self.diags.add("E1005", f"subset `{name}` selects pods by label, which this meshc cannot write yet",
                               span, "label-selected subsets (`subset v1 { labels { version \"v1\" } }`) come with "
                               "`--target istio` (issue 17); a ServiceEntry's subsets of static endpoints translate")
                continue
            if svc.kube:
                body = " ".join(f"{_string(k)} {_string(str(v))}" for k, v in labels.items())
                out.append((f"subset {name} {{ labels {{ {body} }} }}", span))
                continue
            eps = [e for e, lab in zip(svc.endpoints, svc.endpoint_labels, strict=False)
                   if all(lab.get(k) == v for k, v in labels.items())]
            if not eps:
                self.diags.add("E1008", f"subset `{name}` selects no endpoint of ServiceEntry `{svc.name}`", span)
            out.append((f"subset {name} {{ endpoints [{', '.join(_string(e) for e in eps)}] }}", span))
        limits = svc.limits or dict.fromkeys(("connections", "pending", "requests", "retries"), UINT32_MAX)
        if svc.budget is not None:
            limits = {k: v for k, v in limits.items() if k != "retries"}
        out.append((f"limits {{ {'  '.join(f'{k} {v}' for k, v in limits.items())} }}", svc.span))
        if svc.outlier is not None:
            out.append((f"outlier {{ {'  '.join(f'{k} {v}' for k, v in svc.outlier.items())} }}", svc.span))
        if svc.budget is not None:
            out.append((f"retry_budget {{ {'  '.join(f'{k} {v}' for k, v in svc.budget.items())} }}", svc.span))
        out.append(("}", svc.span))
        out += [("", None), (f"routes {svc.ref} {{", svc.routes_span or svc.span)]
        if svc.routes is None:   # Istio's default route: every request to every pod, no timeout, default retries
            self.diags.add("W1002", f"service `{svc.name}` has no VirtualService: Istio's default route and retry "
                           "policy become `route default`", svc.span,
                           "meshc retries no gRPC status and may retry on the same endpoint")
            out += [("route default {", svc.span), (f"to {svc.ref}.{svc.all_name}", svc.span),
                    ("timeout none", svc.span), (f"retry {{ {_DEFAULT_RETRY} }}", svc.span), ("}", svc.span)]
        else:
            for route in svc.routes:
                out += route
        out.append(("}", svc.span))
        if svc.allow_policies or svc.deny:
            out += [("", None), (f"authorization {svc.ref} {{", svc.span),
                    (f"default {'deny' if svc.allow_policies else 'allow'}", svc.span)]
            out += svc.deny + svc.allow
            out.append(("}", svc.span))
        return out


_DEFAULT_RETRY = "attempts 2  on [connect-failure, refused-stream, 503]"   # Istio's, without gRPC statuses
_ALL = "all"   # the subset of every endpoint of a service (Istio: a destination without `subset`)


def _literal_regex(pattern: str) -> tuple[str, str, bool] | None:
    """A regex that `--target istio` writes for what Istio's StringMatch lacks, read back: `.*LIT` a
    suffix, `LIT.*` a prefix, `LIT` exact, `[aA]`-folded letters `ignore_case`. None for any other
    regex, which stays a regex."""
    kind, body = "exact", pattern
    if body.startswith(".*"):
        kind, body = "suffix", body[2:]
    elif body.endswith(".*") and not body.endswith("\\.*"):
        kind, body = "prefix", body[:-2]
    literal, folded, i = [], False, 0
    while i < len(body):
        ch = body[i]
        pair = re.match(r"\[([a-z])([A-Z])\]", body[i:])
        if ch == "\\" and i + 1 < len(body):
            literal.append(body[i + 1])
            i += 2
        elif pair is not None and pair.group(1).upper() == pair.group(2):
            literal.append(pair.group(1))
            folded = True
            i += 4
        elif ch in ".^$*+?()[]{}|":
            return None
        else:
            literal.append(ch)
            i += 1
    # a regex of a literal (with `.*` at one end) is that exact, prefix or suffix test: the same requests
    return kind, "".join(literal), folded


# a VirtualService host meshc's `hosts` can hold: a DNS name with a dot, or `*.SUFFIX`
_WRITTEN_HOST = re.compile(r"(\*\.)?[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}"
                           r"[A-Za-z0-9])?)+")


def _fold_matches(parts: list) -> list:
    """Match blocks (OR) written the way Istio needs them, folded back into meshc's forms, each step
    an equivalence: blocks that differ only in their one method become one block with the methods
    (Istio's `method` is one string match), then `exact "X"` beside `raw_prefix "X/"` with the same
    other conditions becomes the segment-aware `prefix "X"` (what `--target istio` writes for it)."""
    merged: list = []
    for (path, methods, rest), span in parts:
        same = next((m for m in merged if m[0][0] == path and m[0][2] == rest and m[0][1] is not None
                     and methods is not None), None)
        if same is not None:
            same[0] = (path, same[0][1] + tuple(x for x in methods if x not in same[0][1]), rest)
        else:
            merged.append([(path, methods, rest), span])
    # blocks that differ only in their one caller: one block with the callers (Istio's `sourceLabels`
    # names one `app`; `--target istio` writes one match per caller)
    by_caller: list = []
    for (path, methods, rest), span in merged:
        caller = next((c for c in rest if c.startswith("caller ") and not c.startswith("caller [")), None)
        others = tuple(c for c in rest if c != caller)
        same = next((m for m in by_caller if caller is not None and m[2] is not None and m[0][0] == path
                     and m[0][1] == methods and m[3] == others), None)
        if same is not None and caller is not None:
            if caller[7:] not in same[2]:
                same[2].append(caller[7:])
        else:
            by_caller.append([(path, methods, rest), span, [caller[7:]] if caller else None, others])
    merged = []
    for (path, methods, rest), span, callers, others in by_caller:
        if callers is not None and len(callers) > 1:
            rest = (f"caller [{', '.join(callers)}]", *others)
        merged.append([(path, methods, rest), span])
    out: list = []
    used: set[int] = set()
    for i, ((path, methods, rest), span) in enumerate(merged):
        if i in used:
            continue
        m = re.fullmatch(r'path exact ("(?:[^"\\]|\\.)*")( ignore_case)?', path)
        if m is not None:
            value = m.group(1)[:-1]
            partner = f'path raw_prefix {value}{"" if value.endswith("/") else "/"}"{m.group(2) or ""}'
            j = next((j for j, ((p2, m2, r2), _) in enumerate(merged)
                      if j not in used and j != i and p2 == partner and m2 == methods and r2 == rest), None)
            if j is not None and not value.endswith("/"):
                used.add(j)
                path = f"path prefix {m.group(1)}{m.group(2) or ''}"
        out.append(((path, methods, rest), span))
    return out


def _envoy_header_value(text: str) -> str | None:
    """What Envoy sends for a header value Istio hands it: `%%` is one `%`; any other `%` begins a
    format command (`%DOWNSTREAM_REMOTE_ADDRESS%`, `%REQ(x)%`) or is malformed: None."""
    parts = text.split("%%")
    if any("%" in p for p in parts):
        return None
    return "%".join(parts)


_QUOTED = re.compile(r"`([^`]{81,})`")


def _shorten_quotes(text: str) -> str:
    """A value quoted in a message, cut to 80 characters (a 15 MB host is not printed in full)."""
    return _QUOTED.sub(lambda m: f"`{m[1][:77]}...`", text)


def _short(value: object) -> str:
    """A YAML value quoted for a message: a string in double quotes, at most 80 characters."""
    if isinstance(value, bool) or value is None:
        text = {True: "true", False: "false", None: "null"}[value]
    elif isinstance(value, int) and value.bit_length() > 256:
        text = "a number of more than 77 digits"
        return text
    else:
        text = f'"{value}"' if isinstance(value, str) else str(value)
    return f"`{text if len(text) <= 80 else text[:77] + '...'}`"


class _ImportCollector(Collector):
    """The importer's diagnostics, whose messages quote values from the YAML shortened."""

    def add(self, code: str, message: str, span: Span | None, hint: str | None = None,
            labels: tuple[Label, ...] = (), path: str | None = None) -> None:
        super().add(code, _shorten_quotes(message), span, hint if hint is None else _shorten_quotes(hint),
                    labels, path)


def label_subsets() -> bool:
    """Whether the language has label-selected subsets (`subset v1 { labels { version "v1" } }`)."""
    from compiler.core.diagnostics import Collector as _Collector
    from compiler.core.source import SourceFile
    from compiler.syntax.parse import parse_source

    diags = _Collector()
    parse_source(SourceFile("<probe>", 'service a { port 1 subset v1 { labels { version "v1" } } }'), diags)
    return not diags.has_errors


_FIELD = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[([0-9]+)\]|\[([^\]]*)\]")


def _field_path(text: str) -> tuple:
    """`spec.http[0].timeout` as a path of keys and indices (kubeschema's field_path, read back)."""
    out: list = []
    for m in _FIELD.finditer(text):
        name, index, key = m.groups()
        out.append(int(index) if index is not None else name if name is not None else key)
    return tuple(out)


def _host_forms(name: str, namespace: str) -> list[str]:
    return [f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]


def _string(value: str) -> str:
    from compiler.syntax.render import string

    return string(value)


def _one_or_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"[{', '.join(items)}]"


def _percent(value: float) -> str:
    from compiler.syntax.render import percent

    return percent(value)


def _re2_literal(text: str) -> str:
    return re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", text)


def documents_of(importer: Importer) -> list[Document]:
    return [o.node.doc for o in importer.objects]


_LITERAL_REWRITE = re.compile(r"(?:[^\\]|\\\\)*")   # no group reference: a literal substitution
_ANCHORED_PREFIX = re.compile(r"(\(\?i\))?\^((?:[^\\.*+?()\[\]{}|^$]|\\.)+)(/\?)?")


def _regex_rewrite(match: str, rewrite: str, route: Node) -> str:
    """`uriRegexRewrite` as meshc's rewrite: the forms meshc's Istio target writes for a whole-path
    and a prefix rewrite (`^.*$`; `^PREFIX`, `(?i)`, `/?`: compiler/backends/istio/routes.py) come
    back as `path` and `prefix` where the route's matches are that prefix; any other is `regex`."""
    if _LITERAL_REWRITE.fullmatch(rewrite):
        literal = rewrite.replace("\\\\", "\\")
        if match == "^.*$":
            return f"path {_string(literal)}"
        m = _ANCHORED_PREFIX.fullmatch(match)
        if m is not None:
            prefix = re.sub(r"\\(.)", r"\1", m.group(2))
            folded = bool(m.group(1))
            uris = [x for x in route.raw.get("match") or [] if isinstance(x, dict)] \
                if isinstance(route.raw, dict) else []
            want = [{"prefix": prefix}] if prefix.endswith("/") else [{"exact": prefix}, {"prefix": prefix + "/"}]
            segment = bool(uris) and all(x.get("uri") in want and bool(x.get("ignoreUriCase")) == folded
                                         for x in uris) and re.escape(prefix) == m.group(2)
            if segment and (m.group(3) is None or literal == "/"):
                return f"prefix {_string(literal)}"
    return f"regex {_string(match)} {_string(rewrite)}"
