"""The reference side of drift, computed once per reference snapshot and reused for every batch.

A `ReferenceProfile` holds what the drift tests read from the reference: per numerical column its
finite values as sorted float64 (the Kolmogorov-Smirnov, Cramer-von Mises and Wasserstein
statistics need the exact sample, so nothing is sketched) and its summary; per categorical column
its category counts. `evaluate_drift(profile, batch)` gives exactly the report
`evaluate_drift(reference_frame, batch)` gives, without sorting or counting the reference again.

It also keeps a uniform sample of the reference's feature rows (`multivariate_max_rows` of them,
drawn as the multivariate check draws them from the frame), so the domain classifier runs
against a profile too.

On disk a profile is a folder of `.npy` files and a JSON manifest (`profile.json`) that records
the format version and the reference's content digest. `save` writes a temporary folder and
renames it into place, so a crash never leaves a half-written profile.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_loop.core.config import DriftPolicy, LoopConfig
from mlops_loop.core.drift.multivariate import RowSample
from mlops_loop.core.drift.sides import (
    SORTED_KINDS,
    SourceError,
    Unusable,
    category_counts,
    error_text,
    frame_kind,
    numeric_summary,
    series_sorted_finite,
)
from mlops_loop.core.errors import DataError

#: Name of the manifest in a saved profile's folder.
MANIFEST = "profile.json"
FORMAT = "mlops-loop-reference-profile"
#: Bumped whenever the files change meaning; `load` refuses other versions. Version 2: datetime
#: columns are held as sorted epoch seconds (kind "datetime"), no longer as category counts.
FORMAT_VERSION = 2


@dataclass(frozen=True)
class NumericalColumn:
    """A numerical column of the reference, or why it cannot be tested."""

    values: np.ndarray | None  # sorted finite float64, read-only
    summary: dict | None
    nulls: int  # missing values (None, NaN)
    non_finite: int  # infinities
    error: str | None = None


@dataclass(frozen=True)
class CategoricalColumn:
    """A categorical column of the reference: counts per label, or why it cannot be tested."""

    counts: pd.Series | None  # int64 counts indexed by label, in evaluate_drift's order
    error: str | None = None


def _needed(columns: pd.Index, kinds: dict[Any, str], config: LoopConfig | None) -> dict[Any, str]:
    """The kind `evaluate_drift` tests each reference column as, for columns it can test."""
    repeated = set(columns[columns.duplicated()])
    if config is None:
        return {k: kind for k, kind in kinds.items() if k not in repeated}
    cols = config.columns
    # A configured number that holds dates is compared in time, as evaluate_drift does.
    needed = {k: "datetime" if kinds.get(k) == "datetime" else "numerical" for k in cols.numerical}
    needed.update({k: "categorical" for k in cols.categorical})
    needed.update({k: kinds[k] for k in (cols.prediction, cols.target) if k in kinds})
    return {k: kind for k, kind in needed.items() if k in kinds and k not in repeated}


def _policy(config: LoopConfig | None) -> DriftPolicy:
    return config.drift if config is not None else DriftPolicy()


def _features(needed: dict[Any, str], config: LoopConfig | None) -> dict[Any, str]:
    """The columns of `needed` that are features (with a config, not prediction or target)."""
    if config is None:
        return needed
    features = set(config.columns.features)
    return {k: kind for k, kind in needed.items() if k in features}


def _row_sample(
    reference: pd.DataFrame, needed: dict[Any, str], config: LoopConfig | None
) -> RowSample | None:
    features = _features(needed, config)
    try:
        return RowSample.from_frame(
            reference,
            [k for k, kind in features.items() if kind in SORTED_KINDS],
            [k for k, kind in features.items() if kind == "categorical"],
            _policy(config).multivariate_max_rows,
        )
    except Exception:  # the check then reports that it had no rows; the columns still work
        return None


def _numerical(series: pd.Series, kind: str) -> NumericalColumn:
    try:
        values = series_sorted_finite(series, "reference", kind)
    except Exception as e:  # kept, so the evaluation reports it as the frame would
        return NumericalColumn(None, None, 0, 0, error_text(e))
    if values.size < len(series):  # drop the NaN and infinities the sorted view still holds
        values = values.copy()
    values.flags.writeable = False
    nulls = int(series.isna().sum())
    return NumericalColumn(
        values, numeric_summary(values), nulls, len(series) - nulls - values.size
    )


def _categorical(series: pd.Series) -> CategoricalColumn:
    try:
        return CategoricalColumn(category_counts(series, "reference"))
    except Exception as e:
        return CategoricalColumn(None, error_text(e))


class ReferenceProfile:
    """The reference's statistics, ready for `evaluate_drift` in place of the reference frame.

    Build one with `ReferenceProfile.from_frame`, keep it with `save`, get it back with `load`.
    """

    def __init__(
        self,
        *,
        columns: Iterable[Hashable],
        n_rows: int,
        kinds: dict[Any, str],
        numerical: dict[Any, NumericalColumn],
        categorical: dict[Any, CategoricalColumn],
        digest: str | None,
        rows: RowSample | None = None,
    ) -> None:
        self._columns = pd.Index(list(columns), dtype=object)
        self.rows = rows
        self.n_rows = n_rows
        self.kinds = kinds
        self.numerical = numerical
        self.categorical = categorical
        self.digest = digest

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def from_frame(
        cls, reference: pd.DataFrame, config: LoopConfig | None = None, *, digest: str | None = None
    ) -> ReferenceProfile:
        """Sort and count the reference once.

        Args:
            reference: The reference frame.
            config: With it, the profile holds the configured features (as the kind the config
                gives them) and the prediction and target columns; without it every column, as
                the kind `evaluate_drift` infers from its dtype. Evaluate with the same choice.
            digest: The reference's content digest, when already known; otherwise computed with
                `mlops_loop.core.data.frame_digest`.

        Raises:
            DataError: `reference` is not a DataFrame, or its digest cannot be computed.
        """
        from mlops_loop.core.data import frame_digest

        if not isinstance(reference, pd.DataFrame):
            raise DataError(f"reference must be a pandas DataFrame, got {type(reference).__name__}")
        if digest is None:
            try:
                digest = frame_digest(reference)
            except TypeError as e:  # unhashable cells
                raise DataError(
                    f"cannot compute the reference's content digest ({e}); pass digest="
                ) from e
        columns = reference.columns
        kinds = {k: frame_kind(reference, k) for k in dict.fromkeys(columns)}
        needed = _needed(columns, kinds, config)

        def build(item: tuple[Any, str]) -> NumericalColumn | CategoricalColumn:
            key, kind = item
            series = reference[key]
            return _numerical(series, kind) if kind in SORTED_KINDS else _categorical(series)

        # As in evaluate_drift: numpy's sorts release the GIL, so columns overlap across cores.
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            built = dict(zip(needed, pool.map(build, needed.items()), strict=True))
        return cls(
            rows=_row_sample(reference, needed, config),
            columns=columns,
            n_rows=len(reference),
            kinds=kinds,
            numerical={k: c for k, c in built.items() if isinstance(c, NumericalColumn)},
            categorical={k: c for k, c in built.items() if isinstance(c, CategoricalColumn)},
            digest=digest,
        )

    def missing(self, config: LoopConfig | None = None) -> list[str]:
        """The columns an evaluation with `config` would test that this profile cannot serve.

        Empty when the profile fits; otherwise one description per column, e.g.
        `"'age' as numerical (profile holds categorical)"`, and one for a row sample that
        lacks features or rows the multivariate check would draw.
        """
        out = []
        features = _features(_needed(self._columns, self.kinds, config), config)
        wanted = min(self.n_rows, _policy(config).multivariate_max_rows)
        sampled = self.rows.columns if self.rows is not None else []
        short = self.rows is not None and len(self.rows.rows) < wanted
        if not set(features) <= set(sampled) or short:
            out.append(
                f"a row sample of {wanted} rows of {len(features)} features for the "
                f"multivariate check (profile holds {self.rows!r})"
            )
        for key, kind in _needed(self._columns, self.kinds, config).items():
            if key not in (self.numerical if kind in SORTED_KINDS else self.categorical):
                held = (
                    "numerical"
                    if key in self.numerical
                    else "categorical"
                    if key in self.categorical
                    else "nothing"
                )
                out.append(f"{key!r} as {kind} (profile holds {held})")
        return out

    # -- the Table protocol read by evaluate_drift --------------------------------------------
    @property
    def columns(self) -> pd.Index:
        return self._columns

    def __len__(self) -> int:
        return self.n_rows

    def __repr__(self) -> str:
        return (
            f"ReferenceProfile(rows={self.n_rows}, numerical={len(self.numerical)}, "
            f"categorical={len(self.categorical)}, digest={self.digest!r})"
        )

    def inferred_kind(self, key: Any) -> str:
        return self.kinds[key]

    def sample_rows(self, columns: list[Any], n: int, seed: int) -> pd.DataFrame:
        """The multivariate check's rows, from the stored sample."""
        if self.rows is None:
            raise LookupError("the reference profile holds no row sample")
        return self.rows.sample_rows(columns, n, seed)

    def _lacking(self, key: Any, kind: str) -> SourceError:
        held = next(
            (
                k
                for k, held in (("numerical", self.numerical), ("categorical", self.categorical))
                if key in held
            ),
            "no",
        )
        if held == "numerical" and self.kinds.get(key) == "datetime":
            held = "datetime"
        return SourceError(
            f"the reference profile has no {kind} statistics of column {key!r} (it holds {held} "
            "statistics of it); rebuild it with the configuration of this evaluation"
        )

    def sorted_values(self, key: Any, side: str, kind: str = "numerical") -> np.ndarray:
        column = self.numerical.get(key)
        if column is None or (kind == "datetime") != (self.kinds.get(key) == "datetime"):
            raise self._lacking(key, kind)
        if column.values is None:
            raise Unusable(column.error)
        return column.values

    def summary(self, key: Any, values: np.ndarray) -> dict:
        return copy.deepcopy(self.numerical[key].summary or {})

    def category_counts(self, key: Any, side: str) -> pd.Series:
        column = self.categorical.get(key)
        if column is None:
            raise self._lacking(key, "categorical")
        if column.counts is None:
            raise Unusable(column.error)
        return column.counts

    # -- files ---------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the profile to the folder `directory`, replacing a profile already there.

        The files go to a temporary folder next to it, which is then renamed into place.

        Raises:
            DataError: `directory` exists and holds files other than a profile's (it is never
                replaced), or a column label is not a str, int, float or bool.
        """
        target = Path(directory)
        _refuse_foreign(target)  # early, before any work; again under the writers' lock
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        try:
            self._write(tmp)
            _swap_in(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def _write(self, folder: Path) -> None:
        numerical, categorical = [], []
        for i, (key, num) in enumerate(self.numerical.items()):
            entry: dict[str, Any] = {"column": _label(key), "error": num.error}
            if num.values is not None:
                entry.update(file=f"n{i}.values.npy", summary=num.summary)
                np.save(folder / entry["file"], np.asarray(num.values), allow_pickle=False)
            entry.update(nulls=num.nulls, non_finite=num.non_finite)
            numerical.append(entry)
        for i, (key, cat) in enumerate(self.categorical.items()):
            entry = {"column": _label(key), "error": cat.error}
            if cat.counts is not None:
                entry["file"] = f"c{i}"
                encoded = [str(v).encode("utf-8", "surrogatepass") for v in cat.counts.index]
                offsets = np.cumsum([0, *map(len, encoded)], dtype=np.int64)
                blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
                np.save(folder / f"c{i}.labels.npy", blob, allow_pickle=False)
                np.save(folder / f"c{i}.offsets.npy", offsets, allow_pickle=False)
                counts = cat.counts.to_numpy(dtype=np.int64)
                np.save(folder / f"c{i}.counts.npy", counts, allow_pickle=False)
            categorical.append(entry)
        rows = None
        if self.rows is not None:
            rows = self.rows.save(folder, "rows")
            for column in rows["columns"]:
                column["column"] = _label(column["column"])
        manifest = {
            "rows": rows,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "digest": self.digest,
            "n_rows": self.n_rows,
            "columns": [_label(k) for k in self._columns],
            "kinds": [[_label(k), kind] for k, kind in self.kinds.items()],
            "numerical": numerical,
            "categorical": categorical,
        }
        # The manifest last: a folder with a manifest has every file it names.
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = False) -> ReferenceProfile:
        """Read a profile written by `save`.

        Args:
            directory: The profile's folder.
            mmap: Map the sorted values from disk instead of reading them into memory.

        Raises:
            DataError: no profile there, another format or format version, or a damaged file
                (the message names the file).
        """
        folder = Path(directory)
        path = folder / MANIFEST
        if not path.is_file():
            raise DataError(f"no reference profile at {folder} ({MANIFEST} is missing)")
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read the reference profile manifest {path}: {e}") from e
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise DataError(f"{path} is not a reference profile (expected format {FORMAT!r})")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise DataError(
                f"the reference profile at {folder} has format version {version!r}; this version "
                f"of mlops-loop reads version {FORMAT_VERSION} only: rebuild it with "
                "ReferenceProfile.from_frame(reference).save(...)"
            )
        try:
            numerical = {
                e["column"]: _load_numerical(folder, e, mmap) for e in manifest["numerical"]
            }
            categorical = {
                e["column"]: _load_categorical(folder, e) for e in manifest["categorical"]
            }
            return cls(
                columns=manifest["columns"],
                n_rows=int(manifest["n_rows"]),
                kinds={k: str(kind) for k, kind in manifest["kinds"]},
                numerical=numerical,
                categorical=categorical,
                digest=manifest.get("digest"),
                rows=RowSample.load(folder, manifest["rows"]) if manifest.get("rows") else None,
            )
        except DataError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"the reference profile manifest {path} is damaged: {e!r}") from e


_PROFILE_FILE = re.compile(
    r"^(profile\.json|n\d+\.values\.npy|c\d+\.(labels|offsets|counts)\.npy"
    r"|rows\.\d+\.(values|labels|offsets|missing)\.npy)$"
)


def _refuse_foreign(target: Path) -> None:
    """Refuse a `target` that holds anything but profile files; an absent one is fine (so is
    one another writer's swap is moving at this instant: it is a profile)."""
    try:
        names = [p.name for p in target.iterdir()]
    except FileNotFoundError:
        return
    except NotADirectoryError:
        names = [target.name]
    if not all(_PROFILE_FILE.match(name) for name in names):
        raise DataError(
            f"refusing to write a reference profile over {target}: it exists and holds "
            "files that are not a reference profile's"
        )


def _swap_in(tmp: Path, target: Path) -> None:
    """Rename `tmp` to `target`; an existing `target` is moved aside first, then deleted.

    Writers take a lock beside the folder, so two of them (two batches rebuilding a missing
    profile at once) never interleave their renames: the last one wins.
    """
    import fcntl

    with open(target.with_name(f".{target.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            # Checked under the lock: outside it, another writer's swap may have moved the
            # profile aside for an instant, and the folder would look foreign (or absent).
            _refuse_foreign(target)
            if not target.exists():
                os.replace(tmp, target)
                return
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)  # put the previous profile back
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    shutil.rmtree(old, ignore_errors=True)


def _label(key: Any) -> str | int | float | bool:
    """A column label as JSON keeps it (types round-trip: 1 and "1" stay apart)."""
    if isinstance(key, np.generic):
        key = key.item()
    if isinstance(key, str | int | float | bool):
        return key
    raise DataError(
        f"column label {key!r} ({type(key).__name__}) cannot be saved in a reference profile; "
        "expected str, int, float or bool"
    )


def _load_array(path: Path, dtype: str, mmap: bool = False) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path} of a reference profile: {e}") from e
    if array.dtype != np.dtype(dtype) or array.ndim != 1:
        raise DataError(
            f"{path} of a reference profile holds {array.dtype} of shape {array.shape}; "
            f"expected a 1-d {dtype} array"
        )
    return array


def _load_numerical(folder: Path, entry: dict, mmap: bool) -> NumericalColumn:
    nulls, non_finite = int(entry["nulls"]), int(entry["non_finite"])
    if entry.get("file") is None:
        return NumericalColumn(None, None, nulls, non_finite, str(entry["error"]))
    path = folder / entry["file"]
    values = _load_array(path, "float64", mmap)
    summary = entry["summary"]
    # A cheap guard against a file that is not what the manifest says (every test assumes it).
    if values.size != summary["count"] or values.size == 0:
        raise DataError(f"{path} holds {values.size} values; the manifest says {summary['count']}")
    # Sorted with finite ends means all finite: a NaN anywhere fails the comparison.
    if not (math.isfinite(values[0]) and math.isfinite(values[-1])) or not bool(
        np.all(values[1:] >= values[:-1])
    ):
        raise DataError(f"{path} does not hold sorted finite values")
    values.flags.writeable = False
    return NumericalColumn(values, summary, nulls, non_finite)


def _load_categorical(folder: Path, entry: dict) -> CategoricalColumn:
    if entry.get("file") is None:
        return CategoricalColumn(None, str(entry["error"]))
    stem = entry["file"]
    blob = _load_array(folder / f"{stem}.labels.npy", "uint8").tobytes()
    offsets = _load_array(folder / f"{stem}.offsets.npy", "int64")
    counts = _load_array(folder / f"{stem}.counts.npy", "int64")
    if offsets.size != counts.size + 1 or (offsets.size and offsets[-1] != len(blob)):
        raise DataError(f"the labels and counts of {folder / stem} do not match")
    labels = [
        blob[int(a) : int(b)].decode("utf-8", "surrogatepass")
        for a, b in zip(offsets[:-1], offsets[1:], strict=True)
    ]
    return CategoricalColumn(pd.Series(counts, index=pd.Index(labels, dtype=object)))
