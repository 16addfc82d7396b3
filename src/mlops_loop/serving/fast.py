"""The loop's own preprocessing, applied to a request's checked arrays without pandas.

`core.training.build_estimator` wraps an estimator in `Pipeline([("prep",
ColumnTransformer([("num", SimpleImputer(strategy="median"), ...), ("cat",
OneHotEncoder(handle_unknown="ignore", sparse_output=False), ...)])), ("model", estimator)])`.
On a few rows that pipeline spends about 4 ms of its 5 in the column transformer's own
indexing and checks, not in arithmetic. For exactly that fitted shape, `fast_model` gives a
stand-in that does the same arithmetic on the arrays (medians into missing numbers, one
column per known category) and hands the estimator the very matrix the pipeline would; any
other model, or a fitted state it does not reproduce exactly (a column the imputer dropped,
infrequent categories, pandas output), is scored by the pipeline itself.
`tests/serving/test_fast.py` proves the scores equal, bit for bit, per task.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import numpy as np

from mlops_loop.core.config import ColumnsConfig
from mlops_loop.core.training import MISSING_CATEGORY
from mlops_loop.serving.request import Features

_CACHE: weakref.WeakKeyDictionary[Any, FastModel | None] = weakref.WeakKeyDictionary()


class Rows:
    """A request's arrays, as `scores_of_inputs` sees its inputs (it takes their length)."""

    def __init__(self, features: Features) -> None:
        self.features = features

    def __len__(self) -> int:
        return self.features.rows


class FastModel:
    """The fitted pipeline's preprocessing on arrays, then its own estimator."""

    def __init__(
        self,
        estimator: Any,
        numerical: list[str],
        medians: np.ndarray,
        categorical: list[str],
        categories: list[dict[str, int]],
    ) -> None:
        self.estimator = estimator
        self.numerical = numerical
        self.medians = medians
        self.categorical = categorical
        self.categories = categories
        self.width = len(numerical) + sum(len(c) for c in categories)
        if hasattr(estimator, "classes_"):
            self.classes_ = estimator.classes_
        if hasattr(estimator, "predict_proba"):
            self.predict_proba = self._predict_proba

    def matrix(self, rows: Rows) -> np.ndarray:
        """What `ColumnTransformer.transform` gives for these rows."""
        arrays, n = rows.features.arrays, rows.features.rows
        out = np.zeros((n, self.width), dtype=np.float64)
        k = len(self.numerical)
        if k:
            block = np.column_stack([arrays[c] for c in self.numerical]).astype(np.float64)
            missing = np.isnan(block)
            if missing.any():
                block = np.where(missing, self.medians, block)
            out[:, :k] = block
        start = k
        for name, index in zip(self.categorical, self.categories, strict=True):
            for i, v in enumerate(arrays[name]):
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    v = MISSING_CATEGORY
                j = index.get(v if isinstance(v, str) else str(v))
                if j is not None:
                    out[i, start + j] = 1.0
            start += len(index)
        return out

    def predict(self, rows: Rows) -> Any:
        return self.estimator.predict(self.matrix(rows))

    def _predict_proba(self, rows: Rows) -> Any:
        return self.estimator.predict_proba(self.matrix(rows))


def fast_model(model: Any, columns: ColumnsConfig) -> FastModel | None:
    """The stand-in for `model` (cached per model object), or None when it is not the loop's
    standard pipeline in a state the stand-in reproduces exactly."""
    try:
        return _CACHE[model]
    except (KeyError, TypeError):
        pass
    fast = _build(model, columns)
    try:
        _CACHE[model] = fast
    except TypeError:
        pass  # not weakly referenceable: built again next time (it is cheap)
    return fast


def _build(model: Any, columns: ColumnsConfig) -> FastModel | None:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    if type(model) is not Pipeline or [n for n, _ in model.steps] != ["prep", "model"]:
        return None
    prep, estimator = model.steps[0][1], model.steps[1][1]
    if type(prep) is not ColumnTransformer or prep.remainder != "drop":
        return None
    if getattr(prep, "_sklearn_output_config", {}).get("transform") not in (None, "default"):
        return None
    if hasattr(estimator, "feature_names_in_"):
        return None
    fitted = [(n, t, list(c)) for n, t, c in prep.transformers_ if n != "remainder"]
    names = [n for n, _, _ in fitted]
    if names not in (["num", "cat"], ["num"], ["cat"]):
        return None
    numerical: list[str] = []
    medians = np.zeros(0)
    categorical: list[str] = []
    categories: list[dict[str, int]] = []
    for name, transformer, cols in fitted:
        if name == "num":
            ok = (
                type(transformer) is SimpleImputer
                and transformer.strategy == "median"
                and not transformer.add_indicator
                and len(transformer.statistics_) == len(cols)
                and not np.isnan(transformer.statistics_).any()  # no column dropped
                and cols == list(columns.numerical)
            )
            if not ok:
                return None
            numerical, medians = cols, np.asarray(transformer.statistics_, dtype=np.float64)
        else:
            ok = (
                type(transformer) is OneHotEncoder
                and transformer.handle_unknown == "ignore"
                and transformer.drop is None
                and transformer.min_frequency is None
                and transformer.max_categories is None
                and not transformer.sparse_output
                and transformer.dtype in (np.float64, float)
                and cols == list(columns.categorical)
                and all(
                    c.dtype == object and all(isinstance(v, str) for v in c)
                    for c in transformer.categories_
                )
            )
            if not ok:
                return None
            categorical = cols
            categories = [{v: j for j, v in enumerate(c)} for c in transformer.categories_]
    fast = FastModel(estimator, numerical, medians, categorical, categories)
    out = prep.output_indices_
    expected = len(numerical) + sum(len(c) for c in categories)
    if sum(s.stop - s.start for s in out.values()) != expected:
        return None
    return fast
