"""Which scikit-learn estimator a config names, checked before anything is called."""

from __future__ import annotations

import importlib
from typing import Any


def estimator_class(path: str) -> type:
    """The scikit-learn estimator class an import path names, imported but never called.

    Raises:
        ValueError: the path is not dotted, its module cannot be imported, or it names
            anything but a class deriving from `sklearn.base.BaseEstimator` with `fit`.
    """
    from sklearn.base import BaseEstimator

    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ValueError(f"estimator {path!r} is not a dotted import path")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"estimator module {module_name!r} cannot be imported: {e}") from e
    found = getattr(module, attr, None)
    if found is None:
        raise ValueError(f"estimator {path!r}: {module_name} has no callable {attr!r}")
    if not (
        isinstance(found, type)
        and issubclass(found, BaseEstimator)
        and callable(getattr(found, "fit", None))
    ):
        what = type(found).__name__ if not isinstance(found, type) else f"class {found!r}"
        raise ValueError(
            f"estimator {path!r} is a {what}, not a scikit-learn estimator: expected a class "
            "deriving from sklearn.base.BaseEstimator with a fit method (e.g. "
            "sklearn.ensemble.HistGradientBoostingClassifier)"
        )
    return found


def validate_estimator_params(cls: type, path: str, params: dict[str, Any]) -> None:
    """Check `params` with scikit-learn's own validation of `cls` (names, types, ranges).

    Raises:
        ValueError: naming `model.params.<name>`, the value and what the estimator expects.
    """
    import re

    names = sorted(cls._get_param_names())  # type: ignore[attr-defined]
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise ValueError(
            f"model.params.{unknown[0]}: {path} has no parameter {unknown[0]!r}; "
            f"expected one of {names}"
        )
    try:
        estimator = cls(**params)
        check = getattr(estimator, "_validate_params", None)
        if check is not None:
            check()
    except (TypeError, ValueError) as e:
        named = re.search(r"The '(\w+)' parameter", str(e))
        name = named.group(1) if named else None
        where = f"model.params.{name}" if name in params else "model.params"
        value = f" = {params[name]!r}" if name in params else f" {params}"
        raise ValueError(f"{where}{value} is refused by {path}: {e}") from None
