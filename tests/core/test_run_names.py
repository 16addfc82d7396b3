"""MLflow runs are named for what they did, with a description."""

from mlops_loop.core.steps.run import StepContext, run_description, run_name


def test_runs_are_named_by_job_and_batch():
    monitor = StepContext(
        run_key="r1", triggered_by="dagster run r1 (monitor_job)", job="monitor_job"
    )
    assert run_name(monitor, "quality", "batch_004") == "monitor batch_004"
    assert run_name(monitor, "drift", "batch_004") == "monitor batch_004"  # one run, one name
    retrain = StepContext(run_key="r2", job="retrain_job")
    assert run_name(retrain, "training", "batch_005") == "retrain batch_005"
    assert run_name(StepContext(job="rollback_job"), "rollback") == "rollback"
    # Outside an orchestrator: the step names the run.
    assert run_name(StepContext(), "rollback") == "rollback"
    text = run_description(monitor, "quality", "batch_004")
    assert text.startswith("Quality gate, drift, scoring, performance and the retrain decision")
    assert "batch `batch_004`" in text and "dagster run r1 (monitor_job)" in text
