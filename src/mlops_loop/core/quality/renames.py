"""A renamed column is one incident: a missing column and a new one that looks like it.

When a column of the reference is missing and the batch has a column the reference lacks, of a
compatible type and with a distribution close to the missing column's profile (learnt with the
suite), the two incidents (`missing_column`, and the `unexpected_column` warning) become one
blocking `renamed_column` naming both.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from mlops_loop.core.quality.result import Incident
from mlops_loop.core.quality.spec import _family, _jsonable

#: Largest distance (Kolmogorov-Smirnov at the reference's deciles for numbers, total variation
#: over its most frequent values otherwise) of a column that counts as the missing one, before
#: the sampling noise of the new column's values is added.
RENAME_DISTANCE = {"numeric": 0.1, "other": 0.15}


def _numeric_distance(quantiles: list[float], values: pd.Series) -> float:
    x = np.sort(pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float))
    if not len(x) or not quantiles:
        return math.inf
    n = len(x)
    # Between the reference's deciles the new column should hold a tenth of its values each;
    # with ties a decile spans a step of the distribution, so any share within the step fits.
    gaps = [
        max(0.0, (x < q).sum() / n - i / 10, i / 10 - (x <= q).sum() / n)
        for i, q in enumerate(quantiles)
        if 0 < i < len(quantiles) - 1
    ]
    outside = ((x < quantiles[0]).sum() + (x > quantiles[-1]).sum()) / n
    return max([*gaps, float(outside)])


def _share_distance(shares: list[list], values: pd.Series) -> float:
    counts = values.dropna().map(lambda v: json.dumps(_jsonable(v))).value_counts(normalize=True)
    if not len(counts):
        return math.inf
    known = {json.dumps(v): float(p) for v, p in shares}
    seen = {k: float(counts.get(k, 0.0)) for k in known}
    rest_ref, rest_new = 1 - sum(known.values()), 1 - sum(seen.values())
    return 0.5 * (sum(abs(p - seen[k]) for k, p in known.items()) + abs(rest_ref - rest_new))


def rename_distance(profile: dict, values: pd.Series) -> float | None:
    """How far a new column is from a missing one's profile; None when it cannot be it."""
    family = profile.get("family")
    if family is None or _family(values) not in (family, None) or len(values) == 0:
        return None
    nonnull = int(values.notna().sum())
    if nonnull == 0:
        return None
    p = float(profile.get("null_rate", 0.0))
    null_gap = abs(float(values.isna().mean()) - p) - 4 * math.sqrt(p * (1 - p) / len(values))
    noise = 1.63 / math.sqrt(nonnull)  # the KS (and, roughly, TV) noise at 1%
    if family == "numeric":
        distance = _numeric_distance(profile.get("quantiles", []), values)
        limit = RENAME_DISTANCE["numeric"] + noise
    elif "shares" in profile:
        distance = _share_distance(profile["shares"], values)
        limit = RENAME_DISTANCE["other"] + noise
    else:
        return None
    return distance if distance <= limit and null_gap <= 0.05 else None


def merge_renames(
    found: dict[int, list[Incident]],
    entries: list[dict],
    column: Callable[[str], pd.Series],
) -> dict[int, list[Incident]]:
    """The incidents with each missing column that reappears under a new name merged with the
    new column's warning into one `renamed_column`; `column` gives a new column's values."""
    missing = {
        n: entries[n]
        for n in found
        if entries[n]["kind"] == "missing_column" and "profile" in (entries[n].get("learnt") or {})
    }
    unexpected = {
        i.column: n
        for n in found
        if entries[n]["kind"] == "unexpected_column"
        for i in found[n]
        if i.column is not None
    }
    if not missing or not unexpected:
        return found
    pairs = []
    for n, e in missing.items():
        for new in unexpected:
            d = rename_distance(e["learnt"]["profile"], column(new))
            if d is not None:
                pairs.append((d, n, new))
    out = dict(found)
    taken: set = set()
    for d, n, new in sorted(pairs, key=lambda p: (p[0], p[1], p[2])):
        if n in taken or new in taken:
            continue
        taken.update((n, new))
        old = entries[n]["column"]
        out[n] = [
            Incident(
                "renamed_column",
                old,
                "error",
                {"renamed_to": new, "distance": round(d, 4)},
                {"column": old},
                f"Column {old!r} is missing and {new!r} is new, of the same type and close in "
                f"distribution (distance {d:.3f}): {old!r} looks renamed to {new!r}; expected "
                f"{old!r} as in the reference.",
            )
        ]
        u = unexpected[new]
        out[u] = [i for i in out[u] if i.column != new]
        if not out[u]:
            del out[u]
    return out
