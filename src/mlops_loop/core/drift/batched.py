"""The numerical measures of many small columns at once, as 2-d array operations.

A wide frame (thousands of columns of a few hundred rows) spends its time in per-column Python
overhead, not in arithmetic: a call of `numeric_measures` on 200 + 200 values costs about a
millisecond, almost all of it dispatch. Columns whose samples have the same sizes are stacked
side by side, and every measure of `numeric_measures` is computed along the rows for all of them
together: the pooled ranks give the Kolmogorov-Smirnov and Wasserstein distances and the
Cramer-von Mises statistic, comparisons with the reference's deciles give the PSI and
Jensen-Shannon bins. The exact KS p-value depends only on the distance and the two sizes, so it
is computed once per distinct distance (by scipy, on the first column that has it).

`many_numeric_measures` gives what `numeric_measures` gives, column by column, up to rounding;
large columns (more than `BATCH_MAX_VALUES` values) still go through it one at a time, where the
arithmetic dominates and its bounded-memory merge matters.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from scipy import special, stats

from mlops_loop.core.drift.measures import (
    CVM_EXACT_MAX_N,
    KS_EXACT_MAX_N,
    PSI_BINS,
    PSI_EPSILON,
    NumericMeasures,
    cvm_asymptotic_p_value,
    numeric_measures,
)
from mlops_loop.core.drift.report import LEVELS

#: Largest n + m of a column measured in a batch; larger ones are measured one at a time.
BATCH_MAX_VALUES = 4096
#: Bound on the values of one block of columns (rows x columns), which bounds its memory.
_BLOCK_VALUES = 1 << 21


def batchable(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether `many_numeric_measures` measures this pair with others, not alone."""
    return a.size + b.size <= BATCH_MAX_VALUES and a.size > 1 and b.size > 1


def many_numeric_measures(pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[NumericMeasures]:
    """`numeric_measures(a, b)` of every pair of sorted, finite, non-empty samples."""
    out: list[NumericMeasures | None] = [None] * len(pairs)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (a, b) in enumerate(pairs):
        if batchable(a, b):
            groups[(a.size, b.size)].append(i)
        else:
            out[i] = numeric_measures(a, b)
    for (n, m), members in groups.items():
        step = max(1, _BLOCK_VALUES // (n + m))
        for start in range(0, len(members), step):
            block = members[start : start + step]
            a = np.stack([pairs[i][0] for i in block])
            b = np.stack([pairs[i][1] for i in block])
            for i, measured in zip(block, _block_measures(a, b), strict=True):
                out[i] = measured
    return [m for m in out if m is not None]


def _block_measures(a: np.ndarray, b: np.ndarray) -> list[NumericMeasures]:
    """The measures of each row of `a` (k x n) against the same row of `b` (k x m), each
    sorted. A row per column keeps every operation on contiguous memory."""
    n, m = a.shape[1], b.shape[1]
    total = n + m
    pooled = np.concatenate([a, b], axis=1)
    order = np.argsort(pooled, axis=1, kind="stable")
    values = np.take_along_axis(pooled, order, axis=1)
    cum_a = np.cumsum(order < n, axis=1)
    gap = cum_a / n
    gap -= (np.arange(1, total + 1) - cum_a) / m
    np.abs(gap, out=gap)
    del order, cum_a
    # The CDFs are read after each run of equal values, as scipy does.
    last = np.ones(values.shape, dtype=bool)
    np.not_equal(values[:, 1:], values[:, :-1], out=last[:, :-1])
    ks = np.where(last, gap, 0.0).max(axis=1)
    del last
    with np.errstate(over="ignore", invalid="ignore"):
        widths = np.diff(values, axis=1)  # zero within a run, so its inner gaps add nothing
        widths *= gap[:, :-1]
        widths[gap[:, :-1] == 0] = 0.0  # no inf * 0 where the CDFs agree across a huge width
        wasserstein = widths.sum(axis=1)
    del gap, widths, values

    # Cramer-von Mises: the midranks of each sorted sample in the pooled one (scipy's formula).
    ranks = stats.rankdata(pooled, axis=1)
    ranks[:, :n] -= np.arange(1, n + 1)
    ranks[:, n:] -= np.arange(1, m + 1)
    ranks *= ranks
    u = n * ranks[:, :n].sum(axis=1) + m * ranks[:, n:].sum(axis=1)
    del ranks, pooled
    k = float(n) * float(m)
    cvm = u / (k * total) - (4 * k - 1) / (6 * total)

    with np.errstate(over="ignore", invalid="ignore"):
        std = np.std(a, axis=1)
        q1, q3 = _quantiles(a, np.array([0.25, 0.75]))
        iqr = q3 - q1
    scale = np.where(np.isfinite(std) & (std > 0), std, np.where(np.isfinite(iqr), iqr, np.nan))

    # Bins cut at the reference's inner deciles. Repeated edges (ties) leave bins empty on both
    # sides, which add nothing to PSI or Jensen-Shannon: the same as merging them.
    edges = _quantiles(a, np.linspace(0.0, 1.0, PSI_BINS + 1)[1:-1])
    ref_bins, cur_bins = _bins(a, edges), _bins(b, edges)
    psis = _psi(ref_bins, cur_bins)
    js = _jensen_shannon(ref_bins, cur_bins)

    ks_p = _ks_p_values(a, b, ks)
    out = []
    for j in range(a.shape[0]):
        w, s = float(wasserstein[j]), float(scale[j])
        if math.isfinite(s) and s > 0:
            w_norm = w / s
        else:  # a constant reference: any movement is infinitely many spreads
            w_norm = 0.0 if w == 0 else math.inf
        if max(n, m) <= CVM_EXACT_MAX_N:
            cvm_p = float(stats.cramervonmises_2samp(a[j], b[j], method="exact").pvalue)
        else:
            cvm_p = cvm_asymptotic_p_value(float(cvm[j]), n, m)
        out.append(
            NumericMeasures(
                ks=float(ks[j]),
                ks_p_value=ks_p[j],
                wasserstein=w,
                wasserstein_norm=w_norm,
                psi=float(psis[j]),
                jensen_shannon=float(js[j]),
                cramer_von_mises=float(cvm[j]),
                cramer_von_mises_p_value=cvm_p,
            )
        )
    return out


def many_summaries(samples: list[np.ndarray]) -> list[dict]:
    """`numeric_summary` of every sorted, finite, non-empty sample, many at once."""
    out: list[dict | None] = [None] * len(samples)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[s.size].append(i)
    for n, members in groups.items():
        step = max(1, _BLOCK_VALUES // n)
        for start in range(0, len(members), step):
            block = members[start : start + step]
            values = np.stack([samples[i] for i in block])
            with np.errstate(over="ignore", invalid="ignore"):
                mean = values.mean(axis=1).tolist()
                std = values.std(axis=1, ddof=1).tolist() if n > 1 else [0.0] * len(block)
                quantiles = _quantiles(values, LEVELS).T.tolist()
            low, high = values[:, 0].tolist(), values[:, -1].tolist()
            for j, i in enumerate(block):
                out[i] = {
                    "count": n,
                    "mean": mean[j],
                    "std": std[j],
                    "min": low[j],
                    "max": high[j],
                    "quantiles": quantiles[j],
                }
    return [s for s in out if s is not None]


def _quantiles(s: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """`sorted_quantiles` of every row of sorted `s`: one row per level, one column per row."""
    pos = levels * (s.shape[1] - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, s.shape[1] - 1)
    frac = (pos - lo)[:, None]
    x, y = s[:, lo].T, s[:, hi].T
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.where(frac < 0.5, x + (y - x) * frac, y - (y - x) * (1 - frac))
    return np.where(x == y, x, out)


def _bins(s: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of each row of `s` in (-inf, e0), [e0, e1), ..., [ek, inf): bins x rows."""
    below = (s[:, None, :] < edges.T[:, :, None]).sum(axis=2).T  # as searchsorted "left"
    size = np.full((1, s.shape[0]), s.shape[1])
    return np.diff(np.concatenate([np.zeros_like(size), below, size]), axis=0)


def _psi(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    p = np.maximum(ref / ref.sum(axis=0), PSI_EPSILON)
    q = np.maximum(cur / cur.sum(axis=0), PSI_EPSILON)
    return np.sum((q - p) * np.log(q / p), axis=0)


def _jensen_shannon(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    p = ref / ref.sum(axis=0)
    q = cur / cur.sum(axis=0)
    mid = (p + q) / 2
    divergence = (special.rel_entr(p, mid).sum(axis=0) + special.rel_entr(q, mid).sum(axis=0)) / (
        2 * math.log(2)
    )
    return np.minimum(np.sqrt(np.maximum(divergence, 0.0)), 1.0)


def _ks_p_values(a: np.ndarray, b: np.ndarray, ks: np.ndarray) -> list[float]:
    """The KS p-value of each row, as `numeric_measures` gives it."""
    n, m = a.shape[1], b.shape[1]
    if max(n, m) > KS_EXACT_MAX_N:
        return [float(p) for p in stats.kstwo.sf(ks, np.round(n * m / (n + m)))]
    # The distance is |i m - j n| / (n m) for integers i, j: that integer keys the p-value.
    known: dict[int, float] = {}
    out = []
    for j, d in enumerate(ks.tolist()):
        key = round(d * n * m)
        if key not in known:
            known[key] = float(stats.ks_2samp(a[j], b[j]).pvalue)
        out.append(known[key])
    return out
