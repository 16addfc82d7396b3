"""Learnt bounds resolved for the batch's row count: `resolve_entries`.

A suite entry may carry, beside its GX `kwargs`, a `learnt` mapping: what the reference showed
(its rows, null count, values seen once, the multiplicities of its distinct rows...) and the
error rate and margin of the bound. `resolve_entries` turns those into concrete GX kwargs for a
batch of `rows` rows, so a bound is as wide as the sampling noise at that size and no wider.
Entries without `learnt` (suites of schema version "1", custom checks) are returned as they are.
Where the reference's estimate is uncertain, the batch's count is judged by its predictive
(beta-binomial) distribution, which carries both the reference's sampling error and the
batch's; docs/quality.md derives them.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from scipy import special, stats

#: Accepted batches needed before the row count is judged by their sizes.
ROW_HISTORY = 5
#: A batch may be this many times smaller or larger than the accepted ones' prediction interval.
ROW_SLACK = 2.0
#: Smallest tolerated share of values outside the widened range (the fixed one of schema "1").
RANGE_FLOOR = 0.01


def _mostly(tolerated: float) -> float:
    """GX's `mostly` for a tolerated share, rounded down so the tolerance is never cut."""
    return max(0.0, math.floor((1 - min(max(tolerated, 0.0), 1.0)) * 1e6) / 1e6)


def count_upper(count: float, alpha: float) -> float:
    """One-sided (1 - alpha) upper bound of a Poisson mean from one observed count."""
    return float(stats.chi2.ppf(1 - alpha, 2 * (count + 1)) / 2)


def row_histogram(frame: Any) -> list[list[int]]:
    """`[[r, f_r], ...]`: how many distinct rows of `frame` occur exactly r times; a null is a
    value like any other."""
    import pandas as pd

    if len(frame) == 0 or (isinstance(frame, pd.DataFrame) and frame.shape[1] == 0):
        return []
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype="uint64")
    _, counts = np.unique(hashed, return_counts=True)
    r, f = np.unique(counts, return_counts=True)
    return [[int(a), int(b)] for a, b in zip(r, f, strict=True)]


def unique_share(histogram: list[list[int]], n: int, alpha: float = 0.0) -> float:
    """Expected share of rows of an n-row sample of the reference's population that repeat no
    other row of that sample.

    Up to the reference's size it is the share expected of n rows drawn from the reference
    without replacement (an unbiased estimate of sum_i p_i (1 - p_i)^(n-1)); beyond, rows seen
    r >= 2 times are given probability r/N and rows seen once the Good-Turing 2 f_2 / (f_1 N),
    with f_2 at its (1 - alpha) Poisson upper bound when alpha > 0: a reference that saw no row
    twice cannot tell rows that never repeat from rows that repeat at 100 times its size, so
    they are assumed to repeat as often as its f_2 allows. The estimate never rises above the
    one at the reference's size.
    """
    big_n = sum(r * f for r, f in histogram)
    if n <= 1 or big_n <= 1:
        return 1.0
    m = min(n, big_n) - 1

    def log_choose(a: float, b: float) -> float:
        return float(special.gammaln(a + 1) - special.gammaln(b + 1) - special.gammaln(a - b + 1))

    at = sum(
        f * r / big_n * math.exp(log_choose(big_n - r, m) - log_choose(big_n - 1, m))
        for r, f in histogram
        if big_n - r >= m
    )
    if n <= big_n:
        return min(1.0, at)
    f1 = sum(f for r, f in histogram if r == 1)
    f2 = sum(f for r, f in histogram if r == 2)
    beyond = sum(f * r / big_n * math.exp(-(n - 1) * r / big_n) for r, f in histogram if r >= 2)
    if f1:
        twice = count_upper(f2, alpha) if alpha > 0 else f2
        beyond += f1 / big_n * math.exp(-(n - 1) * 2 * twice / (f1 * big_n))
    return min(at, beyond)


def duplicate_share(learnt: dict, n: int) -> float:
    """The share of repeated rows a batch of n rows drawn from the reference stays under."""
    alpha, big_n = learnt["alpha"], max(int(learnt["rows"]), 1)
    # Rows holding a unique id (or timestamp) of the reference never repeat naturally.
    unique = 1.0 if learnt.get("unique_key") else unique_share(learnt["histogram"], n, alpha)
    expected = 1 - unique
    # Repeats come in pairs (or more), so their count varies about twice as much as a binomial
    # one; the reference's own estimate adds its sampling error at the reference's size.
    z = float(stats.norm.ppf(1 - alpha))
    noise = z * math.sqrt(2 * expected * (1 - expected) * (1 / n + 1 / big_n))
    return expected + noise + 2 / n + learnt["margin"]


@functools.lru_cache(maxsize=4096)
def betabinom_quantile(q: float, n: int, a: float, b: float) -> int:
    """The smallest k with P(K <= k) >= q for K ~ beta-binomial(n, a, b), as scipy's `ppf`.

    scipy finds it by summing the pmf from 0 at every step of a search, seconds at n = 10^6;
    here the pmf is summed once, vectorized, over a window far beyond the tail (and over all
    of 0..n if the window does not reach q)."""
    mean = n * a / (a + b)
    sd = math.sqrt(n * a * b * (a + b + n) / ((a + b) ** 2 * (a + b + 1)))
    # Below mean - 40 sd the mass is nil (for small a the mean is within 40 sd of 0 anyway).
    low = max(0, math.floor(mean - 40 * sd - 100))
    for top in (min(n, math.ceil(mean + 40 * sd + 100)), n):
        k = np.arange(low, top + 1, dtype=float)
        log_pmf = (
            special.gammaln(n + 1)
            - special.gammaln(k + 1)
            - special.gammaln(n - k + 1)
            + special.betaln(k + a, n - k + b)
            - special.betaln(a, b)
        )
        reached = np.flatnonzero(np.cumsum(np.exp(log_pmf)) >= q * (1 - 1e-12))
        if reached.size:
            return low + int(reached[0])
    return n


def predictive_share(
    n: int, count: float, total: float, alpha: float, size: float = 0.0, shift: float = 0.0
) -> float:
    """The share of `n` new values exceeded with probability at most `alpha` when `count` of
    `total` reference values showed the event.

    The rate is uncertain given the reference, Beta(count + 1/2, total - count + 1/2) (Jeffreys),
    so a batch's count is beta-binomial: the reference's sampling error and the batch's are
    integrated once rather than bounded one after the other. `size` (when set) is the
    reference's effective size when its estimate varies more than a binomial count does;
    `shift` moves the rate up, as a tolerated change of the population's rate.
    """
    if n <= 0 or total <= 0 or count >= total:
        return 1.0
    s = size or total
    rate = min(count / total + shift, 1.0)
    if rate >= 1.0:
        return 1.0
    return betabinom_quantile(1 - alpha, n, rate * s + 0.5, (1 - rate) * s + 0.5) / n


def null_share(learnt: dict, n: int) -> float:
    """Beta-binomial at the reference's null rate raised by the policy's margin: a batch whose
    rate has risen by the margin still passes, noise included."""
    return predictive_share(
        n, learnt["nulls"], learnt["rows"], learnt["alpha"], shift=learnt["margin"]
    )


def unseen_share(learnt: dict, n: int) -> float:
    """Good-Turing: the mass of values the reference never showed is about the share of its
    values seen once, f1 / N. That estimate varies as sqrt(f1 + 2 f2) / N (Esty), more than a
    binomial count of f1 would, so the reference's effective size is N f1 / (f1 + 2 f2); the
    batch's share of unseen values is then beta-binomial at its n values."""
    values = learnt["values"]
    if values <= 0:
        return 1.0
    f1, f2 = learnt["singletons"], learnt.get("doubletons", 0)
    size = values * f1 / (f1 + 2 * f2) if f1 else values
    return predictive_share(n, f1, values, learnt["alpha"], size) + learnt["margin"]


def range_share(learnt: dict, n: int) -> float:
    """Of n new values, the count outside the range of N reference values is exactly
    beta-binomial(n, 2, N - 1) whatever the (continuous) distribution: the mass outside the
    sample's range is the sum of its two outer spacings, Beta(2, N - 1). Ties and the
    widened range only make values outside rarer."""
    values = max(int(learnt["values"]), 2)
    outside = betabinom_quantile(1 - learnt["alpha"], n, 2.0, float(values - 1)) / n
    return max(RANGE_FLOOR, outside)


def row_count_bounds(learnt: dict) -> tuple[int, int | None]:
    """The row count's bounds: the policy's, narrowed by the sizes of accepted batches."""
    low, high = int(learnt["min_rows"]), learnt.get("max_rows")
    sizes = [s for s in learnt.get("accepted_rows", []) if s > 0]
    if len(sizes) < ROW_HISTORY:
        return low, high
    logs = np.log(np.asarray(sizes, dtype=float))
    k, mean, sd = len(logs), float(logs.mean()), float(logs.std(ddof=1))
    t = float(stats.t.ppf(1 - learnt["alpha"] / 2, k - 1))
    width = t * sd * math.sqrt(1 + 1 / k) + math.log(ROW_SLACK)
    low = max(low, math.floor(math.exp(mean - width)))
    grown = math.ceil(math.exp(mean + width))
    return low, grown if high is None else min(int(high), grown)


def _nonnull(learnt: dict, rows: int) -> int:
    return max(1, round(rows * (1 - learnt.get("null_rate", 0.0))))


def resolve_entry(entry: dict, rows: int) -> dict:
    """One entry with its GX kwargs resolved for a batch of `rows` rows (a copy if changed)."""
    learnt = entry.get("learnt")
    if not learnt or rows <= 0:
        return entry
    kw = dict(entry["kwargs"])
    kind = entry["kind"]
    slack = float(learnt.get("slack", 0.0))  # widened by the reference's own held-out check
    if kind == "null_rate":
        kw["mostly"] = _mostly(null_share(learnt, rows) + slack)
    elif kind == "unseen_category":
        kw["mostly"] = _mostly(unseen_share(learnt, _nonnull(learnt, rows)) + slack)
    elif kind == "duplicate_rows" and entry["column"] is None:
        kw["mostly"] = _mostly(duplicate_share(learnt, rows) + slack)
    elif kind == "out_of_range":
        kw["mostly"] = _mostly(range_share(learnt, _nonnull(learnt, rows)) + slack)
    elif kind == "row_count":
        kw["min_value"], kw["max_value"] = row_count_bounds(learnt)
    else:
        return entry
    return {**entry, "kwargs": kw}


def resolve_entries(entries: list[dict], rows: int) -> list[dict]:
    """The suite's entries with every learnt bound made concrete for a batch of `rows` rows.

    Entries keep their shape (`kind`, `column`, `severity`, `type`, GX `kwargs`); only the
    kwargs of learnt bounds change, so the result is evaluated like any suite's entries.
    """
    return [resolve_entry(e, rows) for e in entries]


def with_accepted_rows(suite: dict, sizes: list[int], alpha: float = 1e-4) -> dict:
    """The suite with the row counts of accepted batches beside its row-count bound, so
    `resolve_entries` judges a batch's size by theirs (once there are `ROW_HISTORY` of them).
    A suite whose row-count entry learnt nothing (schema "1") learns its bounds from its kwargs.
    """
    entries = []
    for e in suite.get("expectations", []):
        if (
            isinstance(e, dict)
            and e.get("kind") == "row_count"
            and isinstance(e.get("kwargs"), dict)
        ):
            kw = e["kwargs"]
            learnt = dict(e.get("learnt") or {})
            learnt.setdefault("min_rows", kw.get("min_value") or 0)
            learnt.setdefault("max_rows", kw.get("max_value"))
            learnt.setdefault("alpha", alpha)
            e = {**e, "learnt": {**learnt, "accepted_rows": [int(s) for s in sizes]}}
        entries.append(e)
    return {**suite, "expectations": entries}
