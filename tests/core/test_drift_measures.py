"""Golden values and properties of the additional drift measures (Wasserstein, PSI, JS, CvM)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial import distance

from mlops_loop.core.drift import FeatureDrift, evaluate_drift, measures
from mlops_loop.core.drift.measures import (
    PSI_BINS,
    PSI_EPSILON,
    bin_counts,
    jensen_shannon,
    numeric_measures,
    psi,
    quantile_edges,
    sorted_finite,
    sorted_quantiles,
    total_variation,
)

NUMERIC_KEYS = {
    "ks",
    "ks_p_value",
    "wasserstein_norm",
    "psi",
    "jensen_shannon",
    "cramer_von_mises",
    "cramer_von_mises_p_value",
}
CATEGORICAL_KEYS = {"chi_square", "chi_square_p_value", "total_variation", "psi", "jensen_shannon"}


def samples(seed: int, n: int, m: int, decimals: int | None = None) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0.0, 1.0, n), rng.gamma(2.0, 0.6, m)
    if decimals is not None:  # many ties
        a, b = np.round(a, decimals), np.round(b, decimals)
    return np.sort(a), np.sort(b)


def histogram_reference(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bin counts by np.histogram on the reference's decile edges, outer edges at the data."""
    inner = np.unique(np.quantile(a, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    edges = np.concatenate([[lo], inner, [hi]])
    return np.histogram(a, edges)[0], np.histogram(b, edges)[0]


def entry(frame_ref: pd.DataFrame, frame_cur: pd.DataFrame, name: str, **kw) -> FeatureDrift:
    report = evaluate_drift(frame_ref, frame_cur, **kw)
    return next(f for f in report.features if f.name == name)


# ---------------------------------------------------------------- golden values


@pytest.mark.parametrize(
    "n, m, decimals", [(50, 80, None), (3000, 700, None), (5000, 5000, 1), (30_000, 12_000, 2)]
)
def test_numeric_measures_equal_scipy_and_direct_formulas(
    n: int, m: int, decimals: int | None
) -> None:
    a, b = samples(n, n, m, decimals)
    got = numeric_measures(a, b)

    ks = stats.ks_2samp(a, b)
    assert got.ks == pytest.approx(ks.statistic, abs=1e-15)
    assert got.ks_p_value == pytest.approx(ks.pvalue, rel=1e-9, abs=1e-300)
    w = stats.wasserstein_distance(a, b)
    assert got.wasserstein == pytest.approx(w, rel=1e-9)
    assert got.wasserstein_norm == pytest.approx(w / np.std(a), rel=1e-9)
    cvm = stats.cramervonmises_2samp(a, b)
    assert got.cramer_von_mises == pytest.approx(cvm.statistic, rel=1e-9)
    assert got.cramer_von_mises_p_value == pytest.approx(cvm.pvalue, rel=1e-6, abs=1e-12)

    ref_counts, cur_counts = histogram_reference(a, b)
    np.testing.assert_array_equal(bin_counts(a, quantile_edges(a)), ref_counts)
    np.testing.assert_array_equal(bin_counts(b, quantile_edges(a)), cur_counts)
    p = np.maximum(ref_counts / n, PSI_EPSILON)
    q = np.maximum(cur_counts / m, PSI_EPSILON)
    assert got.psi == pytest.approx(np.sum((q - p) * np.log(q / p)), rel=1e-12)
    assert got.jensen_shannon == pytest.approx(
        distance.jensenshannon(ref_counts / n, cur_counts / m, base=2), rel=1e-9, abs=1e-12
    )


@pytest.mark.parametrize("n, m", [(2, 3), (7, 20), (20, 11)])
def test_small_samples_use_the_exact_cramer_von_mises_p_value(n: int, m: int) -> None:
    a, b = samples(n + m, n, m, decimals=1)
    got = numeric_measures(a, b)
    expected = stats.cramervonmises_2samp(a, b)
    assert got.cramer_von_mises == pytest.approx(expected.statistic, rel=1e-9, abs=1e-12)
    assert got.cramer_von_mises_p_value == pytest.approx(expected.pvalue, rel=1e-9)


def test_one_value_on_a_side_has_no_cramer_von_mises_p_value() -> None:
    got = numeric_measures(np.array([1.0]), np.array([0.0, 2.0, 3.0]))
    assert got.cramer_von_mises_p_value is None
    assert got.ks_p_value == pytest.approx(stats.ks_2samp([1.0], [0.0, 2.0, 3.0]).pvalue)


def test_sorted_helpers_match_numpy() -> None:
    rng = np.random.default_rng(3)
    raw = np.concatenate([rng.normal(size=1001), [np.nan, np.inf, -np.inf, np.nan]])
    s = sorted_finite(raw.copy())
    np.testing.assert_array_equal(s, np.sort(raw[np.isfinite(raw)]))
    levels = np.linspace(0, 1, 37)
    np.testing.assert_allclose(sorted_quantiles(s, levels), np.quantile(s, levels), rtol=1e-14)
    assert sorted_quantiles(np.full(5, 1e308), levels).tolist() == [1e308] * 37


def test_categorical_measures_equal_direct_formulas_on_the_pooled_table() -> None:
    rng = np.random.default_rng(4)
    cats = np.array(["a", "b", "c", "d"])
    ref = rng.choice(cats, 4000, p=[0.4, 0.3, 0.2, 0.1])
    cur = rng.choice(cats, 1500, p=[0.25, 0.3, 0.25, 0.2])
    c = entry(pd.DataFrame({"c": ref}), pd.DataFrame({"c": cur}), "c")
    counts = np.array([[np.sum(ref == k), np.sum(cur == k)] for k in cats], dtype=float)
    p, q = counts[:, 0] / 4000, counts[:, 1] / 1500
    assert set(c.statistics) == CATEGORICAL_KEYS
    assert c.statistics["chi_square"] == pytest.approx(stats.chi2_contingency(counts.T).statistic)
    assert c.statistics["chi_square_p_value"] == c.p_value
    assert c.statistics["total_variation"] == pytest.approx(0.5 * np.abs(p - q).sum())
    assert c.statistics["total_variation"] == c.effect_size
    assert c.statistics["psi"] == pytest.approx(np.sum((q - p) * np.log(q / p)))
    assert c.statistics["jensen_shannon"] == pytest.approx(distance.jensenshannon(p, q, base=2))


def test_numerical_entry_carries_every_measure_and_keeps_the_ks_decision() -> None:
    a, b = samples(5, 4000, 3000)
    x = entry(pd.DataFrame({"x": a}), pd.DataFrame({"x": b}), "x")
    assert set(x.statistics) == NUMERIC_KEYS
    assert (x.method, x.statistic, x.p_value) == (
        "ks",
        x.statistics["ks"],
        x.statistics["ks_p_value"],
    )
    assert x.statistics["wasserstein_norm"] == pytest.approx(
        stats.wasserstein_distance(a, b) / np.std(a)
    )
    assert x.to_dict()["statistics"] == pytest.approx(x.statistics)


def test_constant_reference_uses_iqr_or_reports_an_unbounded_wasserstein() -> None:
    ref = pd.DataFrame({"k": np.full(300, 2.0)})
    moved = entry(ref, pd.DataFrame({"k": np.full(300, 3.0)}), "k")
    assert moved.statistics["wasserstein_norm"] == np.inf
    assert moved.to_dict()["statistics"]["wasserstein_norm"] is None
    json.dumps(moved.to_dict(), allow_nan=False)
    same = entry(ref, ref, "k")
    assert same.statistics["wasserstein_norm"] == 0.0 and same.statistics["psi"] == 0.0


# ---------------------------------------------------------------- properties

finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@pytest.mark.filterwarnings("ignore:ks_2samp:RuntimeWarning")  # scipy's exact->asymp switch
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(finite, min_size=1, max_size=80))
def test_identical_numeric_samples_have_zero_distances(values: list[float]) -> None:
    s = np.sort(np.asarray(values, dtype="float64"))
    got = numeric_measures(s, s.copy())
    assert got.ks == 0.0 and got.wasserstein == 0.0 and got.wasserstein_norm == 0.0
    assert got.psi == 0.0
    assert got.jensen_shannon == pytest.approx(0.0, abs=1e-7)


@pytest.mark.filterwarnings("ignore:ks_2samp:RuntimeWarning")  # scipy's exact->asymp switch
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    a=st.lists(finite, min_size=1, max_size=60),
    b=st.lists(finite, min_size=1, max_size=60),
)
def test_numeric_distances_are_bounded_and_match_scipy(a: list[float], b: list[float]) -> None:
    x, y = np.sort(np.asarray(a, dtype="float64")), np.sort(np.asarray(b, dtype="float64"))
    got = numeric_measures(x, y)
    assert 0.0 <= got.jensen_shannon <= 1.0 and 0.0 <= got.ks <= 1.0
    assert got.psi >= 0.0 and got.wasserstein_norm >= 0.0
    assert got.wasserstein == pytest.approx(stats.wasserstein_distance(x, y), rel=1e-9, abs=1e-9)
    if len(a) > 1 and len(b) > 1:
        expected = stats.cramervonmises_2samp(x, y)
        assert got.cramer_von_mises == pytest.approx(expected.statistic, rel=1e-7, abs=1e-9)


counts = st.lists(st.integers(0, 1000), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(pair=counts.flatmap(lambda c: st.tuples(st.just(c), st.permutations(c))), extra=counts)
def test_js_and_tv_are_symmetric_bounded_and_zero_on_equal_shares(
    pair: tuple[list[int], list[int]], extra: list[int]
) -> None:
    p = np.asarray(pair[0], dtype="float64")
    q = np.asarray(pair[1], dtype="float64") + np.resize(np.asarray(extra, dtype="float64"), p.size)
    assume(p.sum() > 0 and q.sum() > 0)
    for f in (jensen_shannon, total_variation):
        assert f(p, q) == pytest.approx(f(q, p), abs=1e-12)
        assert 0.0 <= f(p, q) <= 1.0
        assert f(p, 3 * p) == pytest.approx(0.0, abs=1e-7)
    assert psi(p, 2 * p) == pytest.approx(0.0, abs=1e-12)
    assert psi(p, q) == pytest.approx(psi(q, p), rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ref=st.lists(st.sampled_from(["u", "v", "w", "x", None]), min_size=1, max_size=60),
    cur=st.lists(st.sampled_from(["u", "v", "w", "x", None]), min_size=1, max_size=60),
)
def test_categorical_measures_are_symmetric_and_zero_on_identical_columns(
    ref: list[str | None], cur: list[str | None]
) -> None:
    r = pd.DataFrame({"c": pd.Series(ref, dtype=object)})
    c = pd.DataFrame({"c": pd.Series(cur, dtype=object)})
    if r["c"].isna().all() or c["c"].isna().all():
        return
    forward, backward = entry(r, c, "c"), entry(c, r, "c")
    # Values new to the reference are weighed against the reference's own share of values
    # seen once (docs/drift.md), so the sides are interchangeable only when they hold the same
    # values.
    if set(ref) == set(cur):
        for key in ("jensen_shannon", "total_variation", "psi"):
            assert forward.statistics[key] == pytest.approx(backward.statistics[key], abs=1e-12)
    assert 0.0 <= forward.statistics["jensen_shannon"] <= 1.0
    same = entry(r, r.copy(), "c")
    assert same.statistics["psi"] == 0.0 and same.statistics["total_variation"] == 0.0
    assert same.statistics["jensen_shannon"] == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("decimals", [None, 1])
def test_merge_in_many_steps_equals_scipy(
    monkeypatch: pytest.MonkeyPatch, decimals: int | None
) -> None:
    # Steps cut at values: runs of ties (decimals=1 makes runs longer than a step) stay whole.
    monkeypatch.setattr(measures, "MERGE_STEP", 97)
    a, b = samples(7, 6000, 4500, decimals)
    got = measures.numeric_measures(a, b)
    assert got.ks == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-15)
    assert got.wasserstein == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-9)
    cvm = stats.cramervonmises_2samp(a, b)
    assert got.cramer_von_mises == pytest.approx(cvm.statistic, rel=1e-9)
    assert got.cramer_von_mises_p_value == pytest.approx(cvm.pvalue, rel=1e-6, abs=1e-12)


def test_wasserstein_is_finite_where_the_cdfs_agree_across_an_overflowing_gap() -> None:
    a = np.array([-1e308, -1e308, 1e308, 1e308])
    got = numeric_measures(a, a.copy())
    assert got.wasserstein == 0.0 and got.ks == 0.0
