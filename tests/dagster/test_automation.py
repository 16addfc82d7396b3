"""Automation respects the quality gate (eager() alone would not)."""

import shutil

import dagster as dg

from tests.dagster.conftest import new_loop, run_job


def requested(result, asset: str, partition: str) -> bool:
    return partition in result.get_requested_partitions(dg.AssetKey(asset))


def materialize_batch_only(loop, key: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [loop.defs.resolve_assets_def("monitored_batch")],
        instance=loop.instance,
        partition_key=key,
        raise_on_error=False,
    )


def test_downstream_follows_a_batch_only_after_the_gate_passes(tmp_path, demo_frames):
    loop = new_loop(tmp_path, demo_frames, ["batch_003"])
    try:
        assert run_job(loop.defs, loop.instance, "bootstrap_job").success
        loop.instance.add_dynamic_partitions("batches", ["batch_003"])
        first = dg.evaluate_automation_conditions(defs=loop.defs, instance=loop.instance)

        # The broken batch is materialized (and quarantined) by hand: the run succeeds, its
        # check fails, and nothing follows it.
        broken = materialize_batch_only(loop, "batch_003")
        assert broken.success
        [gate] = [c for c in broken.get_asset_check_evaluations() if c.check_name == "quality_gate"]
        assert gate.passed is False
        after_broken = dg.evaluate_automation_conditions(
            defs=loop.defs, instance=loop.instance, cursor=first.cursor
        )
        for asset in ("drift_report", "scored_batch", "model_performance", "retrain_decision"):
            assert not requested(after_broken, asset, "batch_003"), asset

        # Upstream re-delivers a clean file; re-materializing the batch passes the gate, and
        # the monitoring steps that depend on it are requested.
        _, batches = demo_frames
        landed = loop.config.sources.landing / "batch_003.parquet"
        batches["batch_001"].to_parquet(landed.with_suffix(".tmp"), index=False)
        shutil.move(landed.with_suffix(".tmp"), landed)
        assert materialize_batch_only(loop, "batch_003").success
        after_fix = dg.evaluate_automation_conditions(
            defs=loop.defs, instance=loop.instance, cursor=after_broken.cursor
        )
        assert requested(after_fix, "drift_report", "batch_003")
        assert requested(after_fix, "scored_batch", "batch_003")
    finally:
        loop.instance.dispose()
