"""The domain classifier catches joint shifts that per-feature tests cannot see."""

import numpy as np
import pandas as pd
import pytest

from mlops_loop.core.multivariate import _auc_from_ranks, domain_classifier_drift


def correlated(n: int, rho: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = rho * a + np.sqrt(1 - rho**2) * rng.normal(size=n)
    return pd.DataFrame(
        {"a": a, "b": b, "noise": rng.normal(size=n), "c": rng.choice(["x", "y", "z"], n)}
    )


def test_rank_auc_matches_sklearn():
    from scipy.stats import rankdata
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = rng.normal(size=500) + y
    assert _auc_from_ranks(rankdata(s), y)[0] == pytest.approx(roc_auc_score(y, s))


def test_a_joint_shift_with_unchanged_marginals_is_caught():
    from mlops_loop.core.drift import evaluate_drift

    ref, cur = correlated(4000, 0.8, 1), correlated(4000, -0.8, 2)
    # Each feature alone looks the same ...
    assert not evaluate_drift(ref, cur).dataset_drift
    # ... but together they do not.
    result = domain_classifier_drift(ref, cur, ["a", "b", "noise"], ["c"])
    assert result.drifted and result.auc > 0.7 and result.p_value < 0.01
    assert {t["name"] for t in result.top_features[:2]} == {"a", "b"}


def test_no_false_alarm_on_the_same_distribution():
    alarms = sum(
        domain_classifier_drift(
            correlated(2000, 0.5, 10 + s),
            correlated(2000, 0.5, 100 + s),
            ["a", "b", "noise"],
            ["c"],
            seed=s,
        ).drifted
        for s in range(10)
    )
    assert alarms <= 1


def test_too_few_rows_is_reported_not_raised():
    result = domain_classifier_drift(correlated(10, 0.5, 1), correlated(10, 0.5, 2), ["a"], [])
    assert not result.drifted and "too few rows" in result.error
