"""The `mlops-loop` command as a user runs it: a real subprocess."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mlops_loop.cli import main
from mlops_loop.core.config import load_config


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
    # The same, but for the wall seconds training took in each run.
    assert _untimed(cli) == _untimed(py)
    assert cli["summary"]["training_seconds"] > 0
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


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_status_without_loop_state_says_so_and_creates_nothing(tmp_path, demo_frames):
    from tests.conftest import write_loop

    config = write_loop(tmp_path, demo_frames[0].head(200))
    before = _listing(tmp_path)
    out = run("status", "--config", str(config), "--plot", str(tmp_path / "plots" / "p.svg"))
    assert out.returncode == 2, out.stderr
    assert f"no loop state in {tmp_path / 'state'}: the folder does not exist" in out.stderr
    assert "bootstrap_job" in out.stderr and "Traceback" not in out.stderr
    assert _listing(tmp_path) == before  # no mlflow.db, no state folder, no plot folder
    (tmp_path / "state").mkdir()
    out = run("status", "--config", str(config))
    assert out.returncode == 2 and "holds no reference snapshot" in out.stderr
    assert _listing(tmp_path) == [*before, "state"]


def test_output_folders_are_created_or_refused(tmp_path):
    ref, cur = _frames(tmp_path)
    target = tmp_path / "reports" / "week 1" / "drift.json"
    out = run("drift", str(ref), str(cur), "--output", str(target))
    assert out.returncode == 0, out.stderr
    assert json.loads(target.read_text())["dataset_drift"] is True
    (tmp_path / "taken").write_text("a file")
    for args, where in (
        (["--output", str(tmp_path / "taken" / "drift.json")], "taken is a file, not a folder"),
        (["--output", str(tmp_path / "reports")], "is a folder; expected the path of a file"),
    ):
        out = run("validate", str(ref), str(cur), *args)
        assert out.returncode == 2, out.stderr
        assert f"mlops-loop validate: error: --output {args[1]}: " in out.stderr
        assert where in out.stderr and "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def ran_loop(tmp_path_factory, demo_frames):
    """A loop bootstrapped through the core steps (v1 champion), plus a v2 challenger the
    promotion rejected."""
    from mlops_loop.core.config import load_config
    from mlops_loop.core.registry import MlflowRegistry
    from mlops_loop.core.steps.models import log_and_register
    from mlops_loop.core.steps.reference import ensure_champion, take_reference_snapshot
    from mlops_loop.core.tracking import tracked_run
    from mlops_loop.core.training import train_model
    from tests.conftest import write_loop

    root = tmp_path_factory.mktemp("ran")
    path = write_loop(root, demo_frames[0].head(1500))
    config = load_config(path)
    take_reference_snapshot(config)
    ensure_champion(config)
    model = train_model(demo_frames[0].head(300), config.model, config.columns)
    with tracked_run(config, run_name="challenger"):
        version = log_and_register(config, model, demo_frames[0].head(20))
    MlflowRegistry.from_config(config).tag_version(
        version,
        {
            "mlops_loop.metric.roc_auc": 0.6,
            "mlops_loop.decision": "rejected",
            "mlops_loop.rejected_reason": "roc_auc 0.600 is worse than the champion's",
        },
    )
    (root / "rows.csv").write_text(demo_frames[0].head(5).to_csv(index=False))
    return root, path, config


@pytest.mark.slow
def test_status_plot_into_a_new_folder_and_rollback_refuses_a_rejected_version(ran_loop):
    root, path, _ = ran_loop
    plot = root / "out" / "plots" / "timeline.svg"
    out = run("status", "--config", str(path), "--plot", str(plot))
    assert out.returncode == 0, out.stderr
    assert "champion   : v1" in out.stdout and plot.read_text().startswith("<svg")
    out = run("rollback", "--config", str(path), "--to", "2", "--reason", "try v2")
    assert out.returncode == 2
    assert (
        "version 2 of 'churn-model' was never champion (its promotion was rejected: roc_auc "
        "0.600 is worse than the champion's)" in out.stderr
    )
    assert "--force" in out.stderr and "Traceback" not in out.stderr
    out = run("rollback", "--config", str(path), "--to", "2", "--reason", "try v2", "--force")
    assert out.returncode == 0, out.stderr
    assert "champion moved from v1 to v2" in out.stdout
    assert run("rollback", "--config", str(path), "--to", "1", "--reason", "back").returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["unreachable", "401", "500"])
def test_a_failing_tracking_server_is_one_line_without_the_password(ran_loop, tmp_path, mode):
    """status, rollback and predict against a tracking server that cannot be reached, refuses
    or fails: exit 2 with one line naming the URI redacted, no traceback, no password; from
    the YAML, and from $MLOPS_LOOP_TRACKING_URI, which wins over the YAML's own store."""
    import os

    import yaml

    from tests.tracking_stub import FAILURES, PASSWORD, failing_tracking_uri, files_holding, shown

    root, path, config = ran_loop
    commands = {
        "status": ["status"],
        "rollback": ["rollback", "--to", "previous", "--reason", "server down"],
        "predict": ["predict", str(root / "rows.csv")],
    }
    with failing_tracking_uri(mode) as uri:
        data = yaml.safe_load(path.read_text())
        data["mlflow"] = {**data.get("mlflow", {}), "tracking_uri": uri}
        data["state_dir"] = str(config.state_dir)
        data["sources"] = config.sources.model_dump(mode="json")
        in_yaml = tmp_path / "loop.yaml"
        in_yaml.write_text(yaml.safe_dump(data))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
        runs = {}
        for name, args in commands.items():
            runs[f"{name} (yaml)"] = _run_env(env, *args, "--config", str(in_yaml))
            runs[f"{name} (env)"] = _run_env(
                {**env, "MLOPS_LOOP_TRACKING_URI": uri}, *args, "--config", str(path)
            )
    for where, out in runs.items():
        assert out.returncode == 2, (where, out.stdout, out.stderr)
        expected = f"error: MLflow tracking server {shown(uri)} {FAILURES[mode]}"
        assert expected in out.stderr, (where, out.stderr)
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, where
        assert PASSWORD not in out.stdout + out.stderr, where
    assert not files_holding(config.state_dir)


def _run_env(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "mlops_loop.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


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


@pytest.mark.slow
def test_status_prints_no_none_after_a_first_champion_a_quarantine_and_a_rollback(
    tmp_path, demo_frames
):
    from mlops_loop.core.config import load_config
    from mlops_loop.core.registry import MlflowRegistry
    from mlops_loop.core.steps.ingest import ingest_batch
    from mlops_loop.core.steps.models import log_and_register
    from mlops_loop.core.steps.quality import check_quality
    from mlops_loop.core.steps.reference import ensure_champion, take_reference_snapshot
    from mlops_loop.core.steps.rollback import rollback
    from mlops_loop.core.tracking import tracked_run
    from mlops_loop.core.training import train_model
    from tests.conftest import write_loop

    reference, batches = demo_frames
    path = write_loop(
        tmp_path, reference.head(1500), {k: batches[k] for k in ("batch_001", "batch_003")}
    )
    config = load_config(path)
    take_reference_snapshot(config)
    ensure_champion(config)  # v1, the first champion: its history entry has no "from"
    for key in ("batch_001", "batch_003"):  # one accepted but not measured, one quarantined
        ingest_batch(config, key, config.sources.landing / f"{key}.parquet")
        check_quality(config, key)
    model = train_model(reference.head(300), config.model, config.columns)
    with tracked_run(config, run_name="challenger"):
        version = log_and_register(config, model, reference.head(20))
    MlflowRegistry.from_config(config).tag_version(
        version, {"mlops_loop.metric.roc_auc": 0.6, "mlops_loop.decision": "rejected"}
    )
    reason = "the 2026-03-01 export doubled income; 12345.678 rows of reasons " * 3
    rollback(config, str(version), reason, force=True)

    out = run("status", "--config", str(path))
    assert out.returncode == 0, out.stderr
    assert "None" not in out.stdout, out.stdout
    assert "champion   : v2  roc_auc 0.600" in out.stdout
    assert "v1 (first champion)" in out.stdout and "v1 -> v2" in out.stdout
    assert "batch_003: QUARANTINED (" in out.stdout
    assert "batch_001: quality pass; drift -; roc_auc no labels yet" in out.stdout
    # A long reason is cut at a word boundary, never inside a number.
    [line] = [ln for ln in out.stdout.splitlines() if " rollback " in ln]
    shown = line.split(": ", 1)[1].removesuffix(" ...").split()
    assert line.endswith(" ...") and shown and all(word in reason.split() for word in shown)


def test_demo_prepare_only_writes_the_stream_and_runs_nothing(tmp_path, capsys):
    workdir = tmp_path / "demo"
    assert main(["demo", "--workdir", str(workdir), "--prepare-only"]) == 0
    assert "land them in" in capsys.readouterr().out
    config = load_config(workdir / "loop.yaml")
    assert sorted(p.stem for p in (workdir / "incoming").glob("*.parquet"))[:2] == [
        "batch_001",
        "batch_002",
    ]
    assert (workdir / "incoming_labels" / "batch_001_labels.csv").exists()
    assert list(config.sources.landing.iterdir()) == []
    assert not config.state_dir.exists() or not any(config.state_dir.iterdir())


def _untimed(value):
    """A backtest report without its timings (`training_seconds`), which differ run to run."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k != "training_seconds"}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value
