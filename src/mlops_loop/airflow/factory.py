"""`build_dags`: the whole loop as Airflow DAGs, for one loop config."""

from __future__ import annotations

import os
import re
from pathlib import Path

from airflow.sdk import DAG

from mlops_loop.airflow.assets import loop_assets
from mlops_loop.airflow.bootstrap import bootstrap_dag
from mlops_loop.airflow.dagargs import DagArgs
from mlops_loop.airflow.labels import labels_dag
from mlops_loop.airflow.monitor import monitor_dag
from mlops_loop.airflow.retrain import retrain_dag
from mlops_loop.airflow.rollback import rollback_dag
from mlops_loop.airflow.source import LoopSource
from mlops_loop.core.config import LoopConfig, load_config
from mlops_loop.core.errors import InvalidConfigError

CONFIG_ENV = "MLOPS_LOOP_CONFIG"


def build_dags(
    config: str | Path | LoopConfig | None = None,
    *,
    prefix: str | None = None,
    monitor_schedule: str | None = "*/5 * * * *",
    labels_schedule: str | None = "*/15 * * * *",
    mlflow_tracking_uri: str | None = None,
) -> dict[str, DAG]:
    """Airflow DAGs for one loop: bootstrap, monitor, retrain, labels and rollback.

    Called at the top level of a file in the `dags/` folder; the DAGs register themselves.

    Args:
        config: a loop YAML path or a `LoopConfig`; default $MLOPS_LOOP_CONFIG. A path is
            validated now, so a broken config shows as an import error naming the field, and
            read again by each task when it runs.
        prefix: put before every DAG and asset id; default the loop's name (`churn-demo` gives
            `churn_demo_monitor`), so several loops share one Airflow.
        monitor_schedule: when `monitor` looks for batches not monitored yet (cron; None: only
            when triggered).
        labels_schedule: when `labels` looks for new label files (cron; None: only when
            triggered).
        mlflow_tracking_uri: overrides $MLOPS_LOOP_TRACKING_URI and the config's
            `mlflow.tracking_uri` (keep a URI holding a credential in the environment).

    Returns:
        {dag id: DAG}.

    Raises:
        InvalidConfigError: no config given, or the config is invalid.
    """
    if config is None:
        if not os.environ.get(CONFIG_ENV):
            raise InvalidConfigError(f"no loop config: pass its path or set ${CONFIG_ENV}")
        config = os.environ[CONFIG_ENV]
    if isinstance(config, LoopConfig):
        loaded = config
        source = LoopSource(
            config_json=config.model_dump_json(), mlflow_tracking_uri=mlflow_tracking_uri
        )
    else:
        loaded = load_config(config)
        source = LoopSource(
            config_path=str(Path(config).resolve()), mlflow_tracking_uri=mlflow_tracking_uri
        )
    if prefix is None:
        prefix = re.sub(r"[^A-Za-z0-9_]+", "_", loaded.name).strip("_") + "_"
    args = DagArgs(prefix=prefix, source=source)
    assets = loop_assets(prefix)
    dags = [
        bootstrap_dag(source, assets, args),
        monitor_dag(source, assets, args, monitor_schedule),
        retrain_dag(source, assets, args),
        labels_dag(source, assets, args, labels_schedule),
        rollback_dag(source, assets, args),
    ]
    return {dag.dag_id: dag for dag in dags}
