"""`mlops-loop backtest` on the regression and three-class streams, from a loop YAML with no
`task`: the task is inferred, every batch is replayed, and the loop beats the first champion
kept throughout (the model never retrained)."""

import json

import pytest
import yaml

from mlops_loop.demo.task_streams import demand_stream, task_stream_loop, triage_stream
from tests.test_cli import run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("kind", "stream", "task", "metric"),
    [
        ("demand", demand_stream, "regression", "rmse"),
        ("triage", triage_stream, "multiclass", "accuracy"),
    ],
)
def test_backtest_infers_the_task_and_beats_never_retraining(tmp_path, kind, stream, task, metric):
    reference, batches = stream(2, batches=8, rows=600)
    reference.to_parquet(tmp_path / "reference.parquet", index=False)
    (tmp_path / "history").mkdir()
    for key, frame in batches.items():
        frame.to_parquet(tmp_path / "history" / f"{key}.parquet", index=False)
    config = task_stream_loop(tmp_path, kind, {"params": {"max_iter": 60}})
    assert "task" not in yaml.safe_load(config.read_text())["columns"]
    args = ["backtest", "--config", str(config), "--batches", str(tmp_path / "history")]
    out = run(*args, "--format", "json", "--state", str(tmp_path / "replay"))
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    rows = report["batches"]
    assert [r["batch"] for r in rows] == list(batches)
    assert all(r["quality_success"] and r["metric"] is not None for r in rows), rows
    assert {r["metric_name"] for r in rows} == {metric}
    summary = report["summary"]
    assert summary["promotions"] >= 1
    loop = sum(r["metric"] for r in rows) / len(rows)
    never = sum(r["first_champion_metric"] for r in rows) / len(rows)
    better = loop < never if task == "regression" else loop > never
    assert better, (loop, never, summary)
    # The table a person reads says which metric, and the gain over never retraining: the
    # same report, rendered (`--format text` of the JSON above, without replaying again).
    from mlops_loop.core.backtest import BacktestResult, BatchOutcome

    text = BacktestResult(
        loop=report["loop"],
        metric_name=report["metric_name"],
        batches=[BatchOutcome(**b) for b in rows],
        problems=report["problems"],
    ).to_text()
    assert f"mean {metric}" in text and "gain +" in text
