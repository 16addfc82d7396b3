"""What kind of supervised model the loop maintains: its task, its classes and its metrics.

A loop's task is `binary`, `multiclass` or `regression` (`columns.task`). When the config does
not say, it is inferred from the reference's target when the config is loaded
(`infer_task`); classifiers also fix their class list there (`columns.classes`, the reference's
labels in sorted order unless given; for a binary task the last one is the positive class).

What the rest of the core calls "scores" depends on the task:

- binary: one float per row, the probability of the positive class;
- multiclass: an (n, k) array of probabilities, one column per class in `columns.classes`;
- regression: one float per row, the predicted value.

and "labels" (`encode_labels`): 0/1 for binary, class indices for multiclass, floats for
regression.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[Task, ...] = ("binary", "multiclass", "regression")

BINARY_METRICS = ("roc_auc", "accuracy", "f1", "recall", "precision", "brier", "log_loss")
MULTICLASS_METRICS = ("accuracy", "f1_macro", "f1_weighted", "log_loss", "roc_auc_ovr", "brier")
REGRESSION_METRICS = ("rmse", "mae", "r2", "mape", "median_ae")
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary": BINARY_METRICS,
    "multiclass": MULTICLASS_METRICS,
    "regression": REGRESSION_METRICS,
}
ALL_METRICS = tuple(dict.fromkeys((*BINARY_METRICS, *MULTICLASS_METRICS, *REGRESSION_METRICS)))
#: Metrics where a smaller value is better (an RMSE rise is a drop in performance).
LOWER_IS_BETTER = frozenset({"brier", "log_loss", "rmse", "mae", "mape", "median_ae"})
#: Metrics in the target's own units: `retrain.metric_drop` is a share of their baseline.
SCALED_METRICS = frozenset({"rmse", "mae", "median_ae"})
#: `retrain.metric_drop` when the primary metric is one of them and none is given: 25% worse
#: (benchmarks/regression_drop.py: stable and covariate batches up to 17%, a changed concept
#: at least 65%).
SCALED_METRIC_DROP = 0.25
#: The primary metric of a task when `promotion.metric` is not given.
PRIMARY: dict[str, str] = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "rmse"}
#: Guards (metric: how much worse than the champion's it may be) when none are given. The
#: errors of a regression are in the target's own units: no default can fit every scale.
DEFAULT_GUARDS: dict[str, dict[str, float]] = {
    "binary": {"brier": 0.02, "recall": 0.05},
    "multiclass": {"log_loss": 0.05},
    "regression": {},
}
#: Integer targets with more distinct values than this are neither plainly classes nor plainly
#: quantities: the task must be given.
MAX_INFERRED_CLASSES = 10
#: Text or boolean targets with more labels than this are refused as classes.
MAX_CLASSES = 100

Label = str | int | float | bool


def metric_task(name: str) -> list[str]:
    """The tasks metric `name` belongs to (per-class `recall_<c>`/`precision_<c>` are
    multiclass)."""
    tasks = [t for t, names in TASK_METRICS.items() if name in names]
    if not tasks and name.startswith(("recall_", "precision_")):
        tasks = ["multiclass"]
    return tasks


def fits_task(name: str, task: str) -> bool:
    return task in metric_task(name)


def check_metric(name: str, task: str, where: str, per_class: bool = False) -> None:
    """Refuse a metric that does not fit the task, naming where it was asked for. Per-class
    metrics (`recall_<class>`, `precision_<class>` of a multiclass task) are reported in each
    batch's record, so alert rules may use them (`per_class`); promotion compares the task's
    own metrics.

    Raises:
        ValueError: the metric is unknown or belongs to another task.
    """
    if name in TASK_METRICS[task] or (per_class and fits_task(name, task)):
        return
    tasks = metric_task(name)
    known = ", ".join(TASK_METRICS[task])
    if tasks:
        raise ValueError(
            f"{where}: {name!r} is a {' and '.join(tasks)} metric, but the task is {task}; "
            f"expected one of {known}"
        )
    raise ValueError(f"{where}: unknown metric {name!r} for a {task} task; expected one of {known}")


def plain_label(value: Any) -> Label:
    """A label as JSON keeps it: bool, int (for integral numbers), float or str."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return int(f) if f.is_integer() else f
    return str(value)


def infer_task(values: Any, column: str) -> tuple[Task, list[Label] | None, str]:
    """The task a reference target implies: `(task, classes or None, why)`.

    Two distinct labels are binary; text or booleans with three or more are multiclass; numbers
    with a fractional part and more than `MAX_INFERRED_CLASSES` distinct values are regression;
    integers with 3 to `MAX_INFERRED_CLASSES` distinct values are multiclass.

    Raises:
        ValueError: naming the column, when the target has fewer than two distinct values or
            is ambiguous (integers with many distinct values, a few fractional ones).
    """
    import pandas as pd

    s = pd.Series(values).dropna()
    distinct = s.unique()
    n = len(distinct)
    if n < 2:
        shown = f" (only {plain_label(distinct[0])!r})" if n else ""
        raise ValueError(
            f"columns.target {column!r} has {n} distinct value(s) in the reference{shown}: "
            "a model needs at least two labels or a range of values to learn"
        )
    numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
    if not numeric:
        labels = sorted_labels(distinct)
        if n == 2:
            return "binary", labels, f"two labels {labels} in {column!r}"
        if n > MAX_CLASSES:
            raise ValueError(
                f"columns.target {column!r} has {n} distinct text labels in the reference "
                f"(more than {MAX_CLASSES}): set columns.task, or map the labels to fewer "
                "classes"
            )
        return "multiclass", labels, f"{n} labels in {column!r}"
    numbers = s.to_numpy(dtype=float)
    integral = bool(np.all(np.isfinite(numbers)) and np.all(numbers == np.round(numbers)))
    if n == 2:
        labels = sorted(plain_label(v) for v in distinct)
        return "binary", labels, f"two values {labels} in {column!r}"
    if integral and n <= MAX_INFERRED_CLASSES:
        labels = sorted(plain_label(v) for v in distinct)
        return "multiclass", labels, f"{n} integer labels {labels} in {column!r}"
    is_float = pd.api.types.is_float_dtype(s)
    if is_float and n > MAX_INFERRED_CLASSES:
        return "regression", None, f"float values, {n:,} distinct, in {column!r}"
    kind = "integer" if integral else "number"
    raise ValueError(
        f"columns.target {column!r} is ambiguous: {n:,} distinct {kind} values in the "
        f"reference ({s.dtype}); set columns.task: regression for a quantity, or multiclass "
        "for class codes"
    )


def sorted_labels(values: Any) -> list[Label]:
    """The distinct labels of `values` (missing left out), as JSON keeps them, in order."""
    import pandas as pd

    return sorted({plain_label(v) for v in pd.Series(values).dropna().unique()}, key=_label_key)


def _label_key(label: Label) -> tuple[int, Any]:
    # bool before numbers before text; each in its own order.
    if isinstance(label, bool):
        return (0, label)
    if isinstance(label, int | float):
        return (1, label)
    return (2, str(label))


def encode_labels(values: Any, column: str, task: str, classes: Sequence[Label] | None) -> Any:
    """Labels as the metrics take them: 0/1 (binary, the last class positive), class indices
    (multiclass) or floats (regression), as a numpy array.

    Raises:
        DataError: a missing label, a non-number for a regression, or a label that is none of
            the classes (naming the column and the values).
    """
    import pandas as pd

    from mlops_loop.core.errors import DataError

    s = pd.Series(values)
    if s.isna().any():
        raise DataError(
            f"target column {column!r} has {int(s.isna().sum())} missing labels; drop "
            "unlabelled rows first"
        )
    if task == "regression":
        y = pd.to_numeric(s, errors="coerce")
        if y.isna().any():
            bad = s[y.isna()].unique()[:5].tolist()
            raise DataError(f"target column {column!r} must be numeric; found {bad}")
        out = y.to_numpy(dtype=float)
        if not np.all(np.isfinite(out)):
            raise DataError(f"target column {column!r} has infinite values")
        return out
    if not classes:
        raise DataError(f"target column {column!r}: the class list is not known")
    codes = class_codes(s, classes)
    unknown = codes < 0
    if unknown.any():
        bad = sorted({plain_label(v) for v in s[unknown].unique()[:5]}, key=_label_key)
        raise DataError(
            f"target column {column!r} has {int(unknown.sum())} labels that are none of the "
            f"classes {list(classes)}: {bad}"
        )
    return codes


def class_codes(values: Any, classes: Sequence[Label]) -> np.ndarray:
    """The index of each value in `classes`, -1 for a value none of them is. Numbers match
    numerically (1 and 1.0 are one class), text by its string."""
    import pandas as pd

    s = pd.Series(values)
    if all(isinstance(c, bool) for c in classes):
        mapping: dict[Any, int] = {c: i for i, c in enumerate(classes)}
        return np.asarray([mapping.get(_as_bool(v), -1) for v in s], dtype=int)
    if all(isinstance(c, int | float) and not isinstance(c, bool) for c in classes):
        numbers = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)
        out = np.full(len(s), -1, dtype=int)
        for i, c in enumerate(classes):
            out[numbers == float(c)] = i
        return out
    text = s.astype(str).to_numpy()
    mapping = {str(c): i for i, c in enumerate(classes)}
    return np.asarray([mapping.get(v, -1) for v in text], dtype=int)


def _as_bool(value: Any) -> Any:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str) and value in ("True", "False"):
        return value == "True"  # a boolean label stored as text
    return value


def training_labels(codes: np.ndarray, task: str, classes: Sequence[Label] | None) -> Any:
    """The labels a classifier is fit on: the original class values (so that the registered
    model predicts "high", not 2); regression values as they are."""
    if task == "regression" or not classes:
        return codes
    values = np.empty(len(codes), dtype=object)
    values[:] = [classes[i] for i in codes]
    if all(isinstance(c, bool) for c in classes):
        return values.astype(bool)
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return values.astype(int)
    if all(isinstance(c, int | float) and not isinstance(c, bool) for c in classes):
        return values.astype(float)
    return values.astype(str)


def probability_columns(prediction: str, classes: Sequence[Label]) -> list[str]:
    """The scored batch's probability columns of a multiclass model, one per class."""
    return [f"{prediction}_{c}" for c in classes]


def numeric_labels(task: str, classes: Sequence[Label] | None) -> bool:
    """Whether the task's labels are kept as numbers (a regression, or classes that are all
    numbers) rather than as text (text or boolean classes)."""
    if task == "regression" or not classes:
        return True
    return all(isinstance(c, int | float) and not isinstance(c, bool) for c in classes)


def stored_labels(values: Any, task: str, classes: Sequence[Label] | None) -> Any:
    """Labels as the loop stores them apart from their batch (late labels): floats when
    `numeric_labels`, else text (missing stays missing). Values that are not numbers where
    numbers are expected become missing; `label_problems` says which."""
    import pandas as pd

    s = pd.Series(values)
    if numeric_labels(task, classes):
        return pd.to_numeric(s, errors="coerce").astype("float64")
    return s.astype(object).where(s.isna(), s.astype(str))


def label_problems(
    values: Any, task: str, classes: Sequence[Label] | None, column: str
) -> str | None:
    """Why some of these labels cannot be used (not numbers, or none of the classes), naming
    the column and a few of the values; None when all can."""
    import pandas as pd

    s = pd.Series(values)
    known = s[s.notna()]
    if task == "regression":
        bad = known[pd.to_numeric(known, errors="coerce").isna()]
        what = "numbers"
    else:
        if not classes:
            return None
        bad = known[class_codes(known, classes) < 0]
        what = f"one of the classes {list(classes)}"
    if not len(bad):
        return None
    shown = [plain_label(v) for v in pd.unique(bad)[:5]]
    return f"target column {column!r} must hold {what}; found {shown}"
