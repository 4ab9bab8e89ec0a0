"""`meshc stat [ADDRESS…] [--server HOST:PORT] [--interval S] [--once] [--output-format human|json]`:
the traffic through running proxies, Envoy and native alike, read from their admin endpoints
(docs/observability.md, "meshc stat"). `meshc status` shows the control plane's config versions
instead.

Exit codes: 0 every target answered (found through `meshc serve`: at least one); 1 some address
given did not answer as a proxy (the others are shown); 2 usage (a bad option or address); 4 no
target could be reached (nor `meshc serve`, when the targets are to be found through it)."""

from __future__ import annotations

import http.client
import json
import sys
import time

from compiler.cli.exits import EXIT_INPUT, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from runtime_proxy.decide.http import RBAC_DENIED_DETAILS as DENIED  # (the native proxy writes it too)

TIMEOUT = 3.0
SCHEMA = 1
CHUNK = 1 << 20          # Envoy's access log is read this much at a time


class TargetError(Exception):
    """A target that cannot be read: the message says why, in one line."""


def _get(address: str, path: str) -> tuple[int, bytes]:
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException) as err:
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise TargetError(f"cannot read http://{address}{path}: {reason.lower()}") from None
    finally:
        conn.close()


def _json(address: str, path: str) -> dict | None:
    status, body = _get(address, path)
    if status != 200:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _find_access_logs(node, found: list[str]) -> list[str]:
    """The paths of every file access log in Envoy's `/config_dump` (the one the backend writes)."""
    from compiler.backends.envoy.names import FILE_ACCESS_LOG

    if isinstance(node, dict):
        if node.get("@type") == FILE_ACCESS_LOG and isinstance(node.get("path"), str):
            found.append(node["path"])
        for value in node.values():
            _find_access_logs(value, found)
    elif isinstance(node, list):
        for value in node:
            _find_access_logs(value, found)
    return found


class Target:
    """One proxy's admin address: which plane, whose sidecar, where its denials by rule are."""

    def __init__(self, address: str):
        self.address = address
        self.plane = self.proxy = ""
        self.access_log: str | None = None
        self.note: str | None = None
        self.offset = 0                      # Envoy: how far its access log was read
        self.denied: dict[str, int] = {}     # Envoy: denials by rule counted in the log so far

    def identify(self) -> None:
        native = _json(self.address, "/config")
        if native is not None and isinstance(native.get("config"), dict) and "service" in native:
            self.plane, self.proxy = "native", str(native["service"])
            return
        info = _json(self.address, "/server_info")
        if info is None or "version" not in info:
            raise TargetError(f"{self.address} is not the admin endpoint of a proxy (no /config of the native "
                              "proxy, no /server_info of Envoy)")
        node = info.get("node") or info.get("command_line_options")
        if not isinstance(node, dict):
            raise TargetError(f"{self.address} is not the admin endpoint of a proxy (its /server_info has no "
                              "node object)")
        self.plane = "envoy"
        self.proxy = str(node.get("id") or node.get("service_node") or "?").split(".")[0]
        dump = _json(self.address, "/config_dump")
        logs = sorted(set(_find_access_logs(dump or {}, [])))
        if not logs:
            self.note = ("no access log is configured (write `sidecar { access_log \"/PATH\" }`); "
                         "the DENIED total is Envoy's rbac.denied")
        else:
            self.access_log = logs[0]

    def scrape(self, stat):
        from compiler.observe.prom import PromError, parse

        status, body = _get(self.address, "/stats/prometheus")
        if status != 200:
            raise TargetError(f"{self.address}/stats/prometheus answered {status}")
        try:
            samples = parse(body.decode("utf-8", "replace"))
        except PromError as err:
            raise TargetError(f"{self.address}/stats/prometheus: {err}") from None
        return stat.Scrape(time.monotonic(), samples, self.denials(samples))

    def denials(self, samples) -> dict[str, int] | None:
        if self.plane == "native":
            out: dict[str, int] = {}
            for labels, n in samples.get("meshc_rbac_denied_total", {}).items():
                d = dict(labels)
                if d.get("service") == self.proxy:
                    out[d.get("rule", "none")] = int(n)
            return out
        if self.access_log is None:
            return None
        try:
            with open(self.access_log, "rb") as fh:
                fh.seek(0, 2)
                if fh.tell() < self.offset:       # a new file (rotated): read it from its start
                    self.offset, self.denied = 0, {}
                fh.seek(self.offset)
                rest = b""
                while chunk := fh.read(CHUNK):    # (a large log is not read into memory at once)
                    data = rest + chunk
                    end = data.rfind(b"\n") + 1  # whole lines only: a partial one waits for the next
                    self._count_denials(data[:end])
                    self.offset += end
                    rest = data[end:]
        except OSError as err:
            self.note = f"access log {self.access_log}: cannot read: {(err.strerror or str(err)).lower()}"
            return None
        self.note = None
        return dict(self.denied)

    def _count_denials(self, lines: bytes) -> None:
        marker = DENIED.encode()
        for line in lines.splitlines():
            if marker not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict):     # not a line of the access log's JSON format
                continue
            details = rec.get("response_code_details")
            if rec.get("direction") == "inbound" and isinstance(details, str) and details.startswith(DENIED):
                rule = details[len(DENIED):].rstrip("]")
                self.denied[rule] = self.denied.get(rule, 0) + 1


def report(targets: list[Target], errors: dict[str, str], first: dict, second: dict, interval: float) -> dict:
    from compiler.observe import stats

    out: list[dict] = []
    for t in targets:
        if t.address in errors:
            out.append({"address": t.address, "plane": t.plane or None, "proxy": t.proxy or None,
                        "error": errors[t.address], "access_log": t.access_log, "denials_note": t.note, "rows": []})
            continue
        rows = stats.rows(t.proxy, first[t.address], second[t.address])
        out.append({"address": t.address, "plane": t.plane, "proxy": t.proxy, "error": None,
                    "access_log": t.access_log, "denials_note": t.note, "rows": rows})
    return {"schema": SCHEMA, "interval_s": interval, "targets": out}


def stat(args) -> int:
    from compiler.language.endpoints import parse_endpoint

    for address in args.addresses:
        if parse_endpoint(address) is None:
            print(f"meshc: error: {address}: not HOST:PORT (the admin address of a proxy)", file=sys.stderr)
            return EXIT_USAGE
    if not 0 <= args.interval <= 3600:    # (NaN too)
        print("meshc: error: --interval must be 0 to 3600 seconds", file=sys.stderr)
        return EXIT_USAGE
    addresses = list(dict.fromkeys(args.addresses))
    discovered = False     # found through `meshc serve`: a sidecar that is not running is no input error
    if not addresses:
        from compiler.cli.status import fetch_from_serve

        data, code = fetch_from_serve(args, "stat", EXIT_UNREACHABLE,
                                      " (or give the proxies' admin addresses: meshc stat HOST:PORT …)")
        if data is None:
            return code
        # the admin addresses of the sidecars connected to it (node `SERVICE` or `SERVICE.SUBSET`: a workload's
        # own sidecar by its node id, another subset's by its service's), else of every sidecar it compiled
        # (proxies that read files, not `meshc serve`)
        admin = data.get("server", {}).get("admin") or {}
        nodes = {str(s.get("node", "")) for s in data.get("streams", [])}
        connected = nodes | {node.split(".")[0] for node in nodes}
        addresses = sorted({a for node, a in admin.items() if node in connected}) or sorted(set(admin.values()))
        discovered = True
        if not addresses:
            print(f"meshc: error: meshc serve at {args.server} compiles no sidecar", file=sys.stderr)
            return EXIT_UNREACHABLE
    once = args.once or not sys.stdout.isatty()
    from compiler.observe import stats, table

    targets = [Target(a) for a in addresses]
    errors: dict[str, str] = {}
    for t in targets:
        try:
            t.identify()
        except TargetError as err:
            errors[t.address] = str(err)
    live = [t for t in targets if t.address not in errors]

    def scrape_all() -> dict:
        out = {}
        for t in live:
            if t.address in errors:
                continue
            try:
                out[t.address] = t.scrape(stats)
            except TargetError as err:
                errors[t.address] = str(err)
        return out

    def show(data: dict) -> None:
        if args.output_format == "json":
            print(json.dumps(data, indent=2, sort_keys=True), flush=True)
        else:
            print(table.render(data), flush=True)

    first = scrape_all()
    if once:
        if args.interval > 0 and first:
            time.sleep(args.interval)
            second = scrape_all()
        else:
            second = first
        elapsed = round(max((second[a].at - first[a].at for a in second if a in first), default=0.0), 3)
        for a in list(first):
            if a not in second:
                first.pop(a)
        show(report(targets, errors, first, second, elapsed))
        for error in errors.values():
            print(f"meshc: error: {error}", file=sys.stderr)
        if len(errors) == len(targets):
            return EXIT_UNREACHABLE
        return EXIT_INPUT if errors and not discovered else EXIT_OK
    try:
        while True:
            time.sleep(args.interval or 1.0)
            second = scrape_all()
            data = report(targets, errors, first, second, args.interval or 1.0)
            sys.stdout.write("\x1b[H\x1b[2J")
            show(data)
            if len(errors) == len(targets):
                return EXIT_UNREACHABLE
            first = second
    except KeyboardInterrupt:
        return EXIT_INPUT if errors and not discovered else EXIT_OK
