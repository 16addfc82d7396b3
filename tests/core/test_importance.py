"""Permutation importance as shares, and the share of it that drifted features carry."""

import numpy as np
import pandas as pd
import pytest

from mlops_loop.core.config import ColumnsConfig, ModelSpec
from mlops_loop.core.importance import drifted_share, permutation_importance
from mlops_loop.core.training import train_model

COLUMNS = ColumnsConfig(numerical=["signal", "noise"], categorical=["tag"], target="y")


def _frame(rng, n):
    signal = rng.normal(size=n)
    return pd.DataFrame(
        {
            "signal": signal,
            "noise": rng.normal(size=n),
            "tag": rng.choice(["a", "b"], n),
            "y": (signal + 0.3 * rng.normal(size=n) > 0).astype(int),
        }
    )


def test_the_feature_the_label_depends_on_carries_the_importance():
    rng = np.random.default_rng(0)
    spec = ModelSpec(estimator="sklearn.linear_model.LogisticRegression", params={"max_iter": 200})
    model = train_model(_frame(rng, 600), spec, COLUMNS)
    shares = permutation_importance(model, _frame(rng, 400), COLUMNS, "roc_auc", seed=0)
    assert shares is not None and set(shares) == {"signal", "noise", "tag"}
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-5)
    assert shares["signal"] > 0.95 and all(v >= 0 for v in shares.values())
    assert drifted_share(shares, ["noise", "tag", "noise"]) < 0.05
    assert drifted_share(shares, ["signal"]) == shares["signal"]
    assert drifted_share(None, ["signal"]) is None


def test_rows_of_one_class_have_no_importance():
    rng = np.random.default_rng(1)
    spec = ModelSpec(estimator="sklearn.linear_model.LogisticRegression")
    model = train_model(_frame(rng, 300), spec, COLUMNS)
    one_class = _frame(rng, 100).assign(y=1)
    assert permutation_importance(model, one_class, COLUMNS, "roc_auc") is None
