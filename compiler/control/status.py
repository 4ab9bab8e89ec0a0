"""`meshc status`: the server's state (its snapshot versions, the last reload, each stream's
versions against the current ones and its last rejection located in the `.mesh` source), served
on the same gRPC port as ADS by one unary method whose request and response are JSON bytes, and
read by the client side below (a short deadline: an unreachable server is one line, exit 2).

Status of a type on a stream: `up to date` (acknowledged the current version), `behind`
(acknowledged an older one, or has the current one in flight), `never acked`, or `rejected` (the
proxy NACKed the current version and keeps its last good one).
"""

from __future__ import annotations

import json
import re
import time

import grpc

from compiler.backends.base import CA_FILE, CERT_FILE, KEY_FILE
from compiler.control.snapshot import NATIVE, TYPES, NodeSnapshot, native_config

METHOD = "/meshc.control.v1.Status/Get"
# A stream's kind, from its node's `user_agent_name` (another name is shown as it is).
KINDS = {"envoy": "envoy", "meshc-native": "native"}
SCHEMA = 1


def _source_in(node) -> str | None:
    """The first `filter_metadata.meshc.source` in a resource (depth first)."""
    if isinstance(node, dict):
        meta = node.get("filter_metadata", {}).get("meshc") if isinstance(node.get("filter_metadata"), dict) else None
        if isinstance(meta, dict) and isinstance(meta.get("source"), str):
            return meta["source"]
        for value in node.values():
            found = _source_in(value)
            if found:
                return found
    elif isinstance(node, list):
        for value in node:
            found = _source_in(value)
            if found:
                return found
    return None


def _named_sources(node, out: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every (name, provenance source) of the named parts of a resource (virtual hosts, routes)."""
    if isinstance(node, dict):
        meta = node.get("metadata", {}).get("filter_metadata", {}).get("meshc") \
            if isinstance(node.get("metadata"), dict) else None
        if isinstance(node.get("name"), str) and isinstance(meta, dict) and isinstance(meta.get("source"), str):
            out.append((node["name"], meta["source"]))
        for value in node.values():
            _named_sources(value, out)
    elif isinstance(node, list):
        for value in node:
            _named_sources(value, out)
    return out


def locate(snap: NodeSnapshot | None, type_url: str, message: str | None) -> dict:
    """The resource a rejection concerns and where it was declared: the resource of that type whose
    name the message quotes (the longest), else the type's first resource (`exact` false); its
    location is that of the part of it (a virtual host, a route) whose name the message quotes
    (the longest), else the first provenance `source` (file:line:col) it carries."""
    if snap is None:
        return {"resource": None, "source": None, "exact": False}
    if type_url == NATIVE:
        return _locate_native(snap, message)
    named = snap.json.get(type_url, {})
    quoted = sorted((n for n in named if message and n in message), key=len, reverse=True)
    name = quoted[0] if quoted else (sorted(named)[0] if named else None)
    if name is None:
        return {"resource": None, "source": None, "exact": False}
    parts = sorted(((n, src) for n, src in _named_sources(named[name], []) if message and n != name and n in message),
                   key=lambda p: len(p[0]), reverse=True)
    return {"resource": name, "source": parts[0][1] if parts else _source_in(named[name]), "exact": bool(quoted)}


_JSON_PATH = re.compile(r"\$\.services\[(\d+)\](?:\.routes\[(\d+)\])?")


def _locate_native(snap: NodeSnapshot, message: str | None) -> dict:
    """A native config's rejection: the proxy's messages locate by JSON path (`$.services[I]` or
    `$.services[I].routes[K]...`); that destination's or route's `source`, else none."""
    config = native_config(snap)
    if config is None:
        return {"resource": None, "source": None, "exact": False}
    source = None
    found = _JSON_PATH.search(message or "")
    if found:
        try:
            part = config["services"][int(found.group(1))]
            if found.group(2) is not None:
                part = part["routes"][int(found.group(2))]
            where = part["source"]
            source = f"{where['file']}:{where['line']}:{where['column']}"
        except (IndexError, KeyError, TypeError):
            source = None
    return {"resource": snap.node, "source": source, "exact": True}


def type_state(state, current: str | None) -> str:
    if state.rejected_version is not None and state.rejected_version == current:
        return "rejected"
    if state.acked_version is None:
        return "never acked"
    return "up to date" if state.acked_version == current else "behind"


def report(servicer, reload: dict, started: float) -> dict:
    """The server's state as a JSON-able dict (the stable shape of `meshc status --output-format json`)."""
    now = time.time()
    streams = []
    for stream in sorted(servicer.streams.values(), key=lambda s: s.id):
        snap = servicer.snapshots.get(stream.service or "")
        types = {}
        for type_url in TYPES:
            state = stream.types.get(type_url)
            if state is None or not state.requested:
                continue
            current = snap.versions.get(type_url) if snap else None
            entry = {"current": current, "sent": state.sent_version, "acked": state.acked_version,
                     "state": type_state(state, current), "acks": state.acks, "nacks": state.nacks,
                     "last_rejection": None}
            if state.rejected_version is not None:
                entry["last_rejection"] = {"version": state.rejected_version, "error": state.error,
                                           **locate(snap, type_url, state.error)}
            types[type_url.rpartition(".")[2]] = entry
        agent = stream.agent or ""
        streams.append({"id": stream.id, "kind": KINDS.get(agent, agent or "unknown"),
                        "node": stream.node, "connected_since": stream.since,
                        "connected_seconds": round(now - stream.since, 3), "types": types})
    return {"schema": SCHEMA, "server": {
        "started": started, "now": now,
        "snapshots": {node: {t.rpartition(".")[2]: v for t, v in snap.versions.items()}
                      for node, snap in sorted(servicer.snapshots.items())},
        # each sidecar's admin address, as compiled (`meshc stat` reads the proxies there)
        "admin": {node: snap.admin for node, snap in sorted(servicer.snapshots.items())},
        "last_reload": reload,
        "limits": {"max_streams": servicer.limits.max_streams, "max_request_rate": servicer.limits.request_rate,
                   "refused_streams": servicer.refused["streams"], "rate_limited_streams": servicer.refused["rate"]}},
        "streams": streams}


def handler(get_report):
    """The generic handler of METHOD: `get_report()` serialised as JSON."""

    async def get(request: bytes, context) -> bytes:
        return json.dumps(get_report(), sort_keys=True).encode()

    return grpc.method_handlers_generic_handler("meshc.control.v1.Status", {
        "Get": grpc.unary_unary_rpc_method_handler(get)})


class Unreachable(Exception):
    pass


def channel_credentials(identity: str) -> grpc.ChannelCredentials:
    """Mutual TLS as the identity directory `identity` (cert.pem, key.pem, ca.pem of `meshc ca
    issue`); raises Unreachable naming a file that cannot be read."""
    import os

    pems = []
    for name in (CA_FILE, KEY_FILE, CERT_FILE):
        path = os.path.join(identity, name)
        try:
            with open(path, "rb") as fh:
                pems.append(fh.read())
        except OSError as err:
            raise Unreachable(f"--identity {identity}: cannot read {path}: {(err.strerror or str(err)).lower()}") \
                from None
    return grpc.ssl_channel_credentials(*pems)


def channel(address: str, identity: str | None = None) -> grpc.Channel:
    """A channel to `meshc serve`: plaintext, or with `identity` mutual TLS to `meshc-control`."""
    if identity is None:
        return grpc.insecure_channel(address)
    # The TLS name of a `meshc serve --ca` server: the DNS SAN of its certificate, which its CA
    # issues to nothing else (workload certificates carry a URI SAN only), so gRPC's host name
    # check of it is the check of the server's identity (compiler/control/sds.py). Imported here:
    # the Envoy backend's package costs 25 ms, for the TLS case only.
    from compiler.backends.envoy.names import CONTROL_SERVER_NAME

    return grpc.secure_channel(address, channel_credentials(identity),
                               options=[("grpc.ssl_target_name_override", CONTROL_SERVER_NAME)])


def fetch(address: str, timeout: float = 3.0, identity: str | None = None) -> dict:
    """The report of the server at `address` (over mTLS as `identity` when given); raises
    Unreachable with a one-line reason."""
    channel_ = channel(address, identity)
    try:
        call = channel_.unary_unary(METHOD)
        data = call(b"{}", timeout=timeout)
    except grpc.RpcError as err:
        code = err.code() if hasattr(err, "code") else None
        if code == grpc.StatusCode.UNIMPLEMENTED:
            raise Unreachable(f"{address} is not a meshc serve with status (no {METHOD})") from err
        hint = (" (a server started with --ca takes mutual TLS only: give --identity DIR)" if identity is None else
                f" (over mutual TLS as {identity}: is the server started with --ca, from the CA of its ca.pem?)")
        raise Unreachable(f"cannot reach meshc serve at {address}: "
                          f"{code.name if code else 'error'} within {timeout:g} s{hint}") from err
    finally:
        channel_.close()
    try:
        return json.loads(data)
    except ValueError as err:
        raise Unreachable(f"{address} answered something that is not JSON") from err


def healthy(data: dict) -> bool:
    """Every proxy up to date on every type it asked for, and the last reload good."""
    if not data["server"]["last_reload"]["ok"]:
        return False
    return all(t["state"] == "up to date" for s in data["streams"] for t in s["types"].values())


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def human(data: dict) -> str:
    server, lines = data["server"], []
    reload = server["last_reload"]
    lines.append(f"server: {len(server['snapshots'])} sidecar(s), up {_ago(server['now'] - server['started'])}")
    if reload["ok"]:
        lines.append(f"last reload: ok ({_ago(server['now'] - reload['at'])} ago)")
    else:
        lines.append(f"last reload: FAILED ({_ago(server['now'] - reload['at'])} ago); serving the last good "
                     f"snapshot since {_ago(server['now'] - reload['good_since'])} ago")
        for d in reload["diagnostics"]:
            lines.append(f"  {d['location'] or '-'}: {d['severity']}[{d['code']}]: {d['message']}")
        for p in reload["problems"]:
            lines.append(f"  inconsistent snapshot: {p}")
    limits = server.get("limits") or {}
    if limits.get("refused_streams") or limits.get("rate_limited_streams"):
        lines.append(f"limits: {limits['refused_streams']} stream(s) refused (over --max-streams "
                     f"{limits['max_streams']}), {limits['rate_limited_streams']} ended for their request rate "
                     f"(over --max-request-rate {limits['max_request_rate']:g})")
    certificates = data.get("certificates")
    if certificates:
        c = certificates
        lines.append(f"certificates: {len(c['nodes'])} issued from the CA of {c['trust_domain']}, "
                     f"valid {c['hours']:g} h, {c['rotations']} rotation(s); "
                     f"the server's serial {c['server']['serial']}")
    if not data["streams"]:
        lines.append("no proxy connected")
    else:
        lines.append(f"{'STREAM':<7}{'KIND':<9}{'NODE':<16}{'CONNECTED':<11}TYPES")
    for s in data["streams"]:
        states = ", ".join(f"{t} {e['state']}" + ("" if e["state"] == "up to date" else f" (acked {e['acked'] or '-'})")
                           for t, e in s["types"].items()) or "nothing asked yet"
        lines.append(f"{s['id']:<7}{s['kind']:<9}{s['node'] or '-':<16}{_ago(s['connected_seconds']):<11}{states}")
        for t, e in s["types"].items():
            r = e["last_rejection"]
            if r:
                where = r["source"] or "no source location"
                lines.append(f"       {t} version {r['version']} rejected: {r['error']}")
                lines.append(f"       at {where} (resource {r['resource']!r}"
                             f"{'' if r['exact'] else ', the first of its type: the message names none'})")
    return "\n".join(lines)
