"""Per-column method overrides in `DriftPolicy.methods` and their thresholds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mlops_loop.core.config import DriftPolicy, parse_config
from mlops_loop.core.drift import DriftReport, FeatureDrift, evaluate_drift
from mlops_loop.core.errors import InvalidConfigError


def entry(report: DriftReport, name: str) -> FeatureDrift:
    return next(f for f in report.features if f.name == name)


def frames(shift: float = 0.3, n: int = 3000) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(21)
    cats = np.array(["a", "b", "c"])
    ref = pd.DataFrame(
        {
            "x": rng.normal(0, 1, n),
            "z": rng.normal(0, 1, n),
            "c": rng.choice(cats, n, p=[0.5, 0.3, 0.2]),
        }
    )
    cur = pd.DataFrame(
        {
            "x": rng.normal(shift, 1, n),
            "z": rng.normal(0, 1, n),
            "c": rng.choice(cats, n, p=[0.4, 0.3, 0.3]),
        }
    )
    return ref, cur


def test_defaults_leave_the_decision_unchanged() -> None:
    policy = DriftPolicy()
    assert policy.methods == {}
    assert (policy.psi_threshold, policy.jensen_shannon_threshold) == (0.2, 0.1)
    assert policy.wasserstein_threshold == 0.1
    report = evaluate_drift(*frames())
    assert {f.name: f.method for f in report.features} == {
        "x": "ks",
        "z": "ks",
        "c": "chi_square",
    }
    assert "overrides" not in report.rule


def test_psi_override_decides_by_the_psi_threshold_outside_the_fdr_family() -> None:
    ref, cur = frames()
    base = evaluate_drift(ref, cur)
    value = entry(base, "x").statistics["psi"]
    assert 0.05 < value < 0.5

    low = evaluate_drift(ref, cur, policy=DriftPolicy(methods={"x": "psi"}, psi_threshold=value))
    x = entry(low, "x")
    assert (x.method, x.statistic, x.effect_size, x.p_value) == ("psi", value, value, None)
    assert x.threshold == value and x.drifted
    assert x.statistics == entry(base, "x").statistics
    assert "x: psi >= " in low.rule and "without FDR" in low.rule
    assert low.rule.startswith(f"{len(low.drifted_features)} of 3 features drifted")

    high = evaluate_drift(
        ref, cur, policy=DriftPolicy(methods={"x": "psi"}, psi_threshold=value * 1.01)
    )
    assert not entry(high, "x").drifted

    # The BH family is now z and c only: their adjusted p-values leave out x.
    tested = [f for f in high.features if f.p_value is not None]
    assert {f.name for f in tested} == {"z", "c"}
    adjusted = stats.false_discovery_control([f.p_value for f in tested])
    for f, q in zip(tested, adjusted, strict=True):
        assert f.drifted == bool(q <= 0.05 and f.effect_size + 1e-12 >= f.threshold)


@pytest.mark.parametrize(
    "column, method, key, threshold_field",
    [
        ("x", "wasserstein", "wasserstein_norm", "wasserstein_threshold"),
        ("x", "jensen_shannon", "jensen_shannon", "jensen_shannon_threshold"),
        ("c", "jensen_shannon", "jensen_shannon", "jensen_shannon_threshold"),
        ("c", "psi", "psi", "psi_threshold"),
    ],
)
def test_threshold_methods_follow_their_threshold(
    column: str, method: str, key: str, threshold_field: str
) -> None:
    ref, cur = frames()
    value = entry(evaluate_drift(ref, cur), column).statistics[key]
    assert value is not None
    for factor, drifted in ((0.99, True), (1.01, False)):
        policy = DriftPolicy.model_validate(
            {"methods": {column: method}, threshold_field: value * factor}
        )
        e = entry(evaluate_drift(ref, cur, policy=policy), column)
        assert (e.method, e.statistic, e.p_value) == (method, value, None)
        assert e.threshold == pytest.approx(value * factor) and e.drifted is drifted


def test_cramer_von_mises_override_uses_its_p_value_in_bh_and_the_ks_effect() -> None:
    ref, cur = frames()
    report = evaluate_drift(ref, cur, policy=DriftPolicy(methods={"x": "cramer_von_mises"}))
    x = entry(report, "x")
    expected = stats.cramervonmises_2samp(ref["x"], cur["x"])
    assert x.method == "cramer_von_mises"
    assert x.statistic == pytest.approx(expected.statistic, rel=1e-9)
    assert x.p_value == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-12)
    assert x.effect_size == x.statistics["ks"] and x.threshold == 0.1
    assert x.drifted and report.dataset_drift


def test_a_method_for_the_wrong_kind_is_an_entry_error() -> None:
    ref, cur = frames()
    report = evaluate_drift(ref, cur, policy=DriftPolicy(methods={"c": "ks", "x": "chi_square"}))
    assert entry(report, "c").error == "method 'ks' does not apply to a categorical column"
    assert "does not apply to a numerical column" in (entry(report, "x").error or "")
    assert not entry(report, "c").drifted
    assert "2 feature(s) could not be evaluated" in report.rule


def test_methods_are_validated_in_the_config() -> None:
    data = {
        "columns": {"numerical": ["x"], "target": "y"},
        "sources": {"reference": "ref.parquet", "landing": "landing"},
        "drift": {"methods": {"x": "wasserstein"}, "wasserstein_threshold": 0.3},
    }
    config = parse_config(data)
    assert config.drift.methods == {"x": "wasserstein"}
    assert config.drift.wasserstein_threshold == 0.3
    data["drift"] = {"methods": {"x": "t_test"}}
    with pytest.raises(InvalidConfigError, match="methods"):
        parse_config(data)


def test_overrides_for_absent_columns_are_named_in_the_rule() -> None:
    report = evaluate_drift(*frames(), policy=DriftPolicy(methods={"nope": "psi"}))
    assert report.rule.endswith("; overrides for absent columns ignored: nope")
    assert {f.method for f in report.features} == {"ks", "chi_square"}
