"""Speed of `evaluate_drift` against the naive per-column scipy/numpy way of computing the same
statistics, on 1M reference rows and 1M current rows (16 numeric + 4 categorical columns).

Both compute, per numeric column: KS statistic and p-value, Wasserstein-1 over the reference's
standard deviation, PSI and Jensen-Shannon on 10 reference-decile bins, and the two-sample
Cramer-von Mises statistic and p-value; per categorical column: chi-square, total variation,
PSI and Jensen-Shannon. Run with `.venv/bin/python benchmarks/drift_speed.py`.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import stats
from scipy.spatial import distance

from mlops_loop.core.config import DriftPolicy
from mlops_loop.core.drift import evaluate_drift

N_ROWS = 1_000_000
N_NUMERIC = 16
N_CATEGORICAL = 4
SEED = 20240611
BINS = 10
EPS = 1e-4


def make_frame(rng: np.random.Generator, n: int, drift: float) -> pd.DataFrame:
    """Numbers of several shapes (some with heavy ties) and string categories; `drift` shifts
    a quarter of the numeric columns and half of the categorical ones."""
    columns: dict[str, object] = {}
    for i in range(N_NUMERIC):
        shift = drift if i % 4 == 0 else 0.0
        match i % 4:
            case 0:
                columns[f"num_{i}"] = rng.normal(shift, 1.0, n)
            case 1:
                columns[f"num_{i}"] = rng.lognormal(shift, 0.7, n)
            case 2:
                columns[f"num_{i}"] = rng.integers(0, 50, n).astype("float64")  # many ties
            case _:
                columns[f"num_{i}"] = np.round(rng.gamma(2.0 + shift, 1.5, n), 2)
    for j, cardinality in enumerate((3, 12, 60, 400)):
        weights = np.linspace(1.0, 2.0 + (drift if j % 2 == 0 else 0.0), cardinality)
        labels = pa.array([f"cat{j}_{k}" for k in range(cardinality)])
        codes = pa.array(rng.choice(cardinality, n, p=weights / weights.sum()).astype(np.int32))
        # Through Arrow, so building the data leaves no peak of its own in the RSS figures.
        strings = pa.DictionaryArray.from_arrays(codes, labels).cast(pa.large_string())
        columns[f"cat_{j}"] = pd.Series(pd.array(strings, dtype="str"))
    return pd.DataFrame(columns)


def naive(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, dict[str, float]]:
    """The same statistics column by column, the straightforward scipy/numpy way."""
    out: dict[str, dict[str, float]] = {}
    for name in reference.columns:
        ref, cur = reference[name], current[name]
        if pd.api.types.is_numeric_dtype(ref):
            a = ref.to_numpy(dtype="float64")
            b = cur.to_numpy(dtype="float64")
            a, b = a[np.isfinite(a)], b[np.isfinite(b)]
            ks = stats.ks_2samp(a, b)
            wasserstein = stats.wasserstein_distance(a, b) / np.std(a)
            inner = np.unique(np.quantile(a, np.linspace(0, 1, BINS + 1)[1:-1]))
            edges = np.concatenate([[min(a.min(), b.min())], inner, [max(a.max(), b.max())]])
            p = np.histogram(a, edges)[0] / a.size
            q = np.histogram(b, edges)[0] / b.size
            cvm = stats.cramervonmises_2samp(a, b)
            pe, qe = np.maximum(p, EPS), np.maximum(q, EPS)
            out[name] = {
                "ks": float(ks.statistic),
                "ks_p_value": float(ks.pvalue),
                "wasserstein_norm": float(wasserstein),
                "psi": float(np.sum((qe - pe) * np.log(qe / pe))),
                "jensen_shannon": float(distance.jensenshannon(p, q, base=2)),
                "cramer_von_mises": float(cvm.statistic),
                "cramer_von_mises_p_value": float(cvm.pvalue),
            }
        else:
            table = pd.concat([ref.value_counts(), cur.value_counts()], axis=1).fillna(0)
            counts = table.to_numpy(dtype="float64")
            chi2 = stats.chi2_contingency(counts.T)
            p, q = counts[:, 0] / counts[:, 0].sum(), counts[:, 1] / counts[:, 1].sum()
            pe, qe = np.maximum(p, EPS), np.maximum(q, EPS)
            out[name] = {
                "chi_square": float(chi2.statistic),
                "chi_square_p_value": float(chi2.pvalue),
                "total_variation": float(0.5 * np.abs(p - q).sum()),
                "psi": float(np.sum((qe - pe) * np.log(qe / pe))),
                "jensen_shannon": float(distance.jensenshannon(p, q, base=2)),
            }
    return out


def timed(fn: Callable[[], object], repeats: int = 3, too_slow: float = 60.0) -> tuple:
    """Median seconds of `repeats` runs (one run when the first exceeds `too_slow`)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        if times[0] > too_slow:
            break
    return statistics.median(times), len(times), result


def peak_rss_mb() -> float:
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kilobytes * (1 if sys.platform != "darwin" else 1 / 1024) / 1024


def current_rss_mb() -> float | None:
    """Resident memory now (Linux only), to tell a run's own peak from earlier ones."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def main() -> None:
    start_rss = peak_rss_mb()
    rng = np.random.default_rng(SEED)
    reference = make_frame(rng, N_ROWS, drift=0.0)
    current = make_frame(rng, N_ROWS, drift=0.15)
    frames_mb = (
        reference.memory_usage(deep=True).sum() + current.memory_usage(deep=True).sum()
    ) / 2**20
    data_rss = peak_rss_mb()
    before = current_rss_mb()
    print(
        f"data: {N_ROWS:,} reference + {N_ROWS:,} current rows, {N_NUMERIC} numeric + "
        f"{N_CATEGORICAL} categorical columns; the two frames take {frames_mb:,.0f} MiB"
    )

    fast_s, fast_runs, report = timed(lambda: evaluate_drift(reference, current))
    fast_peak = peak_rss_mb()
    features_only = DriftPolicy(multivariate=False)
    per_column_s, per_column_runs, _ = timed(
        lambda: evaluate_drift(reference, current, policy=features_only)
    )
    slow_s, slow_runs, baseline = timed(lambda: naive(reference, current))
    end_peak = peak_rss_mb()

    # Same figures from both paths (the point of the comparison).
    worst = 0.0
    for f in report.features:
        for key, value in f.statistics.items():
            expected = baseline[f.name][key]
            if value is not None and expected:
                worst = max(worst, abs(value - expected) / max(abs(expected), 1e-300))
    print(f"largest relative difference between the two paths' statistics: {worst:.1e}")
    print(
        f"evaluate_drift (all statistics and the multivariate check): {fast_s:7.2f} s "
        f"(median of {fast_runs})"
    )
    print(
        f"  of which the multivariate check: {fast_s - per_column_s:.2f} s (per-column tests "
        f"alone: {per_column_s:.2f} s, median of {per_column_runs})"
    )
    print(f"naive per-column scipy/numpy:     {slow_s:7.2f} s (median of {slow_runs})")
    print(f"speed-up: {slow_s / fast_s:.1f}x")
    print(
        f"peak RSS: {start_rss:,.0f} MiB at start (interpreter and libraries), "
        f"{data_rss:,.0f} MiB after building the data, {fast_peak:,.0f} MiB after "
        f"evaluate_drift, {end_peak:,.0f} MiB after the naive baseline"
    )
    ratio = fast_peak / frames_mb
    print(
        f"peak RSS through evaluate_drift / the two frames = {ratio:.2f} "
        f"({'<=' if ratio <= 2 else '>'} 2x); above the start RSS: "
        f"{(fast_peak - start_rss) / frames_mb:.2f}x"
    )
    if before is not None:
        print(
            f"resident before evaluate_drift: {before:,.0f} MiB, so its temporaries peak at "
            f"<= {fast_peak - before:,.0f} MiB"
        )
    print(f"dataset drift: {report.dataset_drift} (fired by {report.triggered_by}); {report.rule}")
    if report.multivariate is not None:
        mv = report.multivariate
        print(f"multivariate: AUC {mv.auc}, top features {mv.top_features}, error {mv.error}")


if __name__ == "__main__":
    main()
