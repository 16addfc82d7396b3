"""Multivariate drift: can a classifier tell the reference from the current batch?

Per-feature tests miss shifts that only change how features move together (the marginals stay
put). A domain classifier sees the joint distribution: it is trained to separate reference rows
from current rows, and its ROC AUC on rows it was not trained on measures how separable they are
(0.5: not at all).

The rows of each side (at most `max_rows`) are split in halves: a gradient-boosted classifier
learns on one half and scores the other. On the held-out half the AUC is the Mann-Whitney U
statistic of the two sides' scores over n_ref * n_cur, and since the classifier never saw those
rows, its scores are independent of their sides when nothing changed: the Mann-Whitney test
(normal approximation with tie and continuity corrections) is then exact in its level, whatever
the classifier learnt. This is the classifier two-sample test of Lopez-Paz and Oquab (2017).
The batch drifts when the test is significant at `alpha` *and* the AUC reaches a practical
minimum (`min_auc`), so that large samples do not flag a separability nobody cares about.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from scipy import stats

from mlops_loop.core.drift.jsonable import clean
from mlops_loop.core.errors import DataError

if TYPE_CHECKING:
    from threadpoolctl import ThreadpoolController

#: Fewest rows of each side the check needs (half of them train, half are scored).
MIN_ROWS = 20
#: Most features the classifier sees; of more, a seeded uniform draw of this many.
MAX_FEATURES = 500
# Cells of the shuffled copies scored at once when measuring importances.
_IMPORTANCE_CELLS = 1 << 22
#: Most features named in `top_features`.
TOP_FEATURES = 5
#: Held-out rows the importances of `top_features` are measured on.
IMPORTANCE_ROWS = 2000
# HistGradientBoosting bins categories into at most 255 codes (the last one for the rest).
_MAX_CODES = 254
# Draws per step of `sample_positions`.
_BLOCK = 4096


@runtime_checkable
class RowSource(Protocol):
    """A side that is not a DataFrame but can hand out a uniform sample of its rows."""

    def __len__(self) -> int:
        """The number of rows."""
        ...

    def sample_rows(self, columns: list[Any], n: int, seed: int) -> pd.DataFrame:
        """At most `n` rows drawn uniformly without replacement, only `columns`: the rows at
        `sample_positions(len(self), n, seed)`, for the check to equal the frame's."""
        ...


@dataclass(frozen=True)
class MultivariateDrift:
    """The domain classifier's verdict on the features taken together."""

    method: str
    #: Held-out ROC AUC of the classifier (0.5: the sides cannot be told apart).
    auc: float | None
    #: The AUC the batch must reach to drift: the larger of the test's critical AUC at `alpha`
    #: and `min_auc`.
    threshold: float | None
    p_value: float | None
    drifted: bool
    #: Rows of each side used (sampled), held-out half included.
    n_reference: int
    n_current: int
    #: The features whose shuffling costs the most AUC on the held-out half (when drifted).
    top_features: list[dict] = field(default_factory=list)
    error: str | None = None
    alpha: float | None = None
    min_auc: float | None = None
    #: The feature columns the classifier saw.
    features: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-serialisable mapping of every field; NaN and infinities become None."""
        return {f.name: clean(getattr(self, f.name)) for f in fields(self)}


def sample_positions(n_rows: int, n: int, seed: int) -> np.ndarray:
    """`min(n, n_rows)` distinct row positions drawn uniformly, in the order drawn.

    They are the first distinct values of one seeded stream of uniform draws, so the sample of a
    larger `n` starts with the sample of a smaller one: a stored sample of the first m positions
    serves every n <= m exactly (see `RowSample`).
    """
    n = min(n, n_rows)
    rng = np.random.default_rng(seed)
    drawn = np.empty(0, dtype=np.int64)
    while drawn.size < n:
        # Fixed-size blocks, so the stream does not depend on `n`.
        drawn = pd.unique(np.concatenate([drawn, rng.integers(0, n_rows, _BLOCK)]))
    return drawn[:n]


def canonical_rows(
    frame: pd.DataFrame, numerical: list[Any], categorical: list[Any]
) -> pd.DataFrame:
    """The columns as the classifier reads them: numbers as float64 (NaN for missing, non-finite
    and non-numeric values; datetimes as epoch seconds), categories as str (None for missing),
    as the per-column test compares them (1 and "1", as after a CSV round trip, are one
    category)."""
    from mlops_loop.core.drift.dates import epoch_seconds, holds_dates

    out: dict[Any, np.ndarray] = {}
    plain: list[tuple[Any, int]] = []  # numpy number columns, converted in one block
    if frame.columns.is_unique:
        where = frame.columns.get_indexer(pd.Index(numerical, dtype=object))
        plain = [
            (k, int(i))
            for k, i in zip(numerical, where, strict=True)
            if i >= 0
            and isinstance(frame.dtypes.iloc[i], np.dtype)
            and frame.dtypes.iloc[i].kind in "biuf"
        ]
    if plain:
        block = frame.iloc[:, [i for _, i in plain]].to_numpy(dtype="float64", copy=True)
        block[~np.isfinite(block)] = np.nan
        out.update((k, block[:, j]) for j, (k, _) in enumerate(plain))
    done = {k for k, _ in plain}
    for k in numerical:
        if k in done:
            continue
        column = frame[k]
        if holds_dates(column):
            values = epoch_seconds(column, "sample", strict=False)
        else:
            values = pd.to_numeric(column, errors="coerce").to_numpy(
                dtype="float64", na_value=np.nan
            )
        out[k] = np.where(np.isfinite(values), values, np.nan)
    out = {k: out[k] for k in numerical}  # in the order asked for
    for k in categorical:
        values = frame[k].astype(object).to_numpy(dtype=object, copy=True)
        missing = pd.isna(values)
        values[~missing] = [str(v) for v in values[~missing]]
        values[missing] = None
        out[k] = values
    rows = pd.DataFrame(out, index=pd.RangeIndex(len(frame)))
    rows.columns = pd.Index(list(out), dtype=object)
    return rows


def _sample(
    side: pd.DataFrame | RowSource,
    name: str,
    numerical: list[Any],
    categorical: list[Any],
    n: int,
    seed: int,
) -> pd.DataFrame:
    keys = [*numerical, *categorical]
    picked: pd.DataFrame
    if isinstance(side, pd.DataFrame):
        # Rows first, then columns by position: no copy of whole columns of a large frame.
        positions = [side.columns.get_loc(k) for k in keys]
        picked = side.iloc[sample_positions(len(side), n, seed), positions]  # type: ignore[index,assignment]
    elif isinstance(side, RowSource):
        picked = side.sample_rows(keys, n, seed)
    else:
        raise _NoRows(f"the {name} is a {type(side).__name__}, which gives no rows to sample")
    return canonical_rows(picked, numerical, categorical)


class _NoRows(Exception):
    pass


class RowSample:
    """A stored uniform sample of a side's rows that stands in for the side (a `RowSource`).

    Built from the whole frame with the seed and row cap the check uses, it gives exactly the
    rows the frame would give, for every smaller request too, so a check against the sample
    equals the check against the frame.
    """

    def __init__(self, rows: pd.DataFrame, n_rows: int, seed: int) -> None:
        self.rows = rows  # canonical columns, in the order sampled
        self.n_rows = n_rows
        self.seed = seed

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        numerical: list[Any],
        categorical: list[Any],
        max_rows: int,
        seed: int = 0,
    ) -> RowSample:
        """Sample `max_rows` rows (all of a smaller frame) of the given columns."""
        picked = frame.iloc[sample_positions(len(frame), max_rows, seed)]
        return cls(canonical_rows(picked, numerical, categorical), len(frame), seed)

    def __len__(self) -> int:
        return self.n_rows

    def __repr__(self) -> str:
        return f"RowSample(rows={len(self.rows)} of {self.n_rows}, columns={len(self.columns)})"

    @property
    def columns(self) -> list[Any]:
        return list(self.rows.columns)

    def sample_rows(self, columns: list[Any], n: int, seed: int) -> pd.DataFrame:
        lacking = [c for c in columns if c not in self.rows.columns]
        if lacking:
            raise _NoRows(f"the stored row sample lacks columns {lacking}")
        if seed != self.seed:
            raise _NoRows(f"the stored row sample was drawn with seed {self.seed}, not {seed}")
        return self.rows.iloc[:n].loc[:, columns]

    def save(self, folder: Path, stem: str) -> dict:
        """Write one `.npy` file per numerical column and three per categorical one (UTF-8
        labels, their offsets, the missing mask) into `folder`; returns the manifest entry."""
        columns = []
        for i, key in enumerate(self.rows.columns):
            values = self.rows[key].to_numpy()
            if values.dtype == np.float64:
                np.save(folder / f"{stem}.{i}.values.npy", values, allow_pickle=False)
                columns.append({"column": key, "kind": "numerical"})
                continue
            missing = pd.isna(values)
            encoded = [
                b"" if m else str(v).encode("utf-8", "surrogatepass")
                for v, m in zip(values, missing, strict=True)
            ]
            offsets = np.cumsum([0, *map(len, encoded)], dtype=np.int64)
            blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
            np.save(folder / f"{stem}.{i}.labels.npy", blob, allow_pickle=False)
            np.save(folder / f"{stem}.{i}.offsets.npy", offsets, allow_pickle=False)
            np.save(folder / f"{stem}.{i}.missing.npy", missing, allow_pickle=False)
            columns.append({"column": key, "kind": "categorical"})
        return {"stem": stem, "n_rows": self.n_rows, "seed": self.seed, "columns": columns}

    @classmethod
    def load(cls, folder: Path, entry: dict) -> RowSample:
        """Read what `save` wrote.

        Raises:
            DataError: a file is missing or damaged (the message names it).
        """
        stem, out = entry["stem"], {}
        for i, column in enumerate(entry["columns"]):
            if column["kind"] == "numerical":
                out[column["column"]] = _load(folder / f"{stem}.{i}.values.npy", "float64")
                continue
            blob = _load(folder / f"{stem}.{i}.labels.npy", "uint8").tobytes()
            offsets = _load(folder / f"{stem}.{i}.offsets.npy", "int64")
            missing = _load(folder / f"{stem}.{i}.missing.npy", "bool")
            if offsets.size != missing.size + 1 or (offsets.size and offsets[-1] != len(blob)):
                raise DataError(f"the labels of {folder / f'{stem}.{i}'} do not match their rows")
            values = np.empty(missing.size, dtype=object)
            for j, (a, b) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
                values[j] = None if missing[j] else blob[a:b].decode("utf-8", "surrogatepass")
            out[column["column"]] = values
        sizes = {len(v) for v in out.values()}
        if len(sizes) > 1:
            raise DataError(f"the row sample's columns in {folder} differ in length: {sizes}")
        rows = pd.DataFrame(out, index=pd.RangeIndex(sizes.pop() if sizes else 0))
        rows.columns = pd.Index(list(out), dtype=object)
        return cls(rows, int(entry["n_rows"]), int(entry["seed"]))


def _load(path: Path, dtype: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path} of a row sample: {e}") from e
    if array.dtype != np.dtype(dtype) or array.ndim != 1:
        raise DataError(f"{path} holds {array.dtype} of shape {array.shape}; expected 1-d {dtype}")
    return array


def _codes(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Category codes shared by both sides (missing values: NaN), at most 255 of them.

    Codes go by frequency over both sides, ties by label, never by which side a category shows
    up in first: the classifier maps categories it did not learn by their code, so a code that
    told the side would tell the held-out rows' side too.
    """
    codes, uniques = pd.factorize(np.concatenate([ref, cur]))
    counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
    order = np.lexsort((np.asarray(uniques, dtype=str), -counts))
    rank = np.empty(len(uniques), dtype=np.int64)
    rank[order] = np.arange(len(uniques))
    # The most frequent categories keep a code of their own; the rest share the last one.
    codes = np.where(codes >= 0, np.minimum(rank[np.maximum(codes, 0)], _MAX_CODES), -1)
    out = np.where(codes >= 0, codes, np.nan).astype("float64")
    return out[: len(ref)], out[len(ref) :]


@cache
def _threadpools() -> ThreadpoolController:
    # Finding the loaded thread pools reads the process's library list: once is enough.
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _mann_whitney(scores: np.ndarray, y: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """(AUC, one-sided p-value, critical AUC at `alpha`) of scores of current (y=1) rows
    exceeding those of reference rows; normal approximation with tie and continuity
    corrections, as scipy's `mannwhitneyu(method="asymptotic")`."""
    n1 = int(y.sum())
    n0 = y.size - n1
    ranks = stats.rankdata(scores)
    u = float(ranks[y == 1].sum()) - n1 * (n1 + 1) / 2
    pairs = n0 * n1
    n = y.size
    _, ties = np.unique(scores, return_counts=True)
    variance = pairs / 12 * ((n + 1) - float((ties**3 - ties).sum()) / (n * (n - 1)))
    if variance <= 0:  # every score equal: the classifier found nothing
        return u / pairs, 1.0, 1.0
    sd = math.sqrt(variance)
    z = (u - pairs / 2 - 0.5) / sd
    critical = (pairs / 2 + 0.5 + float(stats.norm.isf(alpha)) * sd) / pairs
    return u / pairs, float(stats.norm.sf(z)), critical


def _used_features(model: Any, n_features: int) -> list[int]:
    """The features some split of the fitted gradient-boosted trees reads (all of them when
    the trees cannot be read)."""
    try:
        used: set[int] = set()
        for stage in model._predictors:
            for predictor in stage:
                nodes = predictor.nodes
                used.update(nodes["feature_idx"][~nodes["is_leaf"].astype(bool)].tolist())
        return sorted(used)
    except Exception:  # another scikit-learn layout: score every feature
        return list(range(n_features))


def _auc(scores: np.ndarray, y: np.ndarray) -> float:
    n1 = int(y.sum())
    n0 = y.size - n1
    return (float(stats.rankdata(scores)[y == 1].sum()) - n1 * (n1 + 1) / 2) / (n0 * n1)


def domain_classifier_drift(
    reference: pd.DataFrame | RowSource,
    current: pd.DataFrame | RowSource,
    numerical: list[Any],
    categorical: list[Any],
    *,
    alpha: float = 0.005,
    min_auc: float = 0.55,
    max_rows: int = 5_000,
    seed: int = 0,
) -> MultivariateDrift:
    """Held-out domain-classifier AUC with a Mann-Whitney test; see the module docstring.

    Unusable inputs that are not the caller's mistake (too few rows, no usable feature, a
    classifier failure) give a result with `error` set and `drifted` False, never an exception.

    Args:
        reference: reference rows (a DataFrame, or a `RowSource` that samples them).
        current: current rows (likewise).
        numerical: numerical feature columns (non-numbers become missing values).
        categorical: categorical feature columns (compared as strings, as the per-column test
            does; the 254 most frequent categories keep a code of their own).
        alpha: false-alarm level of the test.
        min_auc: smallest AUC that counts as drift, whatever the test says.
        max_rows: rows sampled from each side; the other side is also capped at 4 times the
            smaller one, since extra rows on one side add little power and cost time.
        seed: seed of the sampling, the split, the classifier and the importances.

    Raises:
        DataError: a named column is not in both frames, a column is named twice, or a side
            cannot be read (a `RowSource` raised it).
    """
    keys = [*numerical, *categorical]
    if len(set(keys)) != len(keys):
        raise DataError(f"a column is named more than once in {keys}")
    for name, side in (("reference", reference), ("current", current)):
        if not isinstance(side, pd.DataFrame):
            continue
        missing = [k for k in keys if k not in side.columns]
        if missing:
            raise DataError(f"columns {missing} are not in the {name}")
        repeated = [k for k in keys if not isinstance(side.columns.get_loc(k), int)]
        if repeated:
            raise DataError(f"columns {repeated} are named more than once in the {name}")

    def result(**kwargs: Any) -> MultivariateDrift:
        base: dict[str, Any] = dict(
            method="domain_classifier",
            auc=None,
            threshold=None,
            p_value=None,
            drifted=False,
            n_reference=0,
            n_current=0,
            alpha=alpha,
            min_auc=min_auc,
            features=[str(k) for k in keys],
        )
        return MultivariateDrift(**(base | kwargs))

    if not keys:
        return result(error="no usable feature column to compare jointly")
    if len(keys) > MAX_FEATURES:
        # A wide frame: the classifier's cost grows with its features, and thousands of them
        # on a few hundred rows add little power. The draw depends on the seed alone, never
        # on the rows, so the held-out test keeps its level; `features` names those drawn,
        # and the per-column tests still judge every feature.
        drawn = np.zeros(len(keys), dtype=bool)
        drawn[np.random.default_rng(seed).choice(len(keys), MAX_FEATURES, replace=False)] = True
        n_numerical = len(numerical)
        numerical = [k for k, d in zip(numerical, drawn[:n_numerical], strict=True) if d]
        categorical = [k for k, d in zip(categorical, drawn[n_numerical:], strict=True) if d]
        keys = [*numerical, *categorical]
    try:
        sizes = [len(side) for side in (reference, current)]
    except TypeError:
        sizes = [max_rows, max_rows]  # a side without a length: _sample names it below
    n_ref, n_cur = (min(max_rows, s) for s in sizes)
    n_ref, n_cur = min(n_ref, 4 * n_cur), min(n_cur, 4 * n_ref)
    try:
        ref = _sample(reference, "reference", numerical, categorical, n_ref, seed)
        cur = _sample(current, "current batch", numerical, categorical, n_cur, seed + 1)
    except DataError:  # an unreadable side: no report rather than a wrong one
        raise
    except Exception as e:  # a side that cannot give these rows
        return result(error=str(e) or type(e).__name__)
    if len(ref) < MIN_ROWS or len(cur) < MIN_ROWS:
        return result(
            n_reference=len(ref),
            n_current=len(cur),
            error=f"too few rows ({len(ref)} reference, {len(cur)} current; need {MIN_ROWS} "
            "of each)",
        )
    try:
        return _classify(ref, cur, list(numerical), list(categorical), alpha, min_auc, seed, result)
    except Exception as e:  # one odd input must not sink the drift report
        return result(n_reference=len(ref), n_current=len(cur), error=f"{type(e).__name__}: {e}")


def _classify(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    numerical: list[Any],
    categorical: list[Any],
    alpha: float,
    min_auc: float,
    seed: int,
    result: Callable[..., MultivariateDrift],
) -> MultivariateDrift:
    from sklearn.ensemble import HistGradientBoostingClassifier

    # The numbers as one block (canonical rows hold float64), the categories as shared codes.
    numbers = np.concatenate(
        [
            ref.loc[:, numerical].to_numpy(dtype="float64"),
            cur.loc[:, numerical].to_numpy(dtype="float64"),
        ]
    )
    codes = [np.concatenate(_codes(ref[k].to_numpy(), cur[k].to_numpy())) for k in categorical]
    x = np.column_stack([numbers, *codes]) if codes else numbers
    columns = range(x.shape[1])
    y = np.r_[np.zeros(len(ref), dtype=np.int64), np.ones(len(cur), dtype=np.int64)]
    # A stratified split in halves: the classifier learns on one, the test runs on the other.
    rng = np.random.default_rng(seed)
    held_out = np.zeros(y.size, dtype=bool)
    for side in (0, 1):
        rows = rng.permutation(np.flatnonzero(y == side))
        held_out[rows[: rows.size // 2]] = True
    model = HistGradientBoostingClassifier(
        max_iter=30,
        learning_rate=0.1,
        max_leaf_nodes=8,
        early_stopping=False,
        random_state=seed,
        categorical_features=[i >= len(numerical) for i in range(len(columns))],
    )
    # One OpenMP thread: on these few thousand rows the threads' start-up and spin-waiting cost
    # more than they save, and several times more on a busy machine.
    with _threadpools().limit(limits=1, user_api="openmp"):
        model.fit(x[~held_out], y[~held_out])
        x_test, y_test = x[held_out], y[held_out]
        scores = model.predict_proba(x_test)[:, 1]
        auc, p_value, critical = _mann_whitney(scores, y_test, alpha)
        drifted = p_value <= alpha and auc >= min_auc
        top = []
        if drifted:
            # Which features separate the sides: the held-out AUC lost when one is shuffled,
            # on at most IMPORTANCE_ROWS of the held-out rows; one prediction for all features.
            names = [*map(str, numerical), *map(str, categorical)]
            rows = rng.permutation(y_test.size)[:IMPORTANCE_ROWS]
            x_sub, y_sub = x_test[rows], y_test[rows]
            base = _auc(scores[rows], y_sub)
            # Every feature's permutation is drawn, in order, so the draws do not depend on
            # which features the trees use; only those are scored (shuffling a feature no
            # split reads changes no prediction: its drop is 0), a bounded block at a time.
            permutations = [rng.permutation(x_sub[:, j]) for j in range(x.shape[1])]
            drops = [0.0] * x.shape[1]
            used = _used_features(model, x.shape[1])
            step = max(1, _IMPORTANCE_CELLS // max(1, x_sub.size))
            for start in range(0, len(used), step):
                chunk = used[start : start + step]
                shuffled = np.tile(x_sub, (len(chunk), 1))
                for t, j in enumerate(chunk):
                    shuffled[t * rows.size : (t + 1) * rows.size, j] = permutations[j]
                permuted = model.predict_proba(shuffled)[:, 1].reshape(len(chunk), rows.size)
                for t, j in enumerate(chunk):
                    drops[j] = base - _auc(permuted[t], y_sub)
            order = np.argsort(-np.asarray(drops), kind="stable")[:TOP_FEATURES]
            top = [
                {"name": names[i], "auc_drop": round(float(drops[i]), 4)}
                for i in order
                if drops[i] > 0
            ]
    return result(
        auc=round(auc, 6),
        threshold=round(max(critical, min_auc), 6),
        p_value=p_value,
        drifted=bool(drifted),
        n_reference=len(ref),
        n_current=len(cur),
        top_features=top,
    )
