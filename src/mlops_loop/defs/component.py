"""The loop as a Dagster Component, configured from a `defs.yaml`::

type: mlops_loop.defs.component.MlopsLoopComponent
attributes:
  config_path: loop.yaml        # relative to this defs.yaml
  monitor_cron: "0 * * * *"
  retrain_cron: "0 3 * * 0"
"""

from pathlib import Path

import dagster as dg
from pydantic import Field

from mlops_loop.defs.factory import build_definitions


class MlopsLoopComponent(dg.Component, dg.Model, dg.Resolvable):
    """A self-driving retraining loop: monitoring assets, quality gate, drift, retraining,
    promotion and rollback for one scikit-learn model."""

    config_path: str = Field(description="The loop YAML, relative to this component's folder.")
    monitor_cron: str = Field(default="0 * * * *", description="Cron of monitor_schedule.")
    retrain_cron: str = Field(default="0 3 * * 0", description="Cron of retrain_schedule.")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        path = Path(self.config_path)
        if not path.is_absolute():
            path = context.path / path
        return build_definitions(
            path, monitor_cron=self.monitor_cron, retrain_cron=self.retrain_cron
        )
