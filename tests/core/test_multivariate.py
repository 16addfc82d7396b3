"""The domain classifier catches joint shifts that per-feature tests cannot see."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mlops_loop.core.config import DriftPolicy
from mlops_loop.core.drift import SCHEMA_VERSION, evaluate_drift
from mlops_loop.core.drift.multivariate import _mann_whitney, domain_classifier_drift
from mlops_loop.core.errors import DataError

FEATURES = (["a", "b", "noise"], ["c"])


def correlated(n: int, rho: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = rho * a + np.sqrt(1 - rho**2) * rng.normal(size=n)
    return pd.DataFrame(
        {"a": a, "b": b, "noise": rng.normal(size=n), "c": rng.choice(["x", "y", "z"], n)}
    )


def test_auc_and_p_value_equal_sklearn_and_scipy_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    scores = np.round(rng.normal(size=500) + 0.3 * y, 1)  # many ties
    auc, p_value, critical = _mann_whitney(scores, y, alpha=0.01)
    expected = stats.mannwhitneyu(
        scores[y == 1], scores[y == 0], alternative="greater", method="asymptotic"
    )
    assert auc == pytest.approx(roc_auc_score(y, scores), rel=1e-12)
    assert p_value == pytest.approx(expected.pvalue, rel=1e-9)
    # The critical AUC is where the same test gives p = alpha.
    n1, n0 = int(y.sum()), int((1 - y).sum())
    sd = (auc * n0 * n1 - n0 * n1 / 2 - 0.5) / stats.norm.isf(p_value)
    assert stats.norm.sf((critical * n0 * n1 - n0 * n1 / 2 - 0.5) / sd) == pytest.approx(0.01)


def test_constant_scores_give_no_drift():
    assert _mann_whitney(np.zeros(50), np.r_[np.zeros(25), np.ones(25)].astype(int), 0.01)[1] == 1


def test_a_joint_shift_with_unchanged_marginals_is_caught():
    ref, cur = correlated(4000, 0.8, 1), correlated(4000, -0.8, 2)
    result = domain_classifier_drift(ref, cur, *FEATURES)
    assert result.drifted and result.auc > 0.7 and result.p_value < 1e-6
    assert result.auc >= result.threshold >= 0.55
    assert {t["name"] for t in result.top_features[:2]} == {"a", "b"}
    assert (result.n_reference, result.n_current) == (4000, 4000)


def test_the_report_says_multivariate_fired_when_no_single_feature_drifts():
    ref, cur = correlated(4000, 0.8, 1), correlated(4000, -0.8, 2)
    report = evaluate_drift(ref, cur)
    assert report.drifted_features == [] and report.drift_share == 0.0
    assert report.dataset_drift and report.triggered_by == ["multivariate"]
    assert report.multivariate is not None and report.multivariate.drifted
    assert report.multivariate.features == ["a", "b", "noise", "c"]
    assert "dataset drift fired by: multivariate" in report.rule
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["schema_version"] == SCHEMA_VERSION == "2"
    assert data["triggered_by"] == ["multivariate"]
    mv = data["multivariate"]
    assert mv["drifted"] is True and mv["auc"] > 0.7 and mv["error"] is None
    assert {"auc", "threshold", "p_value", "n_reference", "n_current", "top_features"} <= set(mv)
    assert report.to_markdown().startswith("**Dataset drift: yes** (fired by multivariate)")
    assert "Multivariate (domain classifier): **drifted**" in report.to_markdown()
    page = report.to_html()
    assert '<section id="multivariate">' in page and "fired by multivariate" in page

    # Turned off, the same batch passes: only the features decide.
    off = evaluate_drift(ref, cur, policy=DriftPolicy(multivariate=False))
    assert not off.dataset_drift and off.multivariate is None and off.triggered_by == []
    assert off.to_dict()["multivariate"] is None and "multivariate check off" in off.rule


def test_the_same_joint_distribution_does_not_drift():
    report = evaluate_drift(correlated(4000, 0.8, 3), correlated(4000, 0.8, 4))
    assert not report.dataset_drift and report.triggered_by == []
    mv = report.multivariate
    assert mv is not None and mv.error is None and not mv.drifted
    assert abs(mv.auc - 0.5) < 0.03 and mv.top_features == []
    assert "dataset drift fired by: none" in report.rule


def test_the_test_has_its_stated_level():
    # Held-out scores are independent of the side when nothing changed, so the Mann-Whitney
    # test rejects at its nominal rate: at alpha 0.2 (and no AUC minimum) about 12 of 60.
    alarms = sum(
        domain_classifier_drift(
            correlated(150, 0.5, 10 + s),
            correlated(150, 0.5, 1000 + s),
            ["a", "b"],
            [],
            alpha=0.2,
            min_auc=0.5 + 1e-9,
            seed=s,
        ).drifted
        for s in range(60)
    )
    # Binomial(60, 0.2): 99.9% of the mass lies in [3, 23].
    assert 3 <= alarms <= 23


def test_rows_are_sampled_up_to_max_rows_and_four_times_the_other_side():
    ref = correlated(30_000, 0.5, 5)
    result = domain_classifier_drift(ref, correlated(30_000, 0.5, 6), *FEATURES, max_rows=1000)
    assert (result.n_reference, result.n_current) == (1000, 1000)
    result = domain_classifier_drift(ref, correlated(100, 0.5, 7), *FEATURES)
    assert (result.n_reference, result.n_current) == (400, 100) and result.error is None


def test_awkward_inputs_give_an_error_or_a_result_never_an_exception():
    rng = np.random.default_rng(8)
    many = [f"k{i}" for i in range(600)]  # more categories than the classifier's 255 codes
    frame = pd.DataFrame(
        {
            "many": rng.choice(many, 2000),
            "mixed": pd.Series(rng.choice([1, "1", None, 2.5], 2000), dtype=object),
            "lists": pd.Series([[1, 2], None, "x", [3]] * 500, dtype=object),
        }
    )
    shifted = frame.assign(many=rng.choice(many[:300], 2000))
    result = domain_classifier_drift(frame, shifted, [], ["many", "mixed", "lists"])
    assert result.error is None and result.drifted
    assert result.top_features[0]["name"] == "many"

    one_column = evaluate_drift(frame[["many"]], frame[["many"]].sample(frac=1, random_state=1))
    assert one_column.multivariate.error is None and not one_column.dataset_drift

    tiny = evaluate_drift(correlated(500, 0.5, 9), correlated(5, 0.5, 10))
    assert tiny.multivariate.error == "too few rows (20 reference, 5 current; need 20 of each)"
    assert not tiny.multivariate.drifted and "multivariate check not run: too few" in tiny.rule
    assert "not run" in tiny.to_markdown() and "Not evaluated: too few rows" in tiny.to_html()

    empty = pd.DataFrame({"x": [np.nan] * 50})
    report = evaluate_drift(empty, empty)  # no feature can be tested, so none reaches the check
    assert report.multivariate.error == "no usable feature column to compare jointly"
    json.dumps(report.to_dict(), allow_nan=False)


def test_sides_without_rows_or_with_bad_columns():
    class Sampler:
        def __init__(self, frame: pd.DataFrame) -> None:
            self.frame = frame

        def __len__(self) -> int:
            return len(self.frame)

        def sample_rows(self, columns: list, n: int, seed: int) -> pd.DataFrame:
            return self.frame.loc[:, columns].sample(min(n, len(self.frame)), random_state=seed)

    ref, cur = correlated(3000, 0.8, 11), correlated(3000, -0.8, 12)
    assert domain_classifier_drift(Sampler(ref), cur, *FEATURES).drifted
    result = domain_classifier_drift(ref, object(), *FEATURES)  # type: ignore[arg-type]
    assert result.error is not None and "object, which gives no rows" in result.error
    with pytest.raises(DataError, match=r"columns \['nope'\] are not in the reference"):
        domain_classifier_drift(ref, cur, ["a", "nope"], [])
    twice = pd.concat([ref, ref[["a"]]], axis=1)
    with pytest.raises(DataError, match=r"columns \['a'\] are named more than once"):
        domain_classifier_drift(twice, cur, ["a"], [])


def test_profiles_and_parquet_batches_give_the_frames_rows(tmp_path):
    from mlops_loop.core.drift import evaluate_drift_parquet
    from mlops_loop.core.drift.profile import ReferenceProfile

    ref, cur = correlated(3000, 0.8, 13), correlated(2000, -0.8, 14)
    cur.to_parquet(tmp_path / "batch.parquet")
    expected = evaluate_drift(ref, cur).to_dict()
    assert expected["multivariate"]["drifted"] and expected["triggered_by"] == ["multivariate"]
    profile = ReferenceProfile.from_frame(ref, digest="d")
    assert profile.missing() == [] and len(profile.rows.rows) == 3000  # type: ignore[union-attr]
    loaded = ReferenceProfile.load(profile.save(tmp_path / "profile"))
    assert evaluate_drift(loaded, cur).to_dict() == expected
    assert evaluate_drift_parquet(loaded, tmp_path / "batch.parquet").to_dict() == expected

    # A profile saved before it kept rows: the store sees it lacks them and rebuilds it; used
    # anyway, the check reports why it did not run.
    profile.rows = None
    assert profile.missing() == [
        "a row sample of 3000 rows of 4 features for the multivariate check (profile holds None)"
    ]
    report = evaluate_drift(profile, cur)
    assert report.multivariate.error == "the reference profile holds no row sample"
    assert not report.dataset_drift and report.triggered_by == []
