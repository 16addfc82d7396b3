"""The `mlops-loop` command as a user runs it: a real subprocess."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "mlops_loop.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_help_lists_the_commands():
    out = run("--help")
    assert out.returncode == 0
    for command in ("demo", "status", "rollback", "drift", "validate"):
        assert command in out.stdout


def _frames(tmp_path):
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(0, 1, 2000), "c": rng.choice(["a", "b"], 2000)})
    cur = pd.DataFrame({"x": rng.normal(1, 1, 2000), "c": rng.choice(["a", "b"], 2000)})
    ref.to_csv(tmp_path / "ref.csv", index=False)
    cur.to_parquet(tmp_path / "cur.parquet", index=False)
    return tmp_path / "ref.csv", tmp_path / "cur.parquet"


def test_drift_and_validate_print_json_and_exit_zero(tmp_path):
    ref, cur = _frames(tmp_path)
    drift = run("drift", str(ref), str(cur))
    assert drift.returncode == 0, drift.stderr
    report = json.loads(drift.stdout)
    assert report["dataset_drift"] is True
    assert {f["name"] for f in report["features"] if f["drifted"]} == {"x"}
    quality = run(
        "validate", str(ref), str(cur), "--format", "html", "--output", str(tmp_path / "q.html")
    )
    assert quality.returncode == 0, quality.stderr
    assert "<html" in (tmp_path / "q.html").read_text().lower()


def test_unusable_input_exits_nonzero_naming_the_problem(tmp_path):
    ref, _ = _frames(tmp_path)
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    out = run("drift", str(ref), str(tmp_path / "broken.parquet"))
    assert out.returncode == 2
    assert "broken.parquet: cannot be read as parquet" in out.stderr
    assert "Traceback" not in out.stderr
    out = run("drift", str(ref), str(tmp_path / "missing.csv"))
    assert out.returncode == 2 and "missing.csv: no such file" in out.stderr


def test_bad_config_is_named(tmp_path):
    (tmp_path / "loop.yaml").write_text(
        "columns: {numerical: [x], target: y}\nsources: {reference: r.csv, landing: l}\n"
        "promotion: {metric: specificity}\n"
    )
    out = run("status", "--config", str(tmp_path / "loop.yaml"))
    assert out.returncode == 2
    assert "promotion.metric" in out.stderr and "'specificity'" in out.stderr


def test_validate_json_is_exactly_the_python_result(tmp_path):
    from mlops_loop import validate_batch

    ref, cur = _frames(tmp_path)
    broken = pd.read_parquet(cur)
    broken["x"] = broken["x"] * 1000
    broken.to_parquet(tmp_path / "broken.parquet", index=False)
    out = run("validate", str(ref), str(tmp_path / "broken.parquet"))
    assert out.returncode == 0, out.stderr  # a failed batch is a verdict, not an error
    cli = json.loads(out.stdout)
    py = validate_batch(pd.read_csv(ref), broken).to_dict()
    for result in (cli, py):
        result["statistics"].pop("seconds")  # wall time differs run to run
    assert cli == py
    assert cli["success"] is False
    assert [(i["kind"], i["column"]) for i in cli["incidents"]] == [("out_of_range", "x")]


def _history(tmp_path, kinds):
    from mlops_loop.demo.data import Episode, generate
    from tests.conftest import write_loop

    episodes = [Episode(f"week_{i + 1:02d}", k, k, rows=600) for i, k in enumerate(kinds)]
    reference, frames = generate(seed=9, reference_rows=2000, scenario=episodes)
    config = write_loop(tmp_path, reference)
    (tmp_path / "history").mkdir()
    for name, frame in frames.items():
        frame.to_csv(tmp_path / "history" / f"{name}.csv", index=False)
    return config, tmp_path / "data" / "reference.parquet", tmp_path / "history"


@pytest.mark.slow
def test_backtest_json_is_exactly_the_python_result(tmp_path):
    from mlops_loop.core.backtest import backtest
    from mlops_loop.core.config import load_config

    config, reference, history = _history(tmp_path, ["stable", "concept"])
    out = run(
        "backtest",
        "--config",
        str(config),
        "--reference",
        str(reference),
        "--batches",
        str(history),
        "--format",
        "json",
        "--state",
        str(tmp_path / "replay"),
    )
    assert out.returncode == 0, out.stderr
    assert "[####" not in out.stderr  # no progress bar when stderr is not a terminal
    cli = json.loads(out.stdout)
    py = backtest(load_config(config), history, reference).to_dict()
    assert cli == py
    assert [b["batch"] for b in cli["batches"]] == ["week_01", "week_02"]
    assert cli["batches"][1]["retrained"] is True
    assert (tmp_path / "replay" / "state" / "mlflow.db").exists()
    assert not (tmp_path / "state").exists()  # the config's own state_dir


def test_backtest_names_unusable_input(tmp_path):
    config, _, history = _history(tmp_path, ["stable"])
    out = run("backtest", "--config", str(config), "--batches", str(tmp_path / "gone"))
    assert out.returncode == 2
    assert "batches folder" in out.stderr and "gone" in out.stderr
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "bad.yaml").write_text(
        "columns: {numerical: [x], target: y}\nsources: {reference: r.csv, landing: l}\n"
        "retrain: {metric_drop: -1}\n"
    )
    out = run("backtest", "--config", str(tmp_path / "bad.yaml"), "--batches", str(history))
    assert out.returncode == 2 and "retrain.metric_drop" in out.stderr


def _cut_csv(tmp_path):
    """A CSV cut in the middle of a row, as a half-written upload leaves it."""
    ref, cur = _frames(tmp_path)
    full = tmp_path / "full.csv"
    pd.read_parquet(cur).to_csv(full, index=False)
    data = full.read_bytes()
    cut = tmp_path / "cut.csv"
    cut.write_bytes(data[: data.index(b"\n", len(data) // 2) + 5])
    return ref, cut, data[: data.index(b"\n", len(data) // 2) + 5].count(b"\n") + 1


@pytest.mark.parametrize("command", ["drift", "validate"])
def test_a_csv_cut_mid_row_is_refused_naming_the_file_and_line(tmp_path, command):
    ref, cut, line = _cut_csv(tmp_path)
    out = run(command, str(ref), str(cut))
    assert out.returncode == 2, out.stdout[:500]
    assert f"cut.csv: line {line} " in out.stderr and "cut short" in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stdout == ""


def test_predict_refuses_a_csv_cut_mid_row(tmp_path, demo_frames):
    from tests.conftest import write_loop

    reference, batches = demo_frames
    config = write_loop(tmp_path, reference)
    full = tmp_path / "rows.csv"
    batches["batch_001"].to_csv(full, index=False)
    data = full.read_bytes()
    full.write_bytes(data[: len(data) // 2])
    out = run("predict", str(full), "--config", str(config))
    assert out.returncode == 2
    assert "rows.csv: line " in out.stderr and "cut short" in out.stderr
    assert out.stdout == ""


def test_drift_of_an_empty_batch_exits_nonzero_saying_so(tmp_path):
    ref, cur = _frames(tmp_path)
    pd.read_parquet(cur).iloc[:0].to_parquet(tmp_path / "empty.parquet", index=False)
    out = run("drift", str(ref), str(tmp_path / "empty.parquet"))
    assert out.returncode == 2
    assert out.stderr == (
        "mlops-loop drift: error: the current batch is empty (0 rows); drift needs rows on "
        "both sides to compare\n"
    )
