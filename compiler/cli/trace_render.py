"""`meshc trace`'s human output: the trace's data (compiler/cli/trace_run.py `Trace.data()`) as
aligned lines, one per step of each hop, then the answer. Everything shown comes from the data,
so the human and the JSON output never tell different stories."""

from __future__ import annotations

from typing import Any

WHAT = 10      # width of the step column
OUTCOME = 11   # width of the outcome column


def _pct(value: float) -> str:
    return f"{value:g} %"


def _row(what: str, outcome: str, detail: str) -> str:
    if not detail:
        return f"  {what:<{WHAT}} {outcome}".rstrip()
    return f"  {what:<{WHAT}} {outcome:<{OUTCOME}} {detail}".rstrip()


def _split_lines(data: dict[str, Any], seeded: bool) -> list[str]:
    arms = ", ".join(f"{a['subset']} [{a['from']}, {a['to']})" for a in data["arms"])
    total, bucket = data["total"], data["bucket"]
    chosen = next(a for a in data["arms"] if a["cluster"] == data["cluster"])
    if data["keyed"]:
        head = f"{data['why']}: {data['value']} mod {total} = {bucket}, in {chosen['subset']} [{chosen['from']}, " \
               f"{chosen['to']})"
    else:
        chances = ", ".join(f"{a['subset']} {a['weight'] * 100 / total:g} %" for a in data["arms"] if a["weight"])
        drawn = f"drawn {data['value']} mod {total} = {bucket}" if seeded else \
            "unseeded, shown with bucket 0 (--seed N to draw)"
        head = f"{data['why']} (random: {chances}); {drawn}, in {chosen['subset']} [{chosen['from']}, {chosen['to']})"
    return [head, f"arms by cumulative weight: {arms}"]


def _step_lines(step: dict[str, Any], seeded: bool) -> list[str]:
    what, outcome, detail, data = step["what"], step["outcome"], step["detail"], step["data"] or {}
    if what == "split" and data:
        first, second = _split_lines(data, seeded)
        return [_row(what, outcome, first), _row("", "", second)]
    if what == "fault" and data:
        kind = "delay" if data["part"] == "delay" else "abort"
        value = f"{data['delay_ms']} ms" if kind == "delay" else str(data["status"])
        text = f"{kind} {value} for {_pct(data['percent'])} of requests"
        if data["random"]:
            text += (f": drawn {data['draw']:.4f} x 100 {'<' if data['applied'] else '>='} {data['percent']:g}"
                     if seeded else ": random; unseeded, shown as not applied (--seed N to draw)")
        return [_row(what, outcome, text)]
    if what == "mirror" and data:
        text = f"a copy of {_pct(data['percent'])} of requests to {data['cluster']}"
        if data["random"]:
            n, den = data["fraction"]
            text += (f": drawn {data['draw']:.4f}, stream residue {data['residue']} mod {den} "
                     f"{'<' if outcome == 'copied' else '>='} {n}"
                     if seeded else ": random; unseeded, shown as not copied (--seed N to draw)")
        return [_row(what, outcome, text)]
    if what == "normalize" and data and data.get("changed"):
        rows = [_row(what, outcome, f"`{data['path']}` from `{data['received']}`")]
        rows += [_row("", "", f"{s['step']}: `{s['from']}` -> `{s['to']}`") for s in data["steps"]
                 if s["from"] != s["to"]]
        return rows
    if what == "policy" and data:
        lines = _policy_lines(data)
        return [_row(what, "in effect", lines[0])] + [_row("", "", line) for line in lines[1:]]
    if what == "host" and data and outcome == "service":
        return [_row(what, outcome, _host_text(data["host"], data.get("domains", ()), step["detail"]))]
    if what == "authz" and data and "rule" in data and "action" in data:
        return [_row(what, outcome, detail + f"  ({data['source']})")]
    if what == "authz" and data and "allowed" in data:
        text = f"by rule `{data['rule']}`" if data["rule"] else f"by the default ({data['default']})"
        return [_row(what, outcome, text)]
    return [_row(what, outcome, detail)]


def _host_text(host: str, domains, service: str) -> str:
    """Why `host` names `service`: one of its domains, or the wildcard that took it (Envoy's
    order: the longest `*SUFFIX`, the longest `PREFIX*`, then `*`; docs/semantics.md, "Hosts")."""
    h = host.lower()
    if any(d.lower() == h for d in domains):
        return f"`{host}` is a domain of {service}"
    fits = sorted((d for d in domains if d.startswith("*") and d != "*" and len(h) > len(d) - 1
                   and h.endswith(d[1:].lower())), key=len, reverse=True)
    fits += sorted((d for d in domains if d.endswith("*") and d != "*" and len(h) > len(d) - 1
                    and h.startswith(d[:-1].lower())), key=len, reverse=True)
    if fits:
        return f"`{host}` matches the wildcard `{fits[0]}` of {service} (no exact domain holds it)"
    return f"`{host}` is taken by the catch-all `*` of {service} (no other domain holds it)"


def _policy_lines(p: dict[str, Any]) -> list[str]:
    lines = [f"route `{p['route']}` ({p['source']})"]
    lines.append(f"timeout {p['timeout_ms']} ms" if p["timeout_ms"] else "no timeout")
    r = p["retry"]
    if r is None:
        lines.append("no retries")
    else:
        on = ", ".join(r["on"] + [str(s) for s in r["statuses"]])
        text = f"retry {r['attempts']} time{'' if r['attempts'] == 1 else 's'} on {on}"
        if r["per_try_timeout_ms"]:
            text += f", per try {r['per_try_timeout_ms']} ms"
        text += f", backoff {r['backoff_base_ms']} ms up to {r['backoff_max_ms']} ms"
        if r["allow_non_idempotent"]:
            text += ", non-idempotent requests too"
        lines.append(text)
    b = p["retry_budget"]
    if b is not None:
        lines.append(f"retry budget {_pct(b['percent'])} of active requests, at least {b['min_concurrency']}")
    f = p["fault"]
    if f is not None:
        parts = []
        if f["delay_ms"]:
            parts.append(f"delay {f['delay_ms']} ms {_pct(f['delay_percent'])}")
        if f["abort_status"] is not None:
            parts.append(f"abort {f['abort_status']} {_pct(f['abort_percent'])}")
        lines.append("fault " + ", ".join(parts))
    for m in p["mirrors"]:
        lines.append(f"mirror {_pct(m['percent'])} to {m['cluster']} (copies dropped after {m['timeout_ms']} ms)")
    for side in ("request_headers", "response_headers"):
        hc = p[side]
        if hc is not None:
            parts = [f"set {n}: {v}" for n, v in hc["set"]] + [f"add {n}: {v}" for n, v in hc["add"]] + \
                    [f"remove {n}" for n in hc["remove"]]
            lines.append(f"{side.replace('_', ' ')}: " + "; ".join(parts))
    return lines


def render(data: dict[str, Any]) -> str:
    req = data["request"]
    seeded = data["draws"]["seed"] is not None
    caller = f"from {req['from']}" if req["from"] else "from outside the mesh"
    ident = req["identity"]
    if ident == "none":
        caller += ", no identity (plaintext)"
    elif ident:
        caller += f", identity {ident}"
    out = [f"{req['method']} {req['url']}  {caller}"]
    for n, v in req["headers"]:
        out.append(f"  {n}: {v}")
    for hop in data["hops"]:
        out.append("")
        out.append(f"hop {hop['hop']}: {hop['sidecar']}'s sidecar, {hop['listener']} ({hop['identity']})")
        conn = hop.get("connection")
        if conn is not None:
            how = f"mTLS, peer {conn['peer']}" if conn["tls"] and conn["peer"] else \
                "mTLS, no identity" if conn["tls"] else "plaintext, no identity"
            verdict = "accepted" if conn["accepted"] else "refused"
            out.append(_row("connect", verdict, f"{how}; the listener's mode is {conn['mode']}"))
        for step in hop["steps"]:
            out += _step_lines(step, seeded)
        fwd = hop.get("forward")
        if fwd is not None and hop["listener"] == "outbound":
            over = f"mTLS (SNI {fwd['sni']}, expecting {fwd['server_identity']})" if fwd["mtls"] else "plaintext"
            out.append(_row("upstream", fwd["cluster"], f"{', '.join(fwd['endpoints'])} over {over}"))
            if fwd["delay_ms"]:
                out.append(_row("", "", f"after a fault delay of {fwd['delay_ms']} ms"))
            out += _request_lines(fwd["request"])
        elif fwd is not None:
            out.append(_row("upstream", fwd["cluster"], f"the application at {fwd['application']}"))
            out += _request_lines(fwd["request"])
        reply = hop.get("reply")
        if reply is not None:
            text = f"{reply['status']} {reply['reason']}" + (f" ({reply['flags']})" if reply["flags"] else "")
            if reply["body"]:
                text += f": {reply['body']}"
            if reply["delay_ms"]:
                text += f", after a delay of {reply['delay_ms']} ms"
            out.append(_row("reply", "", text))
    out.append("")
    out.append(_result_line(data["result"]))
    made = [d for d in data["draws"]["made"] if d["draw"] != "request_id"]
    if made:
        if seeded:
            out.append(f"draws (--seed {data['draws']['seed']}): "
                       + ", ".join(f"{d['draw']} {d['value']:.4f}" if isinstance(d["value"], float)
                                   else f"{d['draw']} {d['value']}" for d in made))
        else:
            out.append("draws: unseeded, the outcome where no random fault or mirror applies and a random split's "
                       "bucket is 0 (--seed N to draw)")
    return "\n".join(out) + "\n"


def _request_lines(req: dict[str, Any]) -> list[str]:
    lines = [_row("", "", f"{req['method']} {req['target']}")]
    lines += [_row("", "", f"{n}: {v}") for n, v in req["headers"]]
    return lines


def _result_line(result: dict[str, Any]) -> str:
    if result.get("forwarded"):
        rule = result.get("rule")
        by = f"allowed by rule `{rule}`" if rule else "allowed by the default"
        return f"result: forwarded to {result['answered_by']} ({by}); its answer is the response"
    if result.get("status"):
        text = f"result: {result['status']} {result['reason']} from {result['answered_by']}"
        if result.get("flags"):
            text += f" ({result['flags']})"
        return text
    return f"result: {result['reason']}"
