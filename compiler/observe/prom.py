"""The Prometheus text exposition format (0.0.4), as both planes serve it at `/stats/prometheus`,
and Prometheus' `histogram_quantile` over cumulative buckets."""

from __future__ import annotations

import math
import re

# name{labels} value [timestamp]
_SAMPLE = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}

Labels = tuple[tuple[str, str], ...]


class PromError(ValueError):
    """A line that is not the text format: the message names its number."""


def _labels(text: str, lineno: int) -> Labels:
    out = []
    pos = 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if m is None:
            if text[pos:].strip():
                raise PromError(f"line {lineno}: bad labels {text[pos:pos + 40]!r}")
            break
        value = re.sub(r'\\[\\"n]', lambda e: _UNESCAPE[e.group(0)], m.group(2))
        out.append((m.group(1), value))
        pos = m.end()
    return tuple(sorted(out))


def parse(text: str) -> dict[str, dict[Labels, float]]:
    """Every sample: metric name -> sorted label pairs -> value. Comments and blank lines are
    skipped; a line that is not a sample raises PromError."""
    out: dict[str, dict[Labels, float]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            raise PromError(f"line {lineno}: not a sample: {line[:80]!r}")
        name, labels, value = m.groups()
        try:
            number = float(value)
        except ValueError:
            raise PromError(f"line {lineno}: bad value {value!r}") from None
        out.setdefault(name, {})[_labels(labels, lineno) if labels else ()] = number
    return out


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' `histogram_quantile(q, …)` over one histogram's cumulative buckets
    [(upper bound, count)] (`+Inf` included): linear interpolation inside the bucket that holds
    the rank q × total, from the bucket's lower bound (0 for the first); a rank in the `+Inf`
    bucket gives the highest finite bound. None without observations."""
    if not buckets:
        return None
    buckets = sorted(buckets)
    total = buckets[-1][1]
    if total <= 0 or not math.isinf(buckets[-1][0]):
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    if buckets[0][0] <= 0 and buckets[0][1] >= rank:
        return buckets[0][0]
    for upper, count in buckets:
        if count >= rank:       # the first bucket that holds the rank
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower
