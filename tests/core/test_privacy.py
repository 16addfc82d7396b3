"""Private columns: no raw value of theirs reaches MLflow (runs, datasets, artifacts, registry).

Real loop steps on the demo stream with a real MLflow SQLite backend in a temp dir; the ids are
made distinctive strings so that a text scan for them cannot match anything else.
"""

from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlops_loop.core.config import load_config
from mlops_loop.core.errors import InvalidConfigError
from mlops_loop.core.privacy import mask_private
from mlops_loop.core.steps.drift import evaluate_batch_drift
from mlops_loop.core.steps.ingest import ingest_batch
from mlops_loop.core.steps.performance import measure_performance
from mlops_loop.core.steps.promotion import promote_challenger
from mlops_loop.core.steps.quality import check_quality
from mlops_loop.core.steps.reference import ensure_champion, take_reference_snapshot
from mlops_loop.core.steps.scoring import score_batch
from mlops_loop.core.steps.training import train_challenger
from tests.conftest import write_loop

SALT_ENV = "TEST_PRIVACY_SALT"
KEY = "batch_005"
# A check of the user's own that every id fails: GX then reports example ids.
BAD_IDS = {
    "type": "ExpectColumnValuesToMatchRegex",
    "kwargs": {"column": "customer_id", "regex": "^x"},
}


def _with_ids(frame, prefix: str):
    frame = frame.copy()
    frame["customer_id"] = [f"{prefix}{i:07d}zq" for i in range(len(frame))]
    return frame


def _setup(tmp_path: Path, demo_frames, **overrides):
    reference, batches = demo_frames
    reference = _with_ids(reference, "CUSTREF")
    batch = _with_ids(batches[KEY], "CUSTBAT")
    batch.loc[batch.index[:3], "customer_id"] = batch["customer_id"].iloc[3]  # repeated ids
    config = load_config(
        write_loop(
            tmp_path,
            reference,
            {KEY: batch},
            **{"quality.expectations": [{**BAD_IDS, "severity": "warn"}], **overrides},
        )
    )
    ids = [*reference["customer_id"].iloc[::97], *batch["customer_id"].iloc[::53]]
    return config, ids


def _mlflow_text(config) -> str:
    """Every param, tag, dataset record and artifact file of the loop's MLflow, as one text."""
    client = MlflowClient(tracking_uri=config.tracking_uri, registry_uri=config.tracking_uri)
    exp = client.get_experiment_by_name(config.mlflow.experiment)
    parts: list[str] = []
    for run in client.search_runs([exp.experiment_id]):
        parts += [f"{k}={v}" for k, v in run.data.params.items()]
        parts += [f"{k}={v}" for k, v in run.data.tags.items()]
        for d in run.inputs.dataset_inputs:
            ds = d.dataset
            parts += [ds.name, ds.digest, ds.source, ds.schema or "", ds.profile or ""]
            parts += [f"{t.key}={t.value}" for t in d.tags]
    for mv in client.search_model_versions(f"name='{config.mlflow.registered_model}'"):
        parts += [f"{k}={v}" for k, v in mv.tags.items()]
    root = config.state_dir / "mlartifacts"
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files, f"no artifact under {root}"
    parts += [p.read_bytes().decode("utf-8", errors="replace") for p in files]
    return "\n".join(parts)


@pytest.mark.slow
def test_no_raw_private_value_reaches_mlflow(tmp_path, demo_frames, monkeypatch):
    monkeypatch.setenv(SALT_ENV, "pepper")
    config, ids = _setup(
        tmp_path,
        demo_frames,
        **{"columns.private": ["customer_id"], "columns.privacy_salt_env": SALT_ENV},
    )
    take_reference_snapshot(config)
    ensure_champion(config)
    ingest_batch(config, KEY, config.sources.landing / f"{KEY}.parquet")
    result = check_quality(config, KEY)
    assert result.success, result.to_dict()  # the id check only warns
    assert any(i.column == "customer_id" for i in result.incidents)
    evaluate_batch_drift(config, KEY)
    score_batch(config, KEY)
    measure_performance(config, KEY)
    train_challenger(config, KEY)
    promote_challenger(config, KEY)

    text = _mlflow_text(config)
    leaked = [i for i in ids if i in text]
    assert not leaked, f"{len(leaked)} raw ids in MLflow, e.g. {leaked[:3]}"
    # The datasets are still recorded, with the private column hashed rather than removed.
    assert '"customer_id"' in text and "CUSTBAT" not in text and "CUSTREF" not in text


def test_the_scan_finds_ids_when_no_column_is_private(tmp_path, demo_frames):
    """The same scan on the same steps without `private`: the failing id check shows ids."""
    config, ids = _setup(tmp_path, demo_frames)
    take_reference_snapshot(config)
    ingest_batch(config, KEY, config.sources.landing / f"{KEY}.parquet")
    check_quality(config, KEY)
    assert "CUSTBAT" in _mlflow_text(config)


def test_drop_removes_the_column_and_hash_needs_its_salt(demo_frames, monkeypatch, loop_config):
    reference, _ = demo_frames
    columns = loop_config.columns.model_copy(update={"private": ["customer_id"]})
    monkeypatch.delenv("MLOPS_LOOP_PRIVACY_SALT", raising=False)
    with pytest.raises(InvalidConfigError, match="MLOPS_LOOP_PRIVACY_SALT.*not set"):
        mask_private(reference, columns)
    dropped = mask_private(reference, columns.model_copy(update={"privacy": "drop"}))
    assert "customer_id" not in dropped.columns and len(dropped) == len(reference)
    monkeypatch.setenv("MLOPS_LOOP_PRIVACY_SALT", "a")
    a = mask_private(reference, columns)["customer_id"]
    monkeypatch.setenv("MLOPS_LOOP_PRIVACY_SALT", "b")
    b = mask_private(reference, columns)["customer_id"]
    assert a.is_unique and not set(a) & set(b)  # stable within a salt, unlinkable across
    assert not set(map(str, reference["customer_id"])) & set(a)


def test_a_private_feature_is_rejected(tmp_path, demo_frames):
    reference, _ = demo_frames
    path = write_loop(tmp_path, reference, **{"columns.private": ["region"]})
    with pytest.raises(
        InvalidConfigError, match="private column 'region' is also a categorical feature"
    ):
        load_config(path)
