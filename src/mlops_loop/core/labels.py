"""Late labels: label files that land apart from the batches they belong to.

A label file holds the id column, the target column and, optionally, the time each label
became known (`columns.label_time`; the file's modification time otherwise). Every label file
is read once (again if it is re-delivered) into one table of known labels, where a later
arrival for the same id corrects an earlier one. Past scored batches are joined to that table
by id, so their realized performance can be measured again as labels arrive; monitoring never
waits for them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_loop.core.config import ColumnsConfig, LoopConfig
from mlops_loop.core.data import read_table
from mlops_loop.core.errors import DataError
from mlops_loop.core.store import LoopStore, file_stamp
from mlops_loop.core.tasks import label_problems, stored_labels

ARRIVED = "_label_arrived_at"
SOURCE = "_label_file"


@dataclass(frozen=True)
class LabelIngest:
    """What one pass over the labels folder found."""

    files: list[str] = field(default_factory=list)  # files read this time
    rows: int = 0  # label rows in those files
    new_labels: int = 0  # ids that had no label before
    corrected_labels: int = 0  # ids whose label changed
    affected: list[str] = field(default_factory=list)  # batches with new or changed labels
    problems: list[str] = field(default_factory=list)  # files skipped, and why
    known_labels: int = 0  # labels known in all, after this pass

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _labels_path(store: LoopStore) -> Path:
    return store.root / "labels" / "labels.parquet"


def _files_path(store: LoopStore) -> Path:
    return store.root / "labels" / "files.json"


def pending_label_files(config: LoopConfig) -> dict[str, Path]:
    """Label files that are new or changed since they were last read, by name."""
    folder = config.sources.labels
    if folder is None or not Path(folder).is_dir():
        return {}
    seen = LoopStore(config.state_dir).read_json(_files_path(LoopStore(config.state_dir))) or {}
    found = {
        p.name: p
        for pattern in config.sources.patterns
        for p in sorted(Path(folder).glob(pattern))
        if p.is_file() and not p.name.startswith(".")
    }
    return {name: p for name, p in sorted(found.items()) if seen.get(name) != file_stamp(p)}


def known_labels(config: LoopConfig, as_of: datetime | None = None) -> pd.DataFrame:
    """The latest label of every id known (at `as_of`, if given): id, target, arrival, file."""
    store = LoopStore(config.state_dir)
    path = _labels_path(store)
    cols = config.columns
    if not path.exists():
        return pd.DataFrame(
            {
                cols.id or "id": pd.Series(dtype=object),
                cols.target: pd.Series(dtype="float64"),
                ARRIVED: pd.Series(dtype="datetime64[ns, UTC]"),
                SOURCE: pd.Series(dtype=object),
            }
        )
    table = pd.read_parquet(path)
    if as_of is not None:
        table = table[table[ARRIVED] <= pd.Timestamp(as_of)]
    # Every version of a label is kept, so what was known at any time can be rebuilt.
    return table.drop_duplicates(cols.id, keep="last").reset_index(drop=True)


def _read_label_file(config: LoopConfig, path: Path) -> pd.DataFrame:
    cols = config.columns
    assert cols.id is not None  # checked by the config
    frame = read_table(path)
    missing = [c for c in (cols.id, cols.target) if c not in frame.columns]
    if missing:
        raise DataError(
            f"label file {path.name} lacks column(s) {missing}; a label file needs the id "
            f"column {cols.id!r} and the target column {cols.target!r}, found {list(frame.columns)}"
        )
    task, classes = config.task, cols.label_classes
    problem = label_problems(frame[cols.target], task, classes, cols.target)
    if problem:
        raise DataError(f"label file {path.name}: {problem}")
    y = stored_labels(frame[cols.target], task, classes)
    if frame[cols.id].isna().any():
        raise DataError(
            f"label file {path.name}: {int(frame[cols.id].isna().sum())} rows have no "
            f"{cols.id!r}; every label must name the row it belongs to"
        )
    if cols.label_time and cols.label_time in frame.columns:
        arrived = pd.to_datetime(frame[cols.label_time], errors="coerce", utc=True)
        if arrived.isna().any():
            raise DataError(
                f"label file {path.name}: column {cols.label_time!r} has "
                f"{int(arrived.isna().sum())} values that are not times"
            )
    else:
        arrived = pd.Series(
            pd.Timestamp(path.stat().st_mtime, unit="s", tz="UTC"), index=frame.index
        )
    out = pd.DataFrame(
        {
            cols.id: frame[cols.id].astype(str),
            cols.target: y,
            ARRIVED: arrived.astype("datetime64[ns, UTC]"),
            SOURCE: path.name,
        }
    )
    return out[out[cols.target].notna()]


def ingest_labels(config: LoopConfig) -> LabelIngest:
    """Read new or re-delivered label files into the table of known labels.

    A file that cannot be used is reported in `problems` and skipped (it is read again once it
    changes); the others still count. Nothing is written unless the whole pass succeeds.
    """
    cols = config.columns
    if config.sources.labels is None:
        return LabelIngest()
    if cols.id is None:
        raise DataError("late labels need columns.id: labels are joined to batches by id")
    store = LoopStore(config.state_dir)
    pending = pending_label_files(config)
    if not pending:
        return LabelIngest(known_labels=len(known_labels(config)))
    seen = store.read_json(_files_path(store)) or {}
    parts, problems, read = [], [], []
    rows = 0
    for name, path in pending.items():
        seen[name] = file_stamp(path)  # a bad file is read again only once it changes
        try:
            part = _read_label_file(config, path)
        except DataError as e:
            problems.append(str(e))
            continue
        except Exception as e:  # an unreadable file must not stop the others
            problems.append(f"label file {name} cannot be read: {e}")
            continue
        parts.append(part)
        read.append(name)
        rows += len(part)
    before = known_labels(config)
    if not parts:
        store.write_json(_files_path(store), seen)
        return LabelIngest(problems=problems, known_labels=len(before))
    incoming = pd.concat(parts, ignore_index=True).sort_values(ARRIVED, kind="stable")
    incoming = incoming.drop_duplicates(cols.id, keep="last")
    old = before.set_index(cols.id)[cols.target]
    prior = incoming[cols.id].map(old)
    new_ids = incoming.loc[prior.isna(), cols.id]
    changed_ids = incoming.loc[prior.notna() & (prior != incoming[cols.target]), cols.id]
    history = pd.read_parquet(_labels_path(store)) if _labels_path(store).exists() else None
    table = pd.concat([t for t in (history, incoming) if t is not None], ignore_index=True)
    table = table.sort_values(ARRIVED, kind="stable").drop_duplicates(
        [cols.id, cols.target, ARRIVED], keep="last"
    )
    touched = set(new_ids) | set(changed_ids)
    touched |= set(_hashed_ids(cols, pd.Series(sorted(touched), dtype=object)))
    affected = [
        key
        for key in store.batch_keys()
        if touched and _batch_ids(store, key, cols.id).isin(touched).any()
    ]
    store.write_frame(_labels_path(store), table.reset_index(drop=True))
    store.write_json(_files_path(store), seen)
    return LabelIngest(
        files=read,
        rows=rows,
        new_labels=len(new_ids),
        corrected_labels=len(changed_ids),
        affected=affected,
        problems=problems,
        known_labels=int(table[cols.id].nunique()),
    )


def _hashed_ids(cols: ColumnsConfig, ids: pd.Series) -> pd.Series:
    """`ids` as serving logs them when the id is a private column it hashes; else empty.

    Served batches hold the salted digest (`core.privacy.hash_value`), so a late label, which
    arrives with the raw id, finds its served row by that digest."""
    if cols.id not in cols.private or cols.privacy != "hash" or ids.empty:
        return pd.Series(dtype=str)
    from mlops_loop.core.privacy import hash_value, privacy_salt

    salt = privacy_salt(cols)
    return ids.astype(str).map(lambda v: hash_value(v, salt))


def _batch_ids(store: LoopStore, key: str, id_column: str) -> pd.Series:
    path = store.batch_dir(key) / "batch.parquet"
    try:
        return pd.read_parquet(path, columns=[id_column])[id_column].astype(str)
    except (FileNotFoundError, KeyError, ValueError):
        return pd.Series(dtype=str)


def attach_labels(
    config: LoopConfig, frame: pd.DataFrame, as_of: datetime | None = None
) -> pd.DataFrame:
    """`frame` with its missing labels filled in from the labels known (at `as_of`).

    A label in the batch itself wins over a late one. Without late labels configured, or
    without an id column, the frame is returned as it is.
    """
    cols = config.columns
    if config.sources.labels is None or cols.id is None or cols.id not in frame.columns:
        return frame
    table = known_labels(config, as_of)
    if table.empty:
        return frame
    lookup = table.set_index(cols.id)[cols.target]
    hashed = _hashed_ids(cols, pd.Series(lookup.index, dtype=object))
    if len(hashed):
        # Served batches hold a private id hashed: their rows join the label of its digest.
        lookup = pd.concat([lookup, pd.Series(lookup.to_numpy(), index=hashed.to_numpy())])
    late = frame[cols.id].astype(str).map(lookup)
    out = frame.copy()
    classes = cols.label_classes
    own = (
        stored_labels(out[cols.target], config.task, classes)
        if cols.target in out.columns
        else pd.Series(float("nan"), index=out.index)
    )
    late = stored_labels(late, config.task, classes)
    out[cols.target] = own.where(own.notna(), late)
    return out


def label_coverage(config: LoopConfig) -> list[dict[str, Any]]:
    """Per batch: rows, labelled rows (own or late) and the share labelled, known now."""
    store = LoopStore(config.state_dir)
    cols = config.columns
    rows = []
    for key in store.batch_keys():
        wanted = [c for c in (cols.id, cols.target) if c]
        try:
            frame = pd.read_parquet(store.batch_dir(key) / "batch.parquet", columns=None)
        except FileNotFoundError:
            continue
        frame = frame[[c for c in wanted if c in frame.columns]]
        if cols.target not in frame.columns:
            frame = frame.assign(**{cols.target: float("nan")})
        labelled = int(attach_labels(config, frame)[cols.target].notna().sum())
        rows.append(
            {
                "batch": key,
                "rows": len(frame),
                "labelled": labelled,
                "coverage": round(labelled / len(frame), 4) if len(frame) else 0.0,
            }
        )
    return rows


def now_utc() -> datetime:
    return datetime.now(UTC)
