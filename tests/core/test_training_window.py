"""Which rows train a challenger: windows, the hold-out, and quarantine, on a real store."""

import pandas as pd
import pytest

from mlops_loop.core.config import load_config
from mlops_loop.core.steps.ingest import ingest_batch
from mlops_loop.core.steps.quality import check_quality
from mlops_loop.core.steps.reference import take_reference_snapshot
from mlops_loop.core.steps.training import training_window
from tests.conftest import write_loop


@pytest.fixture(scope="module")
def monitored(tmp_path_factory, demo_frames):
    """Reference snapshot plus batches 001-004 ingested and through the quality gate."""
    root = tmp_path_factory.mktemp("window")
    reference, batches = demo_frames
    keys = ["batch_001", "batch_002", "batch_003", "batch_004"]
    path = write_loop(root, reference, {k: batches[k] for k in keys})
    config = load_config(path)
    take_reference_snapshot(config)
    for k in keys:
        ingest_batch(config, k, config.sources.landing / f"{k}.parquet")
        check_quality(config, k)
    return path, batches


def window(path, key, **training):
    config = load_config(path)
    config = config.model_copy(
        update={
            "training": config.training.model_validate({**config.training.model_dump(), **training})
        }
    )
    return training_window(config, key)


def test_all_history_excludes_the_quarantined_batch_and_the_holdout(monitored):
    path, batches = monitored
    train, parts, holdout = window(path, "batch_004", window="all")
    assert parts == ["reference", "batch_001", "batch_002", "batch_004 (first 50%)"]
    assert len(train) == 3000 + 2000 + 2000 + 1000
    assert len(holdout) == 1000
    # The held-out rows are the latest of the batch and never trained on.
    assert holdout["event_time"].min() > train["event_time"].max()


def test_recent_window(monitored):
    path, _ = monitored
    _, parts, _ = window(
        path, "batch_004", window="recent", recent_batches=1, include_reference=False
    )
    assert parts == ["batch_002", "batch_004 (first 50%)"]


def test_sliding_window_by_rows_and_by_time(monitored):
    path, _ = monitored
    train, parts, _ = window(
        path, "batch_004", window="sliding", max_rows=2500, include_reference=True
    )
    assert len(train) == 2500
    assert parts == ["batch_002", "batch_004 (first 50%)"]  # only the newest rows survive
    train, parts, _ = window(path, "batch_004", window="sliding", max_age_days=10)
    latest = pd.to_datetime(train["event_time"]).max()
    assert (latest - pd.to_datetime(train["event_time"]).min()).days <= 10
    assert "reference" not in parts and "batch_001" not in parts


def test_a_quarantined_batch_cannot_be_trained_on(monitored):
    path, _ = monitored
    with pytest.raises(Exception, match="has not passed the quality gate"):
        window(path, "batch_003", window="all")
