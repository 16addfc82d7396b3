"""Where the DAGs' tasks read the loop config from: a YAML path or an inline document."""

from __future__ import annotations

from dataclasses import dataclass

from mlops_loop.core.config import LoopConfig, load_config
from mlops_loop.core.tracking import resolve_tracking_uri


@dataclass(frozen=True)
class LoopSource:
    """The loop config a DAG's tasks load when they run (not when the DAG file is parsed).

    Like the Dagster resource, it holds no secret: a tracking URI that carries one comes from
    $MLOPS_LOOP_TRACKING_URI in the worker's environment, which the core resolves.
    """

    config_path: str | None = None
    config_json: str | None = None
    mlflow_tracking_uri: str | None = None

    def load(self) -> LoopConfig:
        if self.config_json:
            config = LoopConfig.model_validate_json(self.config_json)
        else:
            assert self.config_path is not None, "LoopSource needs config_path or config_json"
            config = load_config(self.config_path)
        return resolve_tracking_uri(config, self.mlflow_tracking_uri)
