"""The state folder's JSON verdicts keep the layout they had when every step lived in one
module, and a state folder written in an earlier, sparser layout still works: `mlops-loop
status` reads it and the next batch is monitored and decided on it. Real steps, real MLflow
(SQLite in a temp dir), real models."""

import json

import pytest

from mlops_loop.cli import main
from mlops_loop.core.config import load_config
from mlops_loop.core.steps.alerts import check_alerts
from mlops_loop.core.steps.decision import decide_batch_retrain
from mlops_loop.core.steps.drift import evaluate_batch_drift
from mlops_loop.core.steps.ingest import ingest_batch
from mlops_loop.core.steps.performance import Performance, measure_performance
from mlops_loop.core.steps.promotion import promote_challenger
from mlops_loop.core.steps.quality import check_quality
from mlops_loop.core.steps.reference import ensure_champion, take_reference_snapshot
from mlops_loop.core.steps.scoring import score_batch
from mlops_loop.core.steps.status import loop_status
from mlops_loop.core.steps.training import Challenger, train_challenger
from mlops_loop.core.store import LoopStore
from tests.conftest import write_loop

# The keys, in order, that the single-module loop (before the steps package) wrote.
LAYOUT = {
    "ingest": ["rows", "columns", "digest", "source", "stamp", "sha256"],
    "scored": ["champion_version", "rows", "operations"],
    "performance": [
        "champion_version",
        "rows",
        "output_drift",
        "labelled_rows",
        "label_coverage",
        "labels_as_of",
        "metrics",
        "metric_name",
        "metric",
        "baseline_metric",
        "best_baseline_metric",
        "estimate",
        "estimated_metrics",
        "estimated_metric",
        "segments",
    ],
    "decision": ["retrain", "reasons", "triggers", "decided_at"],
    "alerts": ["events", "sent", "deliveries", "rules", "firing"],
    "challenger": [
        "version",
        "metrics",
        "training_parts",
        "training_rows",
        "training_digest",
        "holdout_rows",
        "labels_as_of",
        "run_id",
        "validation_model_uri",
    ],
    "promotion": [
        "promoted",
        "challenger_version",
        "champion_version_before",
        "champion_version_after",
        "decision",
        "comparison",
        "change",
        "history_table",
    ],
}
OUTPUT_DRIFT = [
    "role",
    "name",
    "method",
    "statistic",
    "p_value",
    "effect_size",
    "threshold",
    "drifted",
    "error",
]
SNAPSHOT = ["digest", "rows", "columns", "source", "expectations"]
# Fields later sessions added; a state folder from before them lacks them.
ADDED_LATER = {
    "performance": [
        "best_baseline_metric",
        "output_drift",
        "segments",
        "estimate",
        "estimated_metrics",
        "estimated_metric",
        "labels_as_of",
    ],
    "challenger": ["labels_as_of", "run_id", "validation_model_uri"],
    "decision": ["decided_at"],
}


def _monitor(config, key: str, retrain: bool = False) -> None:
    ingest_batch(config, key, config.sources.landing / f"{key}.parquet")
    assert check_quality(config, key).success
    evaluate_batch_drift(config, key)
    score_batch(config, key)
    measure_performance(config, key)
    decide_batch_retrain(config, key)
    check_alerts(config, key)
    if retrain:
        train_challenger(config, key)
        promote_challenger(config, key)


@pytest.fixture(scope="module")
def state(tmp_path_factory, demo_frames):
    reference, batches = demo_frames
    root = tmp_path_factory.mktemp("state")
    keys = ["batch_001", "batch_005", "batch_006"]
    path = write_loop(root, reference, {k: batches[k] for k in keys})
    config = load_config(path)
    take_reference_snapshot(config)
    ensure_champion(config)
    _monitor(config, "batch_001")
    _monitor(config, "batch_005", retrain=True)
    return config, path


def test_every_verdict_keeps_its_layout(state):
    state, _ = state
    store = LoopStore(state.state_dir)
    assert list(store.read_json(store.snapshot_dir / "snapshot.json")) == SNAPSHOT
    for key in ("batch_001", "batch_005"):
        for name, fields in LAYOUT.items():
            record = store.batch_json(key, name)
            if name in ("challenger", "promotion") and key == "batch_001":
                assert record is None
                continue
            assert record is not None, (key, name)
            assert list(record) == fields, (key, name)
        perf = store.batch_json(key, "performance")
        assert perf["output_drift"] and all(list(o) == OUTPUT_DRIFT for o in perf["output_drift"])
    # Read back, a record is what the step returned.
    perf = store.batch_json("batch_005", "performance")
    assert Performance.from_dict(perf).to_dict() == perf
    chal = store.batch_json("batch_005", "challenger")
    assert Challenger.from_dict(chal).to_dict() == chal


def test_a_state_folder_of_an_earlier_layout_still_works(state, capsys):
    state, path = state
    store = LoopStore(state.state_dir)
    before = loop_status(state)
    for key in ("batch_001", "batch_005"):
        for name, dropped in ADDED_LATER.items():
            record = store.batch_json(key, name)
            if record is not None:
                old = {k: v for k, v in record.items() if k not in dropped}
                old["retired_field"] = "kept by an older release"  # unknown keys are ignored
                store.write_batch_json(key, name, old)
    # The CLI's status reads it, as it read the full layout.
    assert main(["status", "--config", str(path), "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [b["batch"] for b in shown["batches"]] == ["batch_001", "batch_005"]
    assert shown["champion"] == before.champion
    for seen, was in zip(shown["batches"], before.batches, strict=True):
        assert seen["metric"] == was.metric and seen["promoted"] == was.promoted
        assert seen["challenger_version"] == was.challenger_version
    assert shown["batches"][1]["estimated_metric"] is None  # the old layout had none
    # The next batch is monitored and decided on it (the retrain rule reads the old records).
    _monitor(state, "batch_006")
    decision = store.batch_json("batch_006", "decision")
    assert decision is not None and decision["reasons"]
    assert Performance.from_dict(store.batch_json("batch_006", "performance")).labelled_rows > 0
