"""Scalar conversions from IR units to Envoy's proto3 JSON: durations, fractions, addresses,
header values. Each has one canonical form, so the output is byte-stable."""

from __future__ import annotations

_DURATIONS: dict[int, str] = {}


def duration(ms: int) -> str:
    """A proto3 JSON Duration of whole milliseconds: `2s`, `0.250s`, `1.500s` (`0s` for 0).
    Whole seconds have no fraction; anything else has exactly three decimals."""
    text = _DURATIONS.get(ms)
    if text is None:  # a program uses few distinct durations, hundreds of thousands of times
        seconds, millis = divmod(ms, 1000)
        text = _DURATIONS[ms] = f"{seconds}s" if millis == 0 else f"{seconds}.{millis:03d}s"
    return text


_DENOMINATORS = ((10_000, "HUNDRED"), (100, "TEN_THOUSAND"), (1, "MILLION"))


def fractional_percent(percent: float) -> dict:
    """A `type.v3.FractionalPercent` equal to `percent` (0..100, at most four decimals, which the
    front end guarantees: E0303), with the smallest exact denominator: 10% is 10/HUNDRED,
    12.5% is 1250/TEN_THOUSAND, 0.0001% is 1/MILLION."""
    millionths = round(percent * 10_000)
    if abs(millionths - percent * 10_000) > 1e-6 * max(1.0, percent):
        raise ValueError(f"percentage {percent!r} has more than four decimals (the front end rejects it)")
    for step, name in _DENOMINATORS:
        if millionths % step == 0:
            return {"denominator": name, "numerator": millionths // step}
    raise AssertionError("unreachable: MILLION divides every millionth")


def socket_address(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def header_value(value: str) -> str:
    """A literal header value for `request_headers_to_add`/`response_headers_to_add`. Envoy reads
    those values as format strings (`%DOWNSTREAM_REMOTE_ADDRESS%` is substituted, and a lone `%`
    is a configuration error), while the language's values are literal: `%` is written `%%`."""
    return value.replace("%", "%%")


def is_ip(host: str) -> bool:
    """An IP address, not a DNS name (compiler.language.endpoints.is_ip, which the backends may not
    import: a layer above)."""
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
