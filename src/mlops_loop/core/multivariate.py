"""Multivariate drift: can a classifier tell the reference from the current batch?

Per-feature tests miss shifts that only change how features move together (the marginals stay
put). A domain classifier sees the joint distribution: it is trained to separate reference rows
from current rows, and its out-of-fold ROC AUC measures how separable they are (0.5: not at all).

The threshold is calibrated by permutation: the domain labels are shuffled over the fixed
out-of-fold scores many times, which gives the distribution of the AUC when nothing changed
(each row's score never depended on its own label). The batch drifts when the observed AUC
exceeds the (1 - alpha) quantile of that distribution *and* reaches a practical minimum
(`min_auc`), so that huge batches do not flag a separability nobody cares about.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from mlops_loop.core.errors import DataError


@dataclass(frozen=True)
class MultivariateDrift:
    """The domain classifier's verdict."""

    method: str
    auc: float | None
    threshold: float | None
    p_value: float | None
    drifted: bool
    n_reference: int
    n_current: int
    top_features: list[dict] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _matrix(frame: pd.DataFrame, numerical: list[str], categorical: list[str]) -> np.ndarray:
    cols = []
    for c in numerical:
        values = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float)
        cols.append(np.where(np.isfinite(values), values, np.nan))
    for c in categorical:
        codes, _ = pd.factorize(frame[c].astype("object").astype(str), sort=True)
        cols.append(codes.astype(float))
    return np.column_stack(cols) if cols else np.empty((len(frame), 0))


def _auc_from_ranks(ranks: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of fixed scores (given as ranks) for one or many label vectors (rows)."""
    labels = np.atleast_2d(labels)
    n1 = labels.sum(axis=1)
    n0 = labels.shape[1] - n1
    rank_sum = labels @ ranks
    return (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0)


def domain_classifier_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    *,
    alpha: float = 0.01,
    min_auc: float = 0.55,
    max_rows: int = 20_000,
    permutations: int = 1000,
    seed: int = 0,
) -> MultivariateDrift:
    """Out-of-fold domain-classifier AUC with a permutation-calibrated threshold.

    Args:
        reference: reference rows.
        current: current rows.
        numerical: numerical feature columns.
        categorical: categorical feature columns (encoded as codes; trees split them fine).
        alpha: false-alarm level of the permutation test.
        min_auc: smallest AUC that counts as drift, whatever the test says.
        max_rows: rows sampled from each side (the test's power saturates long before).
        permutations: label permutations for the null distribution.
        seed: seed of sampling, folds and permutations.

    Raises:
        DataError: no feature column is present in both frames.
    """
    from scipy.stats import rankdata
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.inspection import permutation_importance
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    numerical = [c for c in numerical if c in reference.columns and c in current.columns]
    categorical = [c for c in categorical if c in reference.columns and c in current.columns]
    if not numerical and not categorical:
        raise DataError("no feature column is in both frames: nothing to compare jointly")
    rng = np.random.default_rng(seed)
    ref = reference.sample(min(len(reference), max_rows), random_state=seed)
    cur = current.sample(min(len(current), max_rows), random_state=seed + 1)
    if len(ref) < 20 or len(cur) < 20:
        return MultivariateDrift(
            "domain_classifier",
            None,
            None,
            None,
            False,
            len(ref),
            len(cur),
            error=f"too few rows ({len(ref)} vs {len(cur)}; need 20 each)",
        )
    both = pd.concat([ref, cur], ignore_index=True)
    x = _matrix(both, numerical, categorical)
    y = np.r_[np.zeros(len(ref), int), np.ones(len(cur), int)]
    model = HistGradientBoostingClassifier(
        max_iter=60,
        learning_rate=0.1,
        max_leaf_nodes=15,
        random_state=seed,
        categorical_features=[len(numerical) + i for i in range(len(categorical))] or None,
    )
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
    ranks = rankdata(scores)
    auc = float(_auc_from_ranks(ranks, y)[0])
    null = _auc_from_ranks(ranks, np.array([rng.permutation(y) for _ in range(permutations)]))
    threshold = float(np.quantile(null, 1 - alpha))
    p_value = float((1 + np.sum(null >= auc)) / (permutations + 1))
    drifted = auc > threshold and auc >= min_auc
    top = []
    if drifted:
        # Which features separate the two: the AUC lost when each one is shuffled.
        fitted = model.fit(x, y)
        names = [*numerical, *categorical]
        imp = permutation_importance(
            fitted, x, y, scoring="roc_auc", n_repeats=3, random_state=seed
        ).importances_mean
        order = np.argsort(-imp)[:5]
        top = [{"name": names[i], "auc_drop": round(float(imp[i]), 4)} for i in order if imp[i] > 0]
    return MultivariateDrift(
        "domain_classifier",
        round(auc, 6),
        round(threshold, 6),
        None if math.isnan(p_value) else round(p_value, 6),
        bool(drifted),
        len(ref),
        len(cur),
        top,
    )
