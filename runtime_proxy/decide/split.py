"""The weighted split pick: Envoy's `weighted_clusters` with `header_name` (ENVOY_NOTES §3).

The key header decides when the request carries it exactly once and its value is an unsigned
64-bit decimal integer as absl::SimpleAtoi reads it; otherwise the random draw decides. Either
way the pick is the target whose cumulative interval holds `value mod total`, so zero weights are
never picked.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime_proxy.decide.explain import Explanation
    from runtime_proxy.decide.table import CSplit, CWeightedSubset, HeaderMap

# absl::SimpleAtoi<uint64_t>: optional ASCII white space around, one optional '+', ASCII digits.
_U64 = re.compile(r"[ \t\n\v\f\r]*\+?([0-9]+)[ \t\n\v\f\r]*", re.ASCII)
_U64_MAX = 2**64 - 1


def key_value(values: list[str] | None) -> int | None:
    """The split key of the header's values, or None when the draw must decide."""
    if values is None or len(values) != 1:
        return None
    v = values[0]
    if v.isdigit() and v.isascii():           # the common case: plain digits
        n = int(v)
    else:
        m = _U64.fullmatch(v)
        if m is None:
            return None
        n = int(m.group(1))
    return n if n <= _U64_MAX else None


def pick(split: CSplit, headers: HeaderMap, rand_u64: int) -> CWeightedSubset:
    """The target (a CWeightedSubset) of `split` for this request. `rand_u64` is a random integer
    in [0, 2^64), used when the key header does not decide."""
    value = None
    if split.key_header is not None:
        value = key_value(headers.get(split.key_header))
    if value is None:
        value = rand_u64
    return split.targets[split.index(value)]


def explain_pick(split: CSplit, headers: HeaderMap, rand_u64: int, explain: Explanation) -> CWeightedSubset:
    """`pick`, with its arithmetic noted (one `split` step): the key value (or the draw), the
    total, the bucket `value mod total` and every arm's interval. The same answer as `pick`."""
    ref = pick(split, headers, rand_u64)
    raw = headers.get(split.key_header) if split.key_header is not None else None
    key = key_value(raw) if split.key_header is not None else None
    value = rand_u64 if key is None else key
    total = split.total_weight
    arms, low = [], 0
    for t, high in zip(split.targets, split.bounds):
        arms.append({"cluster": t.subset.cluster, "subset": t.subset.name, "weight": t.weight, "from": low,
                     "to": high})
        low = high
    if key is not None:
        why = f"key header `{split.key_header}` = {key}"
    elif split.key_header is None:
        why = "no key header: a random draw"
    elif raw is None:
        why = f"no `{split.key_header}` header: a random draw"
    else:
        why = f"`{split.key_header}` is not one unsigned integer: a random draw"
    explain.note("split", ref.subset.name, "by the key header" if key is not None else "by the random draw",
                 {"key_header": split.key_header, "key_values": raw, "keyed": key is not None, "why": why,
                  "value": value, "total": total, "bucket": value % total, "arms": arms,
                  "cluster": ref.subset.cluster})
    return ref
