"""`build_definitions`: the whole loop as Dagster `Definitions`, for one loop config."""

from pathlib import Path

import dagster as dg

from mlops_loop.core.config import LoopConfig, load_config
from mlops_loop.defs.assets import ALL_ASSETS
from mlops_loop.defs.jobs import (
    bootstrap_job,
    labels_job,
    monitor_job,
    relearn_suite_job,
    remeasure_job,
    retrain_job,
    rollback_job,
)
from mlops_loop.defs.resources import LoopResource
from mlops_loop.defs.schedules import monitor_schedule, retrain_schedule
from mlops_loop.defs.sensors import (
    failure_sensor,
    label_sensor,
    landing_sensor,
    remeasure_sensor,
    retrain_sensor,
    revalidate_sensor,
)


def build_definitions(
    config: str | Path | LoopConfig,
    *,
    monitor_cron: str = "0 * * * *",
    retrain_cron: str = "0 3 * * 0",
    executor: dg.ExecutorDefinition | None = None,
    mlflow_tracking_uri: str | dg.EnvVar | None = None,
) -> dg.Definitions:
    """Dagster definitions for one loop.

    Args:
        config: a loop YAML path or a `LoopConfig`. A path is validated now, so a broken config
            fails when the code location loads, naming the field.
        monitor_cron: when `monitor_schedule` catches up on unmonitored batches.
        retrain_cron: when `retrain_schedule` retrains whatever drift says.
        executor: defaults to the in-process executor: the loop's steps are short, and a
            subprocess per step would re-import Great Expectations, MLflow and scikit-learn.
        mlflow_tracking_uri: overrides the config's `mlflow.tracking_uri`; pass
            `dg.EnvVar("NAME")` when the URI holds a credential.

    Raises:
        InvalidConfigError: the config is invalid.
    """
    if isinstance(config, LoopConfig):
        resource = LoopResource(
            config_json=config.model_dump_json(), mlflow_tracking_uri=mlflow_tracking_uri
        )
    else:
        load_config(config)
        resource = LoopResource(
            config_path=str(Path(config).resolve()), mlflow_tracking_uri=mlflow_tracking_uri
        )
    return dg.Definitions(
        assets=ALL_ASSETS,
        jobs=[
            bootstrap_job,
            monitor_job,
            retrain_job,
            rollback_job,
            labels_job,
            remeasure_job,
            relearn_suite_job,
        ],
        sensors=[
            landing_sensor,
            retrain_sensor,
            label_sensor,
            remeasure_sensor,
            revalidate_sensor,
            failure_sensor,
        ],
        schedules=[monitor_schedule(monitor_cron), retrain_schedule(retrain_cron)],
        resources={"loop": resource},
        executor=executor or dg.in_process_executor,
    )
