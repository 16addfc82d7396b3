"""The endpoint's array path through the loop's own pipeline (`serving/fast.py`) hands the
estimator exactly the matrix the pipeline would, so the scores are the pipeline's, bit for bit;
anything else is scored by the pipeline itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from mlops_loop.core.config import ColumnsConfig
from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.training import scores_of_inputs
from mlops_loop.serving.fast import FastModel, Rows, fast_model
from mlops_loop.serving.request import Features
from mlops_loop.serving.scoring import model_frame, score


def _features(frame: pd.DataFrame, columns: ColumnsConfig) -> Features:
    arrays = {}
    for c in columns.numerical:
        arrays[c] = frame[c].to_numpy(dtype=float, na_value=np.nan)
    for c in columns.categorical:
        values = np.empty(len(frame), dtype=object)
        values[:] = [None if pd.isna(v) else str(v) for v in frame[c]]
        arrays[c] = values
    return Features(arrays, len(frame), [])


def _messy(frame: pd.DataFrame, columns: ColumnsConfig) -> pd.DataFrame:
    """Missing numbers and categories, and a category the model never saw."""
    rng = np.random.default_rng(7)
    out = frame[columns.features].copy().astype(object).reset_index(drop=True)
    for c in columns.features:
        out.loc[rng.random(len(out)) < 0.15, c] = None
    out.loc[rng.random(len(out)) < 0.1, columns.categorical[0]] = "never-seen"
    return out


@pytest.fixture(scope="module")
def champion(champion_loop):
    registry = MlflowRegistry.from_config(champion_loop)
    return registry.load(registry.champion())


def test_the_matrix_is_the_column_transformers_and_the_scores_the_pipelines(
    champion, champion_loop, demo_frames
):
    columns = champion_loop.columns
    rows = _messy(demo_frames[1]["batch_003"].head(400), columns)
    features = _features(rows, columns)
    fast = fast_model(champion, columns)
    assert isinstance(fast, FastModel)
    expected = champion.named_steps["prep"].transform(model_frame(features, columns))
    assert np.array_equal(fast.matrix(Rows(features)), expected)
    through_pipeline = scores_of_inputs(champion, model_frame(features, columns), columns)
    assert np.array_equal(score(champion, features, columns), through_pipeline)
    assert np.isnan(expected).sum() == 0 and (expected[:, 5:].sum(axis=1) < 3).any()


def _pipeline(imputer: SimpleImputer, encoder: OneHotEncoder) -> tuple[Pipeline, ColumnsConfig]:
    columns = ColumnsConfig(numerical=["x", "z"], categorical=["c"], target="y")
    frame = pd.DataFrame(
        {"x": [1.0, 2.0, np.nan, 4.0] * 5, "z": [np.nan] * 20, "c": list("abca") * 5}
    )
    prep = ColumnTransformer([("num", imputer, ["x", "z"]), ("cat", encoder, ["c"])])
    model = Pipeline([("prep", prep), ("model", LogisticRegression())])
    model.fit(frame, [0, 1] * 10)
    return model, columns


@pytest.mark.filterwarnings("ignore:Skipping features without any observed values")
def test_what_it_cannot_reproduce_is_scored_by_the_pipeline():
    # The imputer drops "z", which has no median: that fitted state is not reproduced.
    model, columns = _pipeline(
        SimpleImputer(strategy="median"),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False),
    )
    assert fast_model(model, columns) is None
    kept, columns = _pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False),
    )
    assert fast_model(kept, columns) is not None
    frame = pd.DataFrame({"x": [np.nan, 3.0], "z": [1.0, np.nan], "c": ["b", "zz"]})
    features = _features(frame, columns)
    assert np.array_equal(
        score(kept, features, columns),
        scores_of_inputs(kept, model_frame(features, columns), columns),
    )
    assert fast_model(LogisticRegression(), columns) is None  # no preprocessing of ours
    sparse, columns = _pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        OneHotEncoder(handle_unknown="ignore"),
    )
    assert fast_model(sparse, columns) is None  # a sparse matrix: another form
