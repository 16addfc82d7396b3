"""Two-sample drift measures computed from sorted samples.

Each numerical column is sorted once per side; the pooled order of the two sorted samples (a
linear-time merge) then gives the two empirical CDFs at every distinct value, from which the
Kolmogorov-Smirnov distance, the Wasserstein-1 distance and the Cramer-von Mises statistic
follow in a few vectorised passes. PSI and Jensen-Shannon bins come from the reference's
quantiles, counted with binary searches in the sorted arrays. Categorical measures work on the
table of category counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

#: Bins of PSI and Jensen-Shannon on numbers (cut at the reference's quantiles).
PSI_BINS = 10
#: Share given to a bin that is empty on one side, so PSI stays finite.
PSI_EPSILON = 1e-4
#: Largest sample size for which the KS p-value is exact (scipy's 'auto' switch).
KS_EXACT_MAX_N = 10_000
#: Largest sample size for which the Cramer-von Mises p-value is exact (scipy's 'auto' switch).
CVM_EXACT_MAX_N = 20


@dataclass(frozen=True)
class NumericMeasures:
    """Every measure of one numerical column; p-values are None when undefined."""

    ks: float
    ks_p_value: float
    wasserstein: float
    wasserstein_norm: float
    psi: float
    jensen_shannon: float
    cramer_von_mises: float
    cramer_von_mises_p_value: float | None


def sorted_finite(values: np.ndarray) -> np.ndarray:
    """The finite values, sorted: NaN sort last and the infinities sit at both ends.

    Sorts `values` in place.
    """
    s = values
    s.sort()
    lo = int(np.searchsorted(s, -np.inf, side="right"))
    hi = int(np.searchsorted(s, np.inf, side="left"))  # NaN sort after +inf
    return s[lo:hi]


def sorted_quantiles(s: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """`np.quantile(s, levels)` (linear interpolation) for an already sorted `s`."""
    pos = np.asarray(levels, dtype="float64") * (s.size - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, s.size - 1)
    frac = pos - lo
    a, b = s[lo], s[hi]
    with np.errstate(over="ignore", invalid="ignore"):
        # numpy's lerp: exact at both ends, and no inf * 0 when a bin has no width
        out = np.where(frac < 0.5, a + (b - a) * frac, b - (b - a) * (1 - frac))
    return np.where(a == b, a, out)


def quantile_edges(reference_sorted: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Inner bin edges at the reference's quantiles; repeated edges (ties) are merged."""
    return np.unique(sorted_quantiles(reference_sorted, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def bin_counts(s: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of sorted `s` in (-inf, e0), [e0, e1), ..., [ek, inf), as `np.histogram` cuts."""
    cuts = np.searchsorted(s, edges, side="left")
    return np.diff(np.concatenate([[0], cuts, [s.size]]))


def psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Population stability index; shares of empty bins are raised to `PSI_EPSILON`."""
    p = np.maximum(reference_counts / reference_counts.sum(), PSI_EPSILON)
    q = np.maximum(current_counts / current_counts.sum(), PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def jensen_shannon(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Jensen-Shannon distance in base 2 (the square root of the divergence), in [0, 1]."""
    p = reference_counts / reference_counts.sum()
    q = current_counts / current_counts.sum()
    m = (p + q) / 2
    divergence = (special.rel_entr(p, m).sum() + special.rel_entr(q, m).sum()) / (2 * math.log(2))
    return float(min(math.sqrt(max(divergence, 0.0)), 1.0))


def total_variation(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Half the L1 distance between the two share vectors."""
    p = reference_counts / reference_counts.sum()
    q = current_counts / current_counts.sum()
    return float(0.5 * np.abs(p - q).sum())


def _cdf_cvm_inf(x: float) -> float:
    """CDF of the limiting Cramer-von Mises distribution (Csorgo and Faraway 1996, eq. 1.2).

    The series scipy sums in `scipy.stats._hypotests._cdf_cvm_inf`, kept here so no private
    scipy function is imported.
    """
    total, k = 0.0, 0
    while True:
        u = math.exp(special.gammaln(k + 0.5) - special.gammaln(k + 1)) / (
            math.pi**1.5 * math.sqrt(x)
        )
        y = 4 * k + 1
        q = y**2 / (16 * x)
        term = u * math.sqrt(y) * math.exp(-q) * float(special.kv(0.25, q))
        total += term
        k += 1
        if not abs(term) >= 1e-7:
            return total


def cvm_asymptotic_p_value(t: float, nx: int, ny: int) -> float:
    """scipy's asymptotic p-value of the two-sample Cramer-von Mises statistic `t`."""
    k, n = float(nx) * float(ny), float(nx + ny)
    et = (1 + 1 / n) / 6
    vt = (n + 1) * (4 * k * n - 3 * (float(nx) ** 2 + float(ny) ** 2) - 2 * k)
    vt = vt / (45 * n**2 * 4 * k)
    tn = 1 / 6 + (t - et) / math.sqrt(45 * vt)
    if tn < 0.003:
        return 1.0
    return max(1.0 - _cdf_cvm_inf(tn), 0.0)


#: Values of each sample per step of the merge; bounds the temporary arrays of a column.
MERGE_STEP = 1 << 17


def _merged_pass(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """KS distance, Wasserstein-1 distance and the Cramer-von Mises U of sorted `a` and `b`.

    One pass over the pooled order, in steps cut at values so that ties never straddle two
    steps; each step merges its slices of `a` and `b` (timsort on two sorted runs: linear), and
    reads both empirical CDFs after every run of equal values, as `scipy.stats.ks_2samp` and
    `wasserstein_distance` do.
    """
    n, m = int(a.size), int(b.size)
    cuts = np.unique(np.concatenate([a[MERGE_STEP::MERGE_STEP], b[MERGE_STEP::MERGE_STEP]]))
    bounds_a = np.concatenate([[0], np.searchsorted(a, cuts, side="left"), [n]])
    bounds_b = np.concatenate([[0], np.searchsorted(b, cuts, side="left"), [m]])
    ks = wasserstein = u = 0.0
    prev_value, prev_gap = 0.0, 0.0  # the last distinct value so far, |F_a - F_b| after it
    for a0, a1, b0, b1 in zip(
        bounds_a[:-1], bounds_a[1:], bounds_b[:-1], bounds_b[1:], strict=True
    ):
        if a0 == a1 and b0 == b1:
            continue
        values = np.concatenate([a[a0:a1], b[b0:b1]])
        order = np.argsort(values, kind="stable")
        values = values[order]
        from_a = order < a1 - a0
        del order
        last = np.empty(values.size, dtype=bool)
        np.not_equal(values[1:], values[:-1], out=last[:-1])
        last[-1] = True
        distinct = values[last]
        del values
        cum_a = np.cumsum(from_a)[last] + a0  # values of `a` <= each distinct value
        cum_b = np.cumsum(~from_a)[last] + b0
        del from_a, last
        gap = cum_a / n
        gap -= cum_b / m
        np.abs(gap, out=gap)
        ks = max(ks, float(gap.max()))
        with np.errstate(over="ignore", invalid="ignore"):
            # Where the CDFs agree nothing is added, even across an overflowing (inf) width.
            if (a0 or b0) and prev_gap > 0:
                wasserstein += prev_gap * (float(distinct[0]) - prev_value)
            widths = np.diff(distinct)
            widths *= gap[:-1]
            widths[gap[:-1] == 0] = 0.0
            wasserstein += float(widths.sum())
        prev_value, prev_gap = float(distinct[-1]), float(gap[-1])
        del widths, gap, distinct

        # U = n * sum_i (r_i - i)^2 + m * sum_j (s_j - j)^2 over the midranks r, s of the
        # sorted samples in the pooled one. A run of ties holding k values of `a` has the
        # midrank R of its pooled positions, and those values' own ranks are j + 1 .. j + k
        # (j: values of `a` before the run); sum_{t=1..k} (R - j - t)^2 is
        # k (R - j - (k + 1) / 2)^2 + k (k^2 - 1) / 12, non-negative terms without cancellation.
        cum_all = (cum_a + cum_b).astype("float64")
        size = np.diff(cum_all, prepend=float(a0 + b0))
        midrank = cum_all - (size - 1) / 2
        del size, cum_all
        for weight, cum, start in ((n, cum_a, a0), (m, cum_b, b0)):
            k = np.diff(cum, prepend=start).astype("float64")
            centre = midrank - cum
            centre += (k - 1) / 2  # R - (cum - k) - (k + 1) / 2
            centre *= centre
            centre *= k
            tail = k * k
            tail -= 1
            tail *= k
            u += weight * (float(centre.sum()) + float(tail.sum()) / 12)
    return ks, wasserstein, u


def numeric_measures(a: np.ndarray, b: np.ndarray) -> NumericMeasures:
    """All numerical measures of sorted, finite, non-empty samples `a` (reference) and `b`."""
    n, m = int(a.size), int(b.size)
    total = n + m
    ks, wasserstein, u = _merged_pass(a, b)
    k = float(n) * float(m)
    cvm = u / (k * total) - (4 * k - 1) / (6 * total)
    cvm_p: float | None
    if n < 2 or m < 2:
        cvm_p = None
    elif max(n, m) <= CVM_EXACT_MAX_N:
        cvm_p = float(stats.cramervonmises_2samp(a, b, method="exact").pvalue)
    else:
        cvm_p = cvm_asymptotic_p_value(cvm, n, m)

    if max(n, m) <= KS_EXACT_MAX_N:
        ks_p = float(stats.ks_2samp(a, b).pvalue)
    else:
        ks_p = float(stats.kstwo.sf(ks, np.round(n * m / total)))

    # Normalised by the reference's spread: its (population) standard deviation, else its IQR.
    with np.errstate(over="ignore", invalid="ignore"):
        scales = [float(np.std(a))]
        if not (math.isfinite(scales[0]) and scales[0] > 0):
            q1, q3 = sorted_quantiles(a, np.array([0.25, 0.75]))
            scales.append(float(q3 - q1))
    scale = next((s for s in scales if math.isfinite(s) and s > 0), None)
    if scale is not None:
        wasserstein_norm = wasserstein / scale
    else:  # a constant reference: any movement is infinitely many spreads
        wasserstein_norm = 0.0 if wasserstein == 0 else math.inf

    edges = quantile_edges(a)
    ref_bins, cur_bins = bin_counts(a, edges), bin_counts(b, edges)
    return NumericMeasures(
        ks=ks,
        ks_p_value=ks_p,
        wasserstein=wasserstein,
        wasserstein_norm=wasserstein_norm,
        psi=psi(ref_bins, cur_bins),
        jensen_shannon=jensen_shannon(ref_bins, cur_bins),
        cramer_von_mises=float(cvm),
        cramer_von_mises_p_value=cvm_p,
    )
