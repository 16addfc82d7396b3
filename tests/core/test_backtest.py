"""The backtest replays the real loop steps over a folder of batches, prequentially."""

import hashlib
import json

import pytest
import yaml

from mlops_loop.core.backtest import backtest
from mlops_loop.core.config import load_config
from mlops_loop.core.errors import DataError, InvalidConfigError
from mlops_loop.core.store import LoopStore
from mlops_loop.demo.data import Episode, generate
from tests.conftest import write_loop

STREAM = [
    Episode("b01", "stable", "a normal week", rows=600),
    Episode("b02", "stable", "a normal week", rows=600),
    Episode("b03", "quality", "broken upstream", rows=600),
    Episode("b04", "covariate", "older customers from the west", rows=600),
    Episode("b05", "concept", "heavy users churn", rows=600),
    Episode("b06", "concept", "the new pattern holds", rows=600),
]


def _tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    """One replay, under the default policy, of a stream that is stable, then broken, shifted
    and finally reconceived."""
    root = tmp_path_factory.mktemp("backtest")
    reference, batches = generate(seed=5, reference_rows=2000, scenario=STREAM)
    # The package's own retrain, training and promotion defaults are what is replayed.
    path = write_loop(root, reference)
    doc = yaml.safe_load(path.read_text())
    doc.pop("retrain"), doc.pop("training")
    doc["promotion"] = {
        "metric": "roc_auc",
        "bootstrap_rounds": doc["promotion"]["bootstrap_rounds"],
    }
    path.write_text(yaml.safe_dump(doc))
    config = load_config(path)
    folder = root / "history"
    folder.mkdir()
    for name, frame in batches.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    (folder / "b03x.parquet").write_bytes(b"an export that died half way")
    # The user's own loop state exists and must come out of the replay byte for byte.
    user_state = config.state_dir
    user_state.mkdir(parents=True)
    (user_state / "mlflow.db").write_bytes(b"the user's real tracking store")
    before = _tree_digest(root / "landing"), _tree_digest(user_state)
    seen = []
    result = backtest(
        config,
        folder,
        root / "data" / "reference.parquet",
        state_dir=root / "replay",
        progress=lambda done, total, key: seen.append((done, total, key)),
    )
    after = _tree_digest(root / "landing"), _tree_digest(user_state)
    rows = {b["batch"]: b for b in result.to_dict()["batches"]}
    return result, rows, LoopStore(root / "replay" / "state"), seen, before, after


@pytest.mark.slow
def test_a_stable_stream_never_retrains(replay):
    result, rows, _, seen, _, _ = replay
    assert [k for _, _, k in seen] == sorted([e.name for e in STREAM] + ["b03x"])
    assert seen[-1][:2] == (len(STREAM) + 1, len(STREAM) + 1)
    for key in ("b01", "b02"):
        row = rows[key]
        assert row["quality_success"] is True
        assert row["dataset_drift"] is False
        assert row["retrained"] is False and row["promoted"] is False
        assert row["champion_version"] == 1 and row["scored_by"] == 1
        # Realized on the labels that arrived after scoring, close to what was estimated.
        assert row["labelled_rows"] == 600
        assert row["metric"] > 0.75
        assert abs(row["metric"] - row["estimated_metric"]) < 0.08


@pytest.mark.slow
def test_a_broken_batch_is_quarantined_and_never_trained_on(replay):
    result, rows, store, _, _, _ = replay
    broken = rows["b03"]
    assert broken["quality_success"] is False
    assert broken["metric"] is None and broken["retrained"] is False
    assert any(i.startswith("null_rate:age") for i in broken["incidents"])
    unreadable = rows["b03x"]
    assert unreadable["quality_success"] is False and unreadable["rows"] is None
    assert unreadable["incidents"][0].startswith("unreadable:")
    assert "b03x.parquet" in unreadable["reasons"][0]
    summary = result.to_dict()["summary"]
    assert summary["quarantined"] == ["b03", "b03x"]
    assert summary["accepted"] == len(STREAM) - 1
    assert summary["quality_incidents"] == len(broken["incidents"]) + 1
    trained = [k for k, r in rows.items() if r["retrained"]]
    assert trained, "the stream has retrains to inspect"
    for key in trained:
        parts = store.batch_json(key, "challenger")["training_parts"]
        assert not any(p.startswith("b03") for p in parts), parts


@pytest.mark.slow
def test_covariate_drift_is_detected(replay):
    _, rows, _, _, _, _ = replay
    shifted = rows["b04"]
    assert shifted["dataset_drift"] is True and shifted["drift_share"] > 0
    assert any("drift" in r for r in shifted["reasons"])


@pytest.mark.slow
def test_abrupt_concept_drift_retrains_and_promotes_once_labels_show_it(replay):
    result, rows, _, _, _, _ = replay
    first = rows["b05"]
    # The scores alone do not reveal a new concept; the labels do.
    assert first["dataset_drift"] is False
    assert first["estimated_metric"] - first["metric"] > 0.2
    assert first["retrained"] is True
    assert "performance" in first["triggers"]
    assert any("roc_auc fell to" in r for r in first["reasons"])
    promoted = [k for k in ("b05", "b06") if rows[k]["promoted"]]
    assert promoted, [rows[k]["reasons"] for k in ("b05", "b06")]
    k = promoted[0]
    assert rows[k]["champion_version"] == rows[k]["challenger_version"] > rows[k]["scored_by"]
    # Trained on the first changed batch alone (the batch before it is the old concept) and
    # refit on all of it, the challenger wins at once; the next batch needs no retrain.
    assert promoted == ["b05"], [rows[k]["reasons"] for k in ("b05", "b06")]
    assert not rows["b06"]["retrained"]
    assert rows["b05"]["metric"] < 0.5 < 0.75 < rows["b06"]["metric"]
    assert result.summary["promotions"] == sum(r["promoted"] for r in rows.values())
    assert result.summary["final_champion_version"] == rows["b06"]["champion_version"]


@pytest.mark.slow
def test_the_users_state_and_landing_are_untouched(replay):
    result, _, _, _, before, after = replay
    assert before == after
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()
    assert result.to_dict()["schema_version"] == "1"
    text = result.to_text()
    assert text.splitlines()[0].split() == [
        "batch",
        "quality",
        "drift",
        "roc_auc",
        "est.",
        "roc_auc",
        "retrain",
        "promoted",
        "champ",
    ]
    assert "QUARANTINED" in text and f"retrains {result.summary['retrains']}" in text


def test_unusable_input_is_named_before_anything_runs(tmp_path, demo_frames):
    reference, _ = demo_frames
    config = load_config(write_loop(tmp_path, reference))
    with pytest.raises(DataError, match="batches folder .*nowhere.* does not exist"):
        backtest(config, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no batches here")
    with pytest.raises(DataError, match=r"holds no batch file matching \['\*.parquet', '\*.csv'\]"):
        backtest(config, tmp_path / "empty")
    (tmp_path / "one").mkdir()
    reference.head(50).to_parquet(tmp_path / "one" / "b1.parquet")
    with pytest.raises(InvalidConfigError, match="is the loop's own state_dir"):
        backtest(config, tmp_path / "one", state_dir=config.state_dir)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(InvalidConfigError, match="is not an empty folder"):
        backtest(config, tmp_path / "one", state_dir=tmp_path / "used")
    reference.drop(columns=["age"]).to_parquet(tmp_path / "noage.parquet")
    with pytest.raises(DataError, match=r"noage.parquet lacks column\(s\) \['age'\]"):
        backtest(config, tmp_path / "one", tmp_path / "noage.parquet")
    assert not config.state_dir.exists()
