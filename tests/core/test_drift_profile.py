"""Reference profiles and parquet batches give exactly the report of the in-memory frames."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_loop.core.config import DriftPolicy, parse_config
from mlops_loop.core.data import frame_digest
from mlops_loop.core.drift import (
    NULL_LABEL,
    ParquetBatch,
    ReferenceProfile,
    chunked,
    evaluate_drift,
    evaluate_drift_parquet,
    profile,
    sides,
)
from mlops_loop.core.errors import DataError
from mlops_loop.core.store import LoopStore


def frames(seed: int, n_ref: int = 1500, n_cur: int = 1200) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mixed columns with NaN, infinities, nulls, unseen categories and unusable columns."""
    rng = np.random.default_rng(seed)

    def side(n: int, shift: float, labels: list[str]) -> pd.DataFrame:
        x = rng.normal(shift, 1.0, n)
        x[rng.random(n) < 0.05] = np.nan
        x[rng.random(n) < 0.01] = np.inf
        x[rng.random(n) < 0.01] = -np.inf
        counts = rng.integers(0, 40, n).astype("float64")  # heavy ties
        flag = rng.random(n) < 0.3 + shift / 10
        flag_nulls = pd.Series(flag, dtype=object).mask(rng.random(n) < 0.1, None)
        cat = pd.Series(rng.choice(labels, n)).mask(rng.random(n) < 0.05, None)
        many = pd.Series([f"id{v}" for v in rng.integers(0, 1500, n)])  # > MAX pooled away
        ints = pd.array(rng.integers(-5, 5, n), dtype="Int64")
        ints[rng.random(n) < 0.1] = pd.NA
        return pd.DataFrame(
            {
                "x": x,
                "counts": counts,
                "flag": flag,
                "flag_nulls": flag_nulls,
                "cat": cat,
                "dict": pd.Categorical(rng.choice(["p", "q", "r"], n)),
                "many": many,
                "ints": ints,
                "empty": np.full(n, np.nan),
                "text": rng.choice(["a", "b"], n),
                "big": rng.integers(2**60, 2**62, n, dtype=np.int64),
                "score": rng.random(n),
                "y": rng.integers(0, 2, n),
            }
        )

    ref = side(n_ref, 0.0, ["a", "b", "c", NULL_LABEL])
    cur = side(n_cur, 0.3, ["a", "b", "c", "unseen"])
    ref["only_ref"] = 1.0
    cur["only_cur"] = "z"
    return ref, cur


def loop_config():
    return parse_config(
        {
            "columns": {
                # "text" is configured numerical but holds text: an error entry on both paths.
                "numerical": ["x", "counts", "flag", "ints", "empty", "text", "big", "gone"],
                "categorical": ["cat", "dict", "many", "flag_nulls", "only_ref"],
                "target": "y",
                "prediction": "score",
            },
            "sources": {"reference": "ref.parquet", "landing": "landing"},
            "drift": {"methods": {"counts": "psi", "cat": "jensen_shannon", "x": "wasserstein"}},
        }
    )


CASES = [(None, None), ("config", None), (None, DriftPolicy(fdr=0.2, numerical_effect=0.05))]


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("with_config, policy", CASES)
def test_profile_gives_the_frames_report(
    tmp_path: Path, seed: int, with_config: str | None, policy: DriftPolicy | None
) -> None:
    ref, cur = frames(seed)
    config = loop_config() if with_config else None
    expected = evaluate_drift(ref, cur, config=config, policy=policy).to_dict()
    # The data exercise every path: errors, overrides, pooled categories, unseen ones.
    by_name = {f["name"]: f for f in expected["features"]}
    assert by_name["empty"]["error"] == "all values are null (or non-finite) in the reference"
    missing = "gone" if config else "only_cur"
    assert by_name[missing]["error"] == "column is missing in the reference"
    assert by_name["only_ref"]["error"] == "column is missing in the current batch"
    assert "unseen" in by_name["cat"]["current_summary"]
    assert sum(f["error"] is None for f in expected["features"]) >= 9

    built = ReferenceProfile.from_frame(ref, config)
    assert built.missing(config) == []
    assert evaluate_drift(built, cur, config=config, policy=policy).to_dict() == expected
    built.save(tmp_path / "profile")
    for mmap in (False, True):
        loaded = ReferenceProfile.load(tmp_path / "profile", mmap=mmap)
        assert loaded.digest == frame_digest(ref) and len(loaded) == len(ref)
        assert evaluate_drift(loaded, cur, config=config, policy=policy).to_dict() == expected


def test_profile_keeps_duplicated_and_non_string_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    ref = pd.DataFrame(rng.normal(size=(300, 4)), columns=["a", "a", 1, "1"])
    cur = pd.DataFrame(rng.normal(0.5, size=(200, 4)), columns=["a", "a", 1, "1"])
    expected = evaluate_drift(ref, cur).to_dict()
    assert [f["error"] for f in expected["features"]].count("column name is not unique") == 1
    ReferenceProfile.from_frame(ref).save(tmp_path / "p")
    assert evaluate_drift(ReferenceProfile.load(tmp_path / "p"), cur).to_dict() == expected


def test_evaluation_against_a_profile_does_not_sort_the_reference_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref, cur = frames(3)
    built = ReferenceProfile.from_frame(ref)
    sorted_columns = [k for k, c in built.numerical.items() if c.values is not None]
    assert all(not built.numerical[k].values.flags.writeable for k in sorted_columns)
    calls = []
    original = sides.sorted_finite

    def counting(values: np.ndarray) -> np.ndarray:
        calls.append(values.size)
        return original(values)

    monkeypatch.setattr(sides, "sorted_finite", counting)
    for _ in range(2):
        report = evaluate_drift(built, cur)
    tested = [f.name for f in report.features if f.kind == "numerical" and f.error is None]
    assert len(tested) >= 5
    # Only the batch's columns were sorted: one sort per tested numerical column per evaluation.
    assert calls == [len(cur)] * len(tested) * 2
    calls.clear()
    evaluate_drift(ref, cur)
    # The frame path sorts both sides (and the reference of "empty", which then fails).
    assert calls.count(len(cur)) == len(tested) and calls.count(len(ref)) == len(tested) + 1


def test_profile_built_for_other_kinds_is_refused_naming_the_column() -> None:
    ref, cur = frames(4)
    built = ReferenceProfile.from_frame(ref)  # inferred kinds: "counts" is numerical
    config = parse_config(
        {
            "columns": {"numerical": ["x"], "categorical": ["counts"], "target": "y"},
            "sources": {"reference": "ref.parquet", "landing": "landing"},
        }
    )
    assert built.missing(config) == ["'counts' as categorical (profile holds numerical)"]
    with pytest.raises(DataError, match="no categorical statistics of column 'counts'"):
        evaluate_drift(built, cur, config=config)
    narrow = ReferenceProfile.from_frame(ref, config)
    assert "'cat' as categorical (profile holds nothing)" in narrow.missing(None)


def test_save_replaces_atomically_and_load_checks_the_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref, cur = frames(6, 400, 300)
    target = tmp_path / "profile"
    first = ReferenceProfile.from_frame(ref)
    first.save(target)
    second = ReferenceProfile.from_frame(cur)

    real_save = np.save
    written = []

    def failing_save(path, array, **kwargs):  # type: ignore[no-untyped-def]
        written.append(path)
        if len(written) == 3:
            raise OSError("disk full")
        real_save(path, array, **kwargs)

    monkeypatch.setattr(profile.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        second.save(target)
    monkeypatch.undo()
    # Nothing half-written: the old profile is intact and no temporary folder is left.
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == ["profile"]
    assert ReferenceProfile.load(target).digest == first.digest

    second.save(target)
    assert ReferenceProfile.load(target).digest == second.digest != first.digest
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == ["profile"]

    manifest = json.loads((target / "profile.json").read_text())
    manifest["format_version"] = 99
    (target / "profile.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"format version 99; .* reads version 2"):
        ReferenceProfile.load(target)
    with pytest.raises(DataError, match="no reference profile at .*missing"):
        ReferenceProfile.load(tmp_path / "nowhere")

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("not a profile")
    with pytest.raises(DataError, match="refusing to write a reference profile over"):
        first.save(tmp_path / "data")
    assert (tmp_path / "data" / "keep.txt").read_text() == "not a profile"


def test_load_names_a_damaged_file(tmp_path: Path) -> None:
    ref, _ = frames(7, 300, 300)
    ReferenceProfile.from_frame(ref).save(tmp_path / "p")
    values = next((tmp_path / "p").glob("n*.values.npy"))
    count = len(np.load(values))
    for damaged in ([3.0, 1.0] + [2.0] * (count - 2), [1.0, np.nan] + [2.0] * (count - 2)):
        np.save(values, np.array(damaged))
        with pytest.raises(DataError, match=f"{values.name} does not hold sorted finite values"):
            ReferenceProfile.load(tmp_path / "p")
    np.save(values, np.arange(3.0))
    with pytest.raises(DataError, match=f"{values.name} holds 3 values; the manifest says"):
        ReferenceProfile.load(tmp_path / "p")


def write_parquet(frame: pd.DataFrame, path: Path, row_group_size: int) -> Path:
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_size
    )
    return path


@pytest.mark.parametrize("with_config", [False, True])
def test_parquet_batch_gives_the_in_memory_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_config: bool
) -> None:
    monkeypatch.setattr(chunked, "CHUNK_ROWS", 97)  # many slices per row group, and across them
    ref, cur = frames(8)
    cur["when"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(len(cur)), "h")
    path = write_parquet(cur, tmp_path / "batch.parquet", row_group_size=250)
    assert pq.ParquetFile(path).metadata.num_row_groups == 5
    config = loop_config() if with_config else None
    in_memory = pd.read_parquet(path)
    expected = evaluate_drift(ref, in_memory, config=config).to_dict()
    assert expected["n_current"] == len(cur)

    assert evaluate_drift_parquet(ref, path, config=config).to_dict() == expected
    built = ReferenceProfile.from_frame(ref, config)
    assert evaluate_drift_parquet(built, path, config=config).to_dict() == expected


def test_parquet_numbers_read_in_slices_equal_pandas_conversion(tmp_path: Path) -> None:
    n = 1000
    rng = np.random.default_rng(9)
    frame = pd.DataFrame(
        {
            "f32": rng.normal(size=n).astype("float32"),
            "u64": rng.integers(0, 2**64 - 1, n, dtype=np.uint64),
            "i64": rng.integers(-(2**62), 2**62, n),
            "flag": rng.random(n) < 0.5,
        }
    )
    path = write_parquet(frame, tmp_path / "b.parquet", row_group_size=333)
    batch = ParquetBatch(path)
    for key in frame.columns:
        expected = pd.read_parquet(path)[key].to_numpy(dtype="float64")
        np.testing.assert_array_equal(batch.float_values(key), expected)


def test_unreadable_parquet_batch_raises_data_error_naming_the_path(tmp_path: Path) -> None:
    ref, _ = frames(10, 200, 200)
    missing = tmp_path / "missing.parquet"
    with pytest.raises(DataError, match="missing.parquet"):
        evaluate_drift_parquet(ref, missing)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot read the parquet batch .*garbage.parquet"):
        evaluate_drift_parquet(ref, garbage)


def test_a_batch_that_becomes_unreadable_stops_the_evaluation(tmp_path: Path) -> None:
    ref, cur = frames(11, 300, 300)
    path = write_parquet(cur, tmp_path / "b.parquet", row_group_size=100)
    batch = ParquetBatch(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated meanwhile
    with pytest.raises(DataError, match="cannot read column .* of the parquet batch"):
        evaluate_drift(ref, batch)


def test_inputs_of_the_wrong_type_are_refused() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0]})
    with pytest.raises(
        DataError, match="reference must be a pandas DataFrame or a ReferenceProfile"
    ):
        evaluate_drift("ref.parquet", frame)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="current must be a pandas DataFrame or a ParquetBatch"):
        evaluate_drift(frame, "batch.parquet")  # type: ignore[arg-type]


def test_store_rebuilds_a_missing_stale_or_unfitting_profile(tmp_path: Path) -> None:
    ref, cur = frames(12, 500, 400)
    ref = ref.drop(columns=["ints", "dict", "flag_nulls"])  # plain dtypes, as a snapshot holds
    store = LoopStore(tmp_path / "state")
    config = loop_config()
    store.write_frame(store.snapshot_dir / "reference.parquet", ref)
    store.write_json(store.snapshot_dir / "snapshot.json", {"digest": "d1"})
    stored = store.reference()
    expected = evaluate_drift(stored, cur, config=config).to_dict()

    # A snapshot of an older version has no profile: built on first use, then reused.
    assert not store.profile_dir.exists()
    first = store.reference_profile(config)
    assert first.digest == "d1" and (store.profile_dir / "profile.json").is_file()
    assert evaluate_drift(first, cur, config=config).to_dict() == expected
    stamp = (store.profile_dir / "profile.json").stat().st_mtime_ns
    assert store.reference_profile(config).digest == "d1"
    assert (store.profile_dir / "profile.json").stat().st_mtime_ns == stamp  # not rebuilt

    # Another snapshot (new digest) or another column choice rebuilds it.
    store.write_json(store.snapshot_dir / "snapshot.json", {"digest": "d2"})
    assert store.reference_profile(config).digest == "d2"
    other = parse_config(
        {
            "columns": {"numerical": ["counts"], "categorical": ["x"], "target": "y"},
            "sources": {"reference": "ref.parquet", "landing": "landing"},
        }
    )
    rebuilt = store.reference_profile(other)
    assert rebuilt.missing(other) == [] and "x" in rebuilt.categorical
    assert evaluate_drift(rebuilt, cur, config=other).to_dict() == (
        evaluate_drift(stored, cur, config=other).to_dict()
    )
    # A damaged profile is only a cache: rebuilt too.
    (store.profile_dir / "profile.json").write_text("{")
    assert evaluate_drift(store.reference_profile(config), cur, config=config).to_dict() == expected


def test_concurrent_saves_leave_one_complete_profile(tmp_path: Path) -> None:
    ref, _ = frames(13, 200, 200)
    profiles = [ReferenceProfile.from_frame(ref, digest=f"d{i}") for i in range(4)]
    target = tmp_path / "profile"

    def save_often(p: ReferenceProfile) -> None:
        for _ in range(10):
            p.save(target)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(save_often, profiles))
    assert ReferenceProfile.load(target).digest in {"d0", "d1", "d2", "d3"}
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".lock"] == ["profile"]
