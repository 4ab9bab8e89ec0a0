"""The terminal table of `meshc stat`: one line per proxy, service and route, then the
authorization denials by rule of each proxy (or why they are unknown)."""

from __future__ import annotations

HEADER = ("PROXY", "PLANE", "SERVICE", "ROUTE", "RPS", "SUCCESS", "P50", "P95", "P99", "RETRIES", "EJECTIONS",
          "DENIED")


def _num(v, suffix: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}{suffix}" if v >= 10 or v == 0 else f"{v:.2f}{suffix}"
    return f"{v}{suffix}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


def render(report: dict) -> str:
    lines: list[tuple[str, ...]] = [HEADER]
    notes: list[str] = []
    for t in report["targets"]:
        if t["error"] is not None:
            notes.append(f"{t['address']}: {t['error']}")
            continue
        for r in t["rows"]:
            w = r["window"]
            # the window's success rate; the total's when the window saw no request
            success = w["success_rate"] if w["requests"] else r["success_rate"]
            route = r["route"] if r["route"] is not None else ("(inbound)" if r["kind"] == "inbound" else "(all)")
            lat = r["latency_ms"]
            lines.append((t["proxy"], t["plane"], r["service"], route, _num(w["requests_per_s"]), _pct(success),
                          _num(lat["p50"], "ms"), _num(lat["p95"], "ms"), _num(lat["p99"], "ms"), str(r["retries"]),
                          _num(r["ejections"]), _num(r["denied"])))
        for r in t["rows"]:
            if r["kind"] != "inbound":
                continue
            by_rule = r["denied_by_rule"]
            if by_rule is None:
                notes.append(f"{t['proxy']} ({t['plane']} {t['address']}): denials by rule unknown: "
                             + (t["denials_note"] or "no access log"))
            elif by_rule:
                notes.append(f"{t['proxy']} ({t['plane']} {t['address']}) denied by rule: "
                             + ", ".join(f"{d['rule']} {d['denied']}" for d in by_rule))
    widths = [max(len(row[i]) for row in lines) for i in range(len(HEADER))]
    text = ["  ".join(c.ljust(widths[i]) if i < 4 else c.rjust(widths[i]) for i, c in enumerate(row)).rstrip()
            for row in lines]
    if len(lines) == 1:
        text.append("(no traffic statistics)")
    window = report["interval_s"]
    text.append("")
    text.append(f"RPS and SUCCESS over the last {window:g} s (SUCCESS since start when the window saw no "
                "request); RETRIES, EJECTIONS, DENIED since start" if window else
                "one scrape: no rates; SUCCESS, RETRIES, EJECTIONS, DENIED since start")
    text.extend(notes)
    return "\n".join(text)
