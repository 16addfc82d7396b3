"""The `mlops-loop` command as a user runs it: a real subprocess."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd


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
