"""The wide-frame path: many small columns measured at once give the per-column measures."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mlops_loop.core.drift import ReferenceProfile, evaluate_drift
from mlops_loop.core.drift.batched import many_numeric_measures, many_summaries
from mlops_loop.core.drift.evaluate import chi_square
from mlops_loop.core.drift.measures import numeric_measures
from mlops_loop.core.drift.sides import numeric_summary


def samples(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for j in range(120):
        n, m = [(200, 200), (15, 12), (300, 100), (2, 3)][j % 4]
        kind = j % 5
        if kind == 0:
            a, b = rng.normal(size=n), rng.normal(0.3, size=m)
        elif kind == 1:  # heavy ties
            a, b = rng.poisson(2, n) * 1.0, rng.poisson(2.5, m) * 1.0
        elif kind == 2:  # a constant reference
            a, b = np.zeros(n), np.ones(m)
        elif kind == 3:
            a, b = np.zeros(n), np.zeros(m)
        else:  # sums that overflow
            a, b = rng.standard_t(1, n) * 1e300, rng.standard_t(1, m) * 1e300
        pairs.append((np.sort(a), np.sort(b)))
    return pairs


def close(x: float | None, y: float | None) -> bool:
    if x is None or y is None:
        return x is y
    if not (math.isfinite(x) and math.isfinite(y)):
        return x == y or (math.isnan(x) and math.isnan(y))
    return x == pytest.approx(y, rel=1e-12, abs=1e-12)


def test_many_columns_at_once_give_each_column_s_measures_and_summary() -> None:
    pairs = samples(np.random.default_rng(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's exact -> asymptotic note
        got = many_numeric_measures(pairs)
        expected = [numeric_measures(a, b) for a, b in pairs]
    for g, e in zip(got, expected, strict=True):
        for f in dataclasses.fields(e):
            assert close(getattr(g, f.name), getattr(e, f.name)), (f.name, g, e)
    flat = [v for pair in pairs for v in pair]
    for g, e in zip(many_summaries(flat), [numeric_summary(v) for v in flat], strict=True):
        assert g.keys() == e.keys()
        assert all(close(x, y) for x, y in zip(g["quantiles"], e["quantiles"], strict=True))
        assert all(close(g[k], e[k]) for k in ("count", "mean", "std", "min", "max"))


def test_chi_square_equals_scipy_s_contingency_test() -> None:
    rng = np.random.default_rng(1)
    for rows in (2, 3, 30):
        for _ in range(20):
            counts = rng.integers(1, 60, (rows, 2)).astype(float)
            expected = stats.chi2_contingency(counts.T)
            assert chi_square(counts) == pytest.approx((expected.statistic, expected.pvalue))
    assert chi_square(np.array([[5.0, 7.0]])) == (0.0, 1.0)


def test_a_wide_frame_gives_the_same_report_from_frame_profile_and_per_column_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlops_loop.core.drift import batched, evaluate, sides

    rng = np.random.default_rng(2)
    ref = pd.DataFrame(rng.normal(size=(60, 300)), columns=[f"x{i}" for i in range(300)])
    cur = pd.DataFrame(rng.normal(size=(50, 300)), columns=ref.columns)
    cur["x0"] += 3
    ref["c"], cur["c"] = rng.choice(["a", "b"], 60), rng.choice(["a", "c"], 50)
    report = evaluate_drift(ref, cur)
    assert report.drifted_features[:1] == ["x0"] and "c" in report.drifted_features
    assert evaluate_drift(ReferenceProfile.from_frame(ref), cur).to_dict() == report.to_dict()
    for module, name in ((evaluate, "BATCH_MAX_VALUES"), (batched, "BATCH_MAX_VALUES")):
        monkeypatch.setattr(module, name, 0)
    monkeypatch.setattr(sides, "BLOCK_MAX_ROWS", 0)
    alone = evaluate_drift(ref, cur)
    assert alone.drifted_features == report.drifted_features
    for f, g in zip(report.features, alone.features, strict=True):
        assert f.name == g.name
        assert all(close(f.statistics[k], g.statistics[k]) for k in f.statistics)
