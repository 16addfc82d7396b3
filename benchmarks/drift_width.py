"""Speed of `evaluate_drift` on a wide, short frame: 5,000 columns x 200 rows on each side.

Three ways, in this process, on the same frames:

- `evaluate_drift` as it is: the numerical columns measured many at once (`drift.batched`),
  the domain classifier on a seeded draw of `MAX_FEATURES` features;
- the per-column path: the same function with the batching switched off (each column read,
  measured and summarised alone, as before) and the classifier on every feature;
- a plain scipy loop computing, per column, what the per-column tests decide on (KS statistic
  and p-value, Cramer-von Mises, Wasserstein; chi-square for categories), with no report.

Run with `.venv/bin/python benchmarks/drift_width.py [COLUMNS] [ROWS]`.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from mlops_loop.core.drift import batched, evaluate, evaluate_drift, multivariate, sides

SEED = 7
CATEGORICAL_SHARE = 0.1


def make_frame(rng: np.random.Generator, rows: int, columns: int, drift: float) -> pd.DataFrame:
    """Normal numbers (one in ten shifted by `drift`) and one column in ten of categories."""
    data: dict[str, object] = {}
    n_categorical = int(columns * CATEGORICAL_SHARE)
    for i in range(columns - n_categorical):
        data[f"x{i}"] = rng.normal(drift if i % 10 == 0 else 0.0, 1.0, rows)
    for i in range(n_categorical):
        data[f"c{i}"] = rng.choice(["a", "b", "c", "d"], rows)
    return pd.DataFrame(data)


def per_column_path() -> dict[tuple[object, str], object]:
    """Switch the batching and the classifier's feature draw off; returns what to restore."""
    saved = {
        (evaluate, "BATCH_MAX_VALUES"): evaluate.BATCH_MAX_VALUES,
        (batched, "BATCH_MAX_VALUES"): batched.BATCH_MAX_VALUES,
        (sides, "BLOCK_MAX_ROWS"): sides.BLOCK_MAX_ROWS,
        (multivariate, "MAX_FEATURES"): multivariate.MAX_FEATURES,
    }
    evaluate.BATCH_MAX_VALUES = 0  # threads, as for large columns
    batched.BATCH_MAX_VALUES = 0  # every column measured alone
    sides.BLOCK_MAX_ROWS = 0  # every column selected alone
    multivariate.MAX_FEATURES = 10**9
    return saved


def scipy_loop(ref: pd.DataFrame, cur: pd.DataFrame) -> int:
    flagged = 0
    for name in ref.columns:
        a, b = ref[name].to_numpy(), cur[name].to_numpy()
        if a.dtype.kind == "f":
            ks = stats.ks_2samp(a, b)
            stats.cramervonmises_2samp(a, b)
            stats.wasserstein_distance(a, b)
            flagged += ks.pvalue < 0.01
        else:
            table = pd.crosstab(
                np.r_[np.zeros(a.size), np.ones(b.size)], np.concatenate([a, b])
            ).to_numpy()
            flagged += stats.chi2_contingency(table).pvalue < 0.01
    return flagged


def timed(run) -> tuple[float, object]:
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def main() -> None:
    columns = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    rng = np.random.default_rng(SEED)
    ref = make_frame(rng, rows, columns, 0.0)
    cur = make_frame(rng, rows, columns, 1.0)
    warnings.simplefilter("ignore")  # scipy's exact -> asymptotic notes
    evaluate_drift(ref.iloc[:, :50], cur.iloc[:, :50])  # imports (scikit-learn) out of the way

    fast_s, fast = timed(lambda: evaluate_drift(ref, cur))
    saved = per_column_path()
    try:
        slow_s, slow = timed(lambda: evaluate_drift(ref, cur))
    finally:
        for (module, name), value in saved.items():
            setattr(module, name, value)
    loop_s, _ = timed(lambda: scipy_loop(ref, cur))

    worst = 0.0
    by_name = {f.name: f for f in slow.features}
    for f in fast.features:
        g = by_name[f.name]
        assert f.drifted == g.drifted, f.name
        for key, value in f.statistics.items():
            other = g.statistics[key]
            if value is not None and other is not None and np.isfinite(value):
                worst = max(worst, abs(value - other) / max(1.0, abs(other)))
    print(f"{columns} columns x {rows} rows per side ({CATEGORICAL_SHARE:.0%} categorical)")
    print(f"largest relative difference between the two paths' statistics: {worst:.1e}")
    print(f"same drifted features on both paths: {len(fast.drifted_features)}")
    print(
        f"evaluate_drift:                  {fast_s:6.2f} s (classifier on "
        f"{len(fast.multivariate.features)} features, AUC {fast.multivariate.auc})"
    )
    print(
        f"per-column path:                 {slow_s:6.2f} s (classifier on "
        f"{len(slow.multivariate.features)} features, AUC {slow.multivariate.auc})"
    )
    print(f"plain scipy loop (no report):    {loop_s:6.2f} s")
    print(f"speed-up over the per-column path: {slow_s / fast_s:.1f}x")
    print(f"speed-up over the scipy loop:      {loop_s / fast_s:.1f}x")


if __name__ == "__main__":
    main()
