"""A loop driven through a real Dagster instance, MLflow on SQLite and Great Expectations.

`monitored_loop` bootstraps one loop and monitors three batches once per session: a stable
batch (batch_001), the broken one (batch_003) and the covariate-drift one (batch_004).
batch_002 lands and is registered as a partition but is never monitored, so the monitor
schedule has something to catch up on. Tests that use it only add runs of their own; none of
them edits what the fixture produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from mlops_loop.core.config import LoopConfig, load_config
from mlops_loop.defs.factory import build_definitions
from tests.conftest import write_loop

NO_TELEMETRY = {"telemetry": {"enabled": False}}
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_job(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    name: str,
    partition_key: str | None = None,
    run_config: dict | None = None,
    tags: dict | None = None,
) -> dg.ExecuteInProcessResult:
    """Execute a job of `defs` in process, recorded in `instance`, without raising on failure."""
    return defs.resolve_job_def(name).execute_in_process(
        instance=instance,
        partition_key=partition_key,
        run_config={**QUIET, **(run_config or {})},
        tags=tags,
        raise_on_error=False,
    )


def materializations(
    instance: dg.DagsterInstance, asset: str, partition: str | None = None
) -> list[Any]:
    """Every materialization record of `asset` (for one partition if given), oldest first."""
    records_filter = dg.AssetRecordsFilter(
        asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None
    )
    return list(instance.fetch_materializations(records_filter, limit=1000, ascending=True).records)


def materialized(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """{asset name: AssetMaterialization} of one run."""
    return {
        ev.asset_key.to_user_string(): ev.materialization
        for ev in result.get_asset_materialization_events()
    }


def tick(
    defs: dg.Definitions, instance: dg.DagsterInstance, sensor: str, cursor: str | None = None
) -> dg.SensorResult:
    with dg.build_sensor_context(
        instance=instance, definitions=defs, resources=defs.resources, cursor=cursor
    ) as context:
        return defs.resolve_sensor_def(sensor)(context)


@dataclass
class Loop:
    root: Path
    config_path: Path
    config: LoopConfig
    defs: dg.Definitions
    instance: dg.DagsterInstance
    runs: dict[str, dg.ExecuteInProcessResult] = field(default_factory=dict)
    cwd: Path | None = None


def new_loop(root: Path, demo_frames, keys: list[str], **overrides) -> Loop:
    reference, batches = demo_frames
    config_path = write_loop(root, reference, {k: batches[k] for k in keys}, **overrides)
    home = root / "dagster_home"
    home.mkdir()
    return Loop(
        root=root,
        config_path=config_path,
        config=load_config(config_path),
        defs=build_definitions(config_path),
        instance=dg.DagsterInstance.local_temp(str(home), overrides=NO_TELEMETRY),
    )


@pytest.fixture(scope="session")
def monitored_loop(tmp_path_factory, demo_frames):
    root = tmp_path_factory.mktemp("monitored")
    # Run from an empty folder: anything MLflow wrote relative to the cwd would show up there.
    cwd = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        loop = new_loop(root, demo_frames, ["batch_001", "batch_002", "batch_003", "batch_004"])
        loop.runs["bootstrap"] = run_job(loop.defs, loop.instance, "bootstrap_job")
        loop.instance.add_dynamic_partitions(
            "batches", ["batch_001", "batch_002", "batch_003", "batch_004"]
        )
        for key in ("batch_001", "batch_003", "batch_004"):
            loop.runs[key] = run_job(loop.defs, loop.instance, "monitor_job", key)
    loop.cwd = cwd
    yield loop
    loop.instance.dispose()
