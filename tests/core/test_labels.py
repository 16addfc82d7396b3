"""Late labels: ingest, corrections, arrival times, bad files, and the join to batches."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from mlops_loop.core.config import load_config
from mlops_loop.core.errors import InvalidConfigError
from mlops_loop.core.labels import (
    attach_labels,
    ingest_labels,
    known_labels,
    label_coverage,
    pending_label_files,
)
from mlops_loop.core.steps.ingest import ingest_batch
from tests.conftest import write_loop


@pytest.fixture
def config(tmp_path, demo_frames):
    reference, _ = demo_frames
    path = write_loop(
        tmp_path, reference, **{"sources.labels": "labels", "columns.label_time": "labelled_at"}
    )
    (tmp_path / "labels").mkdir()
    return load_config(path)


def _batch(config, key: str, ids: list[str]) -> None:
    frame = pd.DataFrame(
        {"customer_id": ids, "age": np.arange(len(ids), dtype=float), "churned": np.nan}
    ).drop(columns=["churned"])
    path = config.sources.landing / f"{key}.parquet"
    frame.to_parquet(path, index=False)
    ingest_batch(config, key, path)


def test_labels_join_by_id_later_arrivals_correct_and_as_of_filters(config):
    _batch(config, "batch_001", ["a", "b", "c"])
    _batch(config, "batch_002", ["d", "e"])
    folder = config.sources.labels
    pd.DataFrame(
        {"customer_id": ["a", "b"], "churned": [1, 0], "labelled_at": ["2026-03-01"] * 2}
    ).to_csv(folder / "week1.csv", index=False)
    first = ingest_labels(config)
    assert (first.new_labels, first.corrected_labels, first.affected) == (2, 0, ["batch_001"])
    assert pending_label_files(config) == {}

    # A correction for b and a new label for d, a week later.
    pd.DataFrame(
        {"customer_id": ["b", "d"], "churned": [1, 0], "labelled_at": ["2026-03-08"] * 2}
    ).to_parquet(folder / "week2.parquet", index=False)
    second = ingest_labels(config)
    assert (second.new_labels, second.corrected_labels) == (1, 1)
    assert second.affected == ["batch_001", "batch_002"]
    assert second.known_labels == 3

    batch = pd.DataFrame({"customer_id": ["a", "b", "c"], "churned": [np.nan, np.nan, 0.0]})
    now = attach_labels(config, batch)
    assert now["churned"].tolist() == [1.0, 1.0, 0.0]  # c keeps its own label
    then = attach_labels(config, batch, as_of=pd.Timestamp("2026-03-02", tz="UTC"))
    assert then["churned"].tolist() == [1.0, 0.0, 0.0]  # before b's correction arrived
    assert len(known_labels(config, as_of=pd.Timestamp("2026-02-01", tz="UTC"))) == 0

    assert label_coverage(config) == [
        {"batch": "batch_001", "rows": 3, "labelled": 2, "coverage": 0.6667},
        {"batch": "batch_002", "rows": 2, "labelled": 1, "coverage": 0.5},
    ]


def test_a_bad_label_file_is_reported_and_read_again_only_once_it_changes(config):
    _batch(config, "batch_001", ["a", "b"])
    folder = config.sources.labels
    bad = folder / "bad.csv"
    bad.write_text("customer_id,churned\na,yes\n")
    pd.DataFrame({"customer_id": ["b"], "churned": [1]}).to_csv(folder / "ok.csv", index=False)
    result = ingest_labels(config)
    assert result.files == ["ok.csv"] and result.new_labels == 1
    [problem] = result.problems
    assert "bad.csv" in problem and "'yes'" in problem
    assert "'churned' must hold one of the classes [0, 1]" in problem
    assert pending_label_files(config) == {}

    bad.write_text("customer_id,churned\na,1\n")
    os.utime(bad, (1_900_000_000, 1_900_000_000))
    assert list(pending_label_files(config)) == ["bad.csv"]
    fixed = ingest_labels(config)
    assert fixed.files == ["bad.csv"] and fixed.problems == [] and fixed.new_labels == 1


def test_without_an_arrival_column_the_file_time_counts(config):
    _batch(config, "batch_001", ["a"])
    path = config.sources.labels / "plain.csv"
    pd.DataFrame({"customer_id": ["a"], "churned": [1]}).to_csv(path, index=False)
    os.utime(path, (1_800_000_000, 1_800_000_000))
    ingest_labels(config)
    [arrived] = known_labels(config)["_label_arrived_at"]
    assert arrived == pd.Timestamp(1_800_000_000, unit="s", tz="UTC")


def test_a_batch_without_its_label_column_is_stored_unlabelled(config):
    _batch(config, "batch_001", ["a", "b"])
    from mlops_loop.core.store import LoopStore

    stored = LoopStore(config.state_dir).batch("batch_001")
    assert stored["churned"].isna().all()


def test_late_labels_need_an_id_column(tmp_path, demo_frames):
    reference, _ = demo_frames
    path = write_loop(tmp_path, reference, **{"sources.labels": "labels", "columns.id": None})
    with pytest.raises(InvalidConfigError, match="sources.labels is set but columns.id is not"):
        load_config(path)
