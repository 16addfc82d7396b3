"""Checks of multiclass inputs: class names, probability rows, class-index labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mlops_loop.core.errors import DataError

ROW_SUM_TOLERANCE = 1e-6


def check_classes(classes: Any, name: str) -> tuple[str, ...]:
    if isinstance(classes, str) or not isinstance(classes, Sequence | np.ndarray):
        raise DataError(f"{name} must be a list of class names, got {type(classes).__name__}")
    names = tuple(classes)
    bad = [c for c in names if not isinstance(c, str) or not c]
    if bad:
        raise DataError(f"{name} must be non-empty strings, got {bad[:3]!r}")
    if len(names) < 2 or len(set(names)) != len(names):
        raise DataError(f"{name} must be at least two distinct names, got {list(names)!r}")
    return names


def check_probabilities(values: Any, k: int, name: str = "probabilities") -> np.ndarray:
    try:
        p = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name} must be numbers (an (n, {k}) array of probabilities): {e}") from e
    if p.ndim != 2 or p.shape[1] != k:
        raise DataError(f"{name} must have shape (n, {k}) (one column per class), got {p.shape}")
    bad = np.argwhere(~np.isfinite(p))
    if len(bad):
        raise DataError(
            f"{name} has {len(bad)} missing or non-finite values (first at row {bad[0][0]}, "
            f"column {bad[0][1]}); expected probabilities in [0, 1]"
        )
    out = np.argwhere((p < 0) | (p > 1))
    if len(out):
        i, j = out[0]
        raise DataError(
            f"{name} has {len(out)} values outside [0, 1] (first at row {i}, column {j}: "
            f"{float(p[i, j])!r}); expected predict_proba output, not decision scores"
        )
    off = np.flatnonzero(np.abs(p.sum(axis=1) - 1.0) > ROW_SUM_TOLERANCE)
    if len(off):
        i = int(off[0])
        raise DataError(
            f"{name} has {len(off)} rows not summing to 1 within {ROW_SUM_TOLERANCE:g} (first: "
            f"row {i} sums to {float(p[i].sum())!r}); expected one probability per class"
        )
    return p


def check_class_labels(values: Any, k: int, n: int) -> np.ndarray:
    raw = np.asarray(values)
    if raw.ndim != 1:
        raise DataError(f"labels must be one-dimensional, got shape {raw.shape}")
    if len(raw) != n:
        raise DataError(
            f"probabilities has {n} rows but labels has {len(raw)}; they must be the same rows"
        )
    try:
        y = raw.astype(float)
    except (TypeError, ValueError) as e:
        raise DataError(f"labels must be class indices 0..{k - 1}: {e}") from e
    bad = np.flatnonzero(~np.isin(y, np.arange(k)))
    if len(bad):
        value = raw[bad[0]]
        raise DataError(
            f"labels has {len(bad)} values that are not class indices 0..{k - 1} (first at "
            f"position {int(bad[0])}: {value.item() if isinstance(value, np.generic) else value!r})"
        )
    return y.astype(int)
