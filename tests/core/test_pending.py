"""What any orchestrator asks the loop's store: which landed batches are not monitored yet,
and which retrain decisions no retrain has answered. Real steps, MLflow on SQLite."""

import os

from mlops_loop.core.config import load_config
from mlops_loop.core.steps.decision import answer_retrain, pending_retrains
from mlops_loop.core.steps.ingest import ingest_landed, unmonitored_batches
from mlops_loop.core.store import LoopStore
from tests.conftest import write_loop


def test_unmonitored_batches_are_the_new_and_the_redelivered(tmp_path, demo_frames):
    reference, batches = demo_frames
    keys = ["batch_001", "batch_002"]
    config = load_config(write_loop(tmp_path, reference, {k: batches[k].head(40) for k in keys}))
    assert unmonitored_batches(config) == (keys, [])
    ingest_landed(config, "batch_001")
    assert unmonitored_batches(config)[0] == ["batch_002"]
    landed = config.sources.landing / "batch_001.parquet"
    # The same bytes copied again are the batch already monitored...
    os.utime(landed, ns=(1, 1))
    assert unmonitored_batches(config)[0] == ["batch_002"]
    # ...other bytes under the same name are a new delivery.
    batches["batch_001"].head(41).to_parquet(landed, index=False)
    assert unmonitored_batches(config)[0] == keys


def test_a_retrain_decision_is_pending_until_a_retrain_answers_it(tmp_path, demo_frames):
    reference, batches = demo_frames
    config = load_config(write_loop(tmp_path, reference, {"batch_001": batches["batch_001"]}))
    store = LoopStore(config.state_dir)
    store.write_batch_json("batch_001", "quality", {"success": True})
    store.write_batch_json("batch_001", "batch", {})
    (store.batch_dir("batch_001") / "batch.parquet").write_bytes(b"")
    decided = {"retrain": True, "reasons": ["drift"], "triggers": ["drift"]}
    store.write_batch_json("batch_001", "decision", {**decided, "decided_at": "t1"})
    assert pending_retrains(config) == ["batch_001"]
    answer_retrain(config, "batch_001", "trained")
    assert pending_retrains(config) == []
    assert store.batch_json("batch_001", "retrain")["outcome"] == "trained"
    # Decided again (late labels): pending again.
    store.write_batch_json("batch_001", "decision", {**decided, "decided_at": "t2"})
    assert pending_retrains(config) == ["batch_001"]
    # A quarantined batch never is.
    store.write_batch_json("batch_001", "quality", {"success": False})
    assert pending_retrains(config) == []
