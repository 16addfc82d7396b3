"""Tests of the calibrated drift evaluation: golden values against scipy, error rates, output."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from mlops_loop.core.config import DriftPolicy, parse_config
from mlops_loop.core.drift import (
    MAX_CATEGORIES,
    NULL_LABEL,
    SCHEMA_VERSION,
    DriftReport,
    FeatureDrift,
    evaluate_drift,
)
from mlops_loop.core.errors import DataError

CATEGORIES = np.array(["a", "b", "c", "d"])


def numeric_frame(
    rng: np.random.Generator, n: int, n_features: int = 5, shift: dict[int, float] | None = None
) -> pd.DataFrame:
    shift = shift or {}
    return pd.DataFrame({f"x{i}": rng.normal(shift.get(i, 0.0), 1.0, n) for i in range(n_features)})


def mixed_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    frame = numeric_frame(rng, n)
    frame["cat"] = rng.choice(CATEGORIES, size=n, p=[0.4, 0.3, 0.2, 0.1])
    frame["flag"] = rng.random(n) < 0.3
    return frame


def entry(report: DriftReport, name: str) -> FeatureDrift:
    return next(f for f in report.features if f.name == name)


def config(**columns: object):
    cols = {
        "numerical": ["x0", "x1"],
        "categorical": ["cat"],
        "target": "y",
        "prediction": "score",
        "id": "row_id",
        **columns,
    }
    return parse_config(
        {"columns": cols, "sources": {"reference": "ref.parquet", "landing": "landing"}}
    )


# ---------------------------------------------------------------- golden values vs scipy


@pytest.mark.parametrize("n_ref, n_cur", [(300, 500), (20_000, 1_000)])
def test_ks_statistic_and_p_value_equal_scipy_on_finite_values(n_ref: int, n_cur: int) -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(0.0, 1.0, n_ref)
    cur = rng.normal(0.1, 1.2, n_cur)
    cur[:7] = [np.nan, np.inf, -np.inf, np.nan, np.nan, np.inf, np.nan]
    report = evaluate_drift(pd.DataFrame({"x": ref}), pd.DataFrame({"x": cur}))

    expected = stats.ks_2samp(ref, cur[np.isfinite(cur)])
    x = entry(report, "x")
    assert (x.kind, x.method, x.role, x.error) == ("numerical", "ks", "feature", None)
    assert x.statistic == pytest.approx(expected.statistic, abs=1e-15)
    assert x.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    assert x.effect_size == x.statistic
    assert x.current_summary["count"] == n_cur - 7
    assert len(x.reference_summary["quantiles"]) == 11
    assert x.reference_summary["quantiles"][5] == pytest.approx(np.median(ref))


def test_chi_square_and_total_variation_equal_scipy() -> None:
    rng = np.random.default_rng(2)
    ref = rng.choice(CATEGORIES, 3000, p=[0.4, 0.3, 0.2, 0.1])
    cur = rng.choice(CATEGORIES, 1000, p=[0.3, 0.3, 0.2, 0.2])
    report = evaluate_drift(pd.DataFrame({"c": ref}), pd.DataFrame({"c": cur}))

    table = np.array(
        [[np.sum(ref == k) for k in CATEGORIES], [np.sum(cur == k) for k in CATEGORIES]]
    )
    expected = stats.chi2_contingency(table)
    p, q = table[0] / table[0].sum(), table[1] / table[1].sum()
    c = entry(report, "c")
    assert (c.kind, c.method) == ("categorical", "chi_square")
    assert c.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert c.p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
    assert c.effect_size == pytest.approx(0.5 * np.abs(p - q).sum())
    assert c.reference_summary == pytest.approx(dict(zip(CATEGORIES, p, strict=True)))
    assert c.drifted


def test_identical_samples_show_no_drift_and_zero_effect() -> None:
    frame = mixed_frame(np.random.default_rng(3), 2000)
    report = evaluate_drift(frame, frame.copy())
    assert not report.dataset_drift
    assert report.drift_share == 0.0 and report.max_effect == 0.0
    for f in report.features:
        assert f.error is None
        assert f.effect_size == 0.0 and f.p_value == pytest.approx(1.0) and not f.drifted
    assert entry(report, "flag").kind == "numerical"  # bools are numbers
    # Without a config every column is a feature, in the joint check too.
    assert sorted(report.multivariate.features) == sorted(frame.columns)
    assert not report.multivariate.drifted and report.triggered_by == []
    assert entry(report, "cat").kind == "categorical"


@pytest.mark.filterwarnings("ignore:ks_2samp:RuntimeWarning")  # scipy's own exact->asymp switch
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ref=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=60),
    cur=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=60),
    cats=st.lists(st.sampled_from(["u", "v", "w", None]), min_size=2, max_size=60),
)
def test_p_values_and_effects_lie_in_the_unit_interval(
    ref: list[float], cur: list[float], cats: list[str | None]
) -> None:
    half = len(cats) // 2
    report = evaluate_drift(
        pd.DataFrame(
            {
                "x": pd.Series(ref, dtype="float64"),
                "c": pd.Series(cats[:half] or [None]).reindex(range(len(ref))),
            }
        ),
        pd.DataFrame(
            {
                "x": pd.Series(cur, dtype="float64"),
                "c": pd.Series(cats[half:]).reindex(range(len(cur))),
            }
        ),
    )
    json.dumps(report.to_dict(), allow_nan=False)
    for f in report.features:
        if f.error is None:
            assert 0.0 <= f.p_value <= 1.0
            assert 0.0 <= f.effect_size <= 1.0
        else:
            assert f.p_value is None and not f.drifted


# ---------------------------------------------------------------- detection and error rates


def test_one_sd_mean_shift_in_one_of_five_features_is_detected() -> None:
    rng = np.random.default_rng(4)
    report = evaluate_drift(numeric_frame(rng, 2000), numeric_frame(rng, 2000, shift={2: 1.0}))
    assert report.dataset_drift
    assert report.drifted_features == ["x2"]
    assert report.features[0].name == "x2"  # the largest effect comes first
    assert report.drift_share == pytest.approx(1 / 5)
    assert report.max_effect == report.features[0].effect_size > 0.3
    assert report.rule.startswith("1 of 5 features drifted")


# False-alarm rates and power of the dataset decision: tests/core/test_drift_calibration.py.


def test_tiny_shift_in_a_huge_batch_is_significant_but_not_drift() -> None:
    rng = np.random.default_rng(5)
    n = 200_000
    report = evaluate_drift(
        pd.DataFrame({"x": rng.normal(0, 1, n)}), pd.DataFrame({"x": rng.normal(0.01, 1, n)})
    )
    x = entry(report, "x")
    assert x.effect_size < 0.02
    assert not x.drifted and not report.dataset_drift


def test_decision_is_bh_rejection_and_effect_threshold() -> None:
    rng = np.random.default_rng(6)
    shifts = {0: 0.05, 1: 0.15, 2: 0.25, 3: 0.35, 4: 0.5}
    policy = DriftPolicy(numerical_effect=0.08, fdr=0.01)
    report = evaluate_drift(
        numeric_frame(rng, 1500), numeric_frame(rng, 1500, shift=shifts), policy=policy
    )
    names = [f.name for f in report.features]
    adjusted = stats.false_discovery_control([f.p_value for f in report.features])
    for f, q in zip(report.features, adjusted, strict=True):
        assert f.drifted == bool(q <= 0.01 and f.effect_size >= 0.08), f.name
    assert names == sorted(names, key=lambda n: -entry(report, n).effect_size)
    assert 0 < len(report.drifted_features) < 5


def test_min_drifted_features_governs_the_feature_rule() -> None:
    rng = np.random.default_rng(7)
    ref, cur = numeric_frame(rng, 2000), numeric_frame(rng, 2000, shift={0: 1.0})
    features_only = DriftPolicy(min_drifted_features=2, multivariate=False)
    assert not evaluate_drift(ref, cur, policy=features_only).dataset_drift
    one = evaluate_drift(ref, cur, policy=DriftPolicy(min_drifted_features=1))
    assert one.dataset_drift and one.triggered_by == ["features", "multivariate"]
    # One drifted feature is not enough for the feature rule, but the classifier sees it too.
    two = evaluate_drift(ref, cur, policy=DriftPolicy(min_drifted_features=2))
    assert two.dataset_drift and two.triggered_by == ["multivariate"]
    assert two.drifted_features == ["x0"]


def test_effect_exactly_at_the_threshold_counts() -> None:
    # |0.6 - 0.5| is 0.09999999999999998 in floating point; the rule must still fire.
    ref = pd.DataFrame({"c": ["a"] * 6000 + ["b"] * 4000})
    cur = pd.DataFrame({"c": ["a"] * 5000 + ["b"] * 5000})
    c = entry(evaluate_drift(ref, cur), "c")
    assert c.effect_size == pytest.approx(0.1) and c.drifted


# ---------------------------------------------------------------- categorical cases


def test_categorical_shift_is_detected_by_total_variation() -> None:
    rng = np.random.default_rng(8)
    ref = pd.DataFrame(
        {"c": pd.Series(rng.choice(CATEGORIES, 5000, p=[0.4, 0.3, 0.2, 0.1]), dtype="str")}
    )
    cur = pd.DataFrame(
        {"c": pd.Series(rng.choice(CATEGORIES, 5000, p=[0.2, 0.3, 0.2, 0.3]), dtype="str")}
    )
    c = entry(evaluate_drift(ref, cur), "c")
    assert c.effect_size == pytest.approx(0.2, abs=0.03)  # (|.4-.2| + |.1-.3|) / 2
    assert c.drifted and c.threshold == 0.1


def test_unseen_category_and_nulls_are_categories() -> None:
    ref = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 40 + [None] * 10})
    cur = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 20 + ["new"] * 30})
    c = entry(evaluate_drift(ref, cur), "c")
    assert c.error is None
    assert c.current_summary["new"] == pytest.approx(0.3)
    assert c.reference_summary["new"] == 0.0
    assert c.reference_summary[NULL_LABEL] == pytest.approx(0.1)
    # |.5-.5| + |.4-.2| + |.1-0| + |0-.3| = .6, halved
    assert c.effect_size == pytest.approx(0.3)
    expected = stats.chi2_contingency([[50, 40, 10, 0], [50, 20, 0, 30]])
    assert c.statistic == pytest.approx(expected.statistic)
    assert c.drifted


def test_mixed_type_object_column_is_compared_as_strings() -> None:
    ref = pd.DataFrame({"c": pd.Series([1, "1", 2.5, "x", None, [1, 2]] * 20, dtype=object)})
    cur = pd.DataFrame({"c": pd.Series(["1", 1, "2.5", "x", np.nan, "[1, 2]"] * 20, dtype=object)})
    c = entry(evaluate_drift(ref, cur), "c")
    assert c.error is None and c.kind == "categorical"
    assert c.effect_size == pytest.approx(0.0)
    assert set(c.reference_summary) == {"1", "2.5", "x", NULL_LABEL, "[1, 2]"}


def test_rare_categories_are_pooled_into_other_before_the_test() -> None:
    ref = pd.DataFrame({"c": ["a"] * 600 + ["b"] * 380 + ["x"] * 12 + ["y"] * 8})
    cur = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 45 + ["x"] * 3 + ["z"] * 2})
    c = entry(evaluate_drift(ref, cur), "c")
    # Expected counts of x, y and z in the batch are below 5: x and y, which the reference
    # holds, form one bucket, and z, new to it, another.
    expected = stats.chi2_contingency([[600, 380, 20, 0], [50, 45, 3, 2]])
    assert c.statistic == pytest.approx(expected.statistic)
    assert c.p_value == pytest.approx(expected.pvalue)
    assert c.effect_size == pytest.approx(0.1)  # (.1 + .07 + .01 + .02) / 2
    assert c.current_summary["z"] == pytest.approx(0.02)  # summaries stay unpooled


def test_high_cardinality_column_is_capped_and_calibrated() -> None:
    rng = np.random.default_rng(9)
    n = 200_000
    ref = pd.DataFrame({"id": rng.integers(0, 100_000, n).astype(str)})
    cur = pd.DataFrame({"id": rng.integers(0, 100_000, n).astype(str)})
    c = entry(evaluate_drift(ref, cur), "id")
    assert c.error is None and not c.drifted
    assert len(c.reference_summary) <= 20
    assert 0.0 <= c.p_value <= 1.0 and c.effect_size < 0.05
    # 2000 well-filled categories: the cap binds, leaving 1000 + 1 buckets (1000 degrees of
    # freedom).
    ref = pd.DataFrame({"k": rng.integers(0, 2000, 100_000).astype(str)})
    cur = pd.DataFrame({"k": rng.integers(0, 2000, 100_000).astype(str)})
    k = entry(evaluate_drift(ref, cur), "k")
    assert k.p_value == pytest.approx(stats.chi2.sf(k.statistic, MAX_CATEGORIES))


def test_sparse_categories_in_small_batches_do_not_raise_false_alarms() -> None:
    rng = np.random.default_rng(17)
    weights = rng.pareto(1.0, 3000) + 1
    weights /= weights.sum()
    reference = pd.DataFrame({"c": rng.choice(3000, 20_000, p=weights).astype(str)})
    alarms = sum(
        evaluate_drift(
            reference, pd.DataFrame({"c": rng.choice(3000, 100, p=weights).astype(str)})
        ).dataset_drift
        for _ in range(20)
    )
    assert alarms <= 2


# ---------------------------------------------------------------- bad columns and inputs


def test_constant_column_is_not_drifted() -> None:
    frame = pd.DataFrame({"k": np.full(500, 3.0), "x": np.arange(500.0)})
    k = entry(evaluate_drift(frame, frame.iloc[:200]), "k")
    assert (k.statistic, k.p_value, k.drifted) == (0.0, 1.0, False)


def test_all_null_column_has_an_error_and_the_report_is_still_built() -> None:
    rng = np.random.default_rng(10)
    ref = numeric_frame(rng, 500)
    cur = numeric_frame(rng, 500, shift={0: 2.0})
    ref["empty"] = np.nan
    cur["empty"] = np.nan
    cur["cat_empty"] = ref["cat_empty"] = pd.Series([None] * 500, dtype=object)
    report = evaluate_drift(ref, cur)
    for name in ("empty", "cat_empty"):
        e = entry(report, name)
        assert e.error.startswith("all values are null")
        assert not e.drifted and e.p_value is None and e.effect_size is None
    assert report.features[-1].error is not None  # unevaluated entries sort last
    assert report.dataset_drift and report.drifted_features == ["x0"]
    assert "2 feature(s) could not be evaluated" in report.rule


def test_missing_columns_have_an_error_and_do_not_count() -> None:
    rng = np.random.default_rng(11)
    ref = numeric_frame(rng, 300)
    cur = numeric_frame(rng, 300).drop(columns="x1").assign(extra=1.0)
    report = evaluate_drift(ref, cur)
    assert "missing in the current" in entry(report, "x1").error
    assert "missing in the reference" in entry(report, "extra").error
    assert report.rule.startswith("0 of 4 features")
    assert not entry(report, "x1").drifted


def test_a_bad_column_does_not_break_the_report() -> None:
    rng = np.random.default_rng(12)
    ref = numeric_frame(rng, 200).assign(x1=["oops"] * 200, cat="a")
    cur = numeric_frame(rng, 200).assign(cat="a")
    report = evaluate_drift(ref, cur, config=config())
    assert "oops" in entry(report, "x1").error  # configured numerical but holds text
    assert entry(report, "x0").error is None


def test_duplicated_column_name_gets_one_error_entry() -> None:
    frame = pd.DataFrame([[1.0, 2.0, 3.0]] * 10, columns=["a", "a", "b"])
    report = evaluate_drift(frame, frame)
    assert [f.name for f in report.features] == ["b", "a"]
    assert entry(report, "a").error == "column name is not unique"


def test_unusable_inputs_raise_data_error() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0]})
    with pytest.raises(DataError, match="DataFrame"):
        evaluate_drift(frame, {"a": [1.0]})  # type: ignore[arg-type]
    with pytest.raises(DataError, match="no feature column"):
        evaluate_drift(frame, pd.DataFrame({"b": [1.0]}))


# ---------------------------------------------------------------- configuration


def test_config_sets_roles_and_kinds_and_ignores_other_columns() -> None:
    rng = np.random.default_rng(13)

    def frame(score_shift: float) -> pd.DataFrame:
        n = 2000
        return pd.DataFrame(
            {
                "row_id": np.arange(n),
                "x0": rng.normal(0, 1, n),
                "x1": rng.integers(0, 5, n),
                "cat": rng.choice(CATEGORIES, n),
                "y": rng.integers(0, 2, n),
                "score": np.clip(rng.normal(0.5 + score_shift, 0.1, n), 0, 1),
                "noise": rng.random(n),
            }
        )

    report = evaluate_drift(frame(0.0), frame(0.3), config=config())
    roles = {f.name: (f.role, f.kind) for f in report.features}
    assert roles == {
        "x0": ("feature", "numerical"),
        "x1": ("feature", "numerical"),
        "cat": ("feature", "categorical"),
        "score": ("prediction", "numerical"),
        "y": ("target", "numerical"),
    }
    assert [f.role for f in report.features][-2:] == ["prediction", "target"]
    assert entry(report, "score").drifted  # judged alone, never counted as feature drift
    assert not report.dataset_drift and report.drift_share == 0.0
    # The joint check sees the features only, never the score, target or id.
    assert report.multivariate.features == ["x0", "x1", "cat"]


def test_config_policy_applies_unless_overridden_and_absent_roles_are_skipped() -> None:
    rng = np.random.default_rng(14)
    ref = numeric_frame(rng, 1000).assign(cat=rng.choice(CATEGORIES, 1000), y=0)
    cur = numeric_frame(rng, 1000, shift={0: 0.3}).assign(cat=rng.choice(CATEGORIES, 1000))
    strict = config(numerical=["x0"]).model_copy(
        update={"drift": DriftPolicy(numerical_effect=0.5)}
    )
    assert not evaluate_drift(ref, cur, config=strict).dataset_drift
    report = evaluate_drift(ref, cur, config=strict, policy=DriftPolicy())
    assert report.drifted_features == ["x0"]
    assert {f.name for f in report.features} == {"x0", "cat"}  # y only in ref, no score


# ---------------------------------------------------------------- outputs


def test_to_dict_is_json_serialisable_without_nan() -> None:
    rng = np.random.default_rng(15)
    ref = mixed_frame(rng, 500).assign(huge=1e308, gone=np.nan)
    cur = mixed_frame(rng, 500).assign(huge=-1e308, gone=np.nan)
    data = json.loads(json.dumps(evaluate_drift(ref, cur).to_dict(), allow_nan=False))
    assert data["schema_version"] == SCHEMA_VERSION == "2"
    assert set(data) == {
        "schema_version",
        "dataset_drift",
        "triggered_by",
        "multivariate",
        "drift_share",
        "rule",
        "n_reference",
        "n_current",
        "features",
    }
    assert set(data["features"][0]) == {
        "name",
        "kind",
        "role",
        "method",
        "statistic",
        "p_value",
        "effect_size",
        "threshold",
        "drifted",
        "error",
        "reference_summary",
        "current_summary",
        "statistics",
    }
    huge = next(f for f in data["features"] if f["name"] == "huge")
    assert huge["drifted"] and huge["current_summary"]["min"] == -1e308
    assert huge["current_summary"]["mean"] is None  # the sum overflows to -inf


def test_to_html_is_self_contained_small_and_names_every_feature() -> None:
    rng = np.random.default_rng(16)
    n = 1000
    ref = {f"num_{i}": rng.normal(0, 1, n) for i in range(80)}
    ref |= {f"cat_{i}<&>": rng.choice([f"v{j}" for j in range(30)], n) for i in range(20)}
    cur = {k: (v + 0.5 if k == "num_3" else rng.permutation(v)) for k, v in ref.items()}
    report = evaluate_drift(pd.DataFrame(ref), pd.DataFrame(cur))
    page = report.to_html()
    assert len(page.encode()) < 2_000_000
    assert page.count("<svg") == 100
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert page.index("Dataset drift detected") < page.index('<section id="c0">')
    for name in ref:
        assert name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in page
    markdown = report.to_markdown()
    assert markdown.startswith("**Dataset drift: yes**") and "| num_3 |" in markdown
