"""Checks of regression inputs: the feature frame's columns and the numeric vectors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mlops_loop.core.errors import DataError


def is_text(dtype: Any) -> bool:
    return (
        pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
    )


def check_inputs(
    inputs: Any, numeric: tuple[str, ...], categorical: tuple[str, ...]
) -> pd.DataFrame:
    if not isinstance(inputs, pd.DataFrame):
        raise DataError(f"inputs must be a pandas DataFrame, got {type(inputs).__name__}")
    missing = [c for c in (*numeric, *categorical) if c not in inputs.columns]
    if missing:
        raise DataError(f"inputs lacks columns {missing}: the loss models were fitted on them")
    out = {}
    for col in numeric:
        dtype = inputs[col].dtype
        if not (pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype)):
            raise DataError(f"input column {col!r} has dtype {dtype}; expected numbers (float)")
        out[col] = inputs[col].astype(float)
    for col in categorical:
        v = inputs[col]
        if not is_text(v.dtype):
            raise DataError(
                f"input column {col!r} has dtype {v.dtype}; expected categories as text"
            )
        # text, with missing values as NaN (OrdinalEncoder encodes them as missing)
        out[col] = v.astype(object).map(lambda s: np.nan if pd.isna(s) else str(s))
    return pd.DataFrame(out, index=inputs.index)


def check_values(values: Any, name: str, n: int) -> np.ndarray:
    try:
        v = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name} must be numbers: {e}") from e
    if v.ndim != 1 or len(v) != n:
        raise DataError(f"{name} must be one value per input row ({n}), got shape {v.shape}")
    bad = np.flatnonzero(~np.isfinite(v))
    if len(bad):
        raise DataError(
            f"{name} has {len(bad)} missing or non-finite values (first at position "
            f"{int(bad[0])}); expected finite numbers"
        )
    return v
