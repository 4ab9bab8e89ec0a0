"""Which mirrors of a route copy a request (docs/language.md §12): one draw decides them all.

Envoy decides every `request_mirror_policies` entry of a route with the same number, the
stream's random id `u`: the entry copies when `u mod D < N`, its share written as the
`FractionalPercent` N/D with the smallest exact denominator D of HUNDRED, TEN_THOUSAND and
MILLION (the compiler's `fractional_percent`; a share has at most four decimals). Copies are
therefore not independent: with 30 % and 50 % on one route, every request the 30 % mirror copies
is copied by the 50 % one too.

The proxy draws `x` uniform in [0, 1) and takes `u mod 1 000 000` to be `m`, the first six
decimals of `x` with their pairs of digits in reverse order (`x = 0.d0 d1 d2`, two digits each,
gives `m = d2 d1 d0`): `m` is uniform, each mirror copies when `m mod D < N` as in Envoy, and a
share of whole percent copies exactly when `x * 100 < percent` (`m mod 100 = d0`)."""

from __future__ import annotations

_DENOMINATORS = (10_000, 100, 1)   # millionths per unit of HUNDRED, TEN_THOUSAND, MILLION


def fraction(percent: float) -> tuple[int, int]:
    """(N, D): `percent` as Envoy's FractionalPercent with the smallest exact denominator."""
    millionths = round(percent * 10_000)
    for step in _DENOMINATORS:
        if millionths % step == 0:
            return millionths // step, 1_000_000 // step
    raise AssertionError("unreachable: a step of 1 divides every millionth")


def stream_residue(x: float) -> int:
    """`u mod 1 000 000` of Envoy's stream id for the draw `x` (see the module's docstring)."""
    six = min(int(x * 1_000_000), 999_999)
    d0, rest = divmod(six, 10_000)
    d1, d2 = divmod(rest, 100)
    return d2 * 10_000 + d1 * 100 + d0


def copies(numerator: int, denominator: int, residue: int) -> bool:
    """Whether a mirror of share N/D copies the request whose stream residue is `residue`."""
    return residue % denominator < numerator
