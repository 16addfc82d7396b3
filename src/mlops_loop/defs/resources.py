"""The loop resource: hands every asset the validated loop configuration.

The resource holds no secret. A tracking URI that carries one (a token in the URL, a database
password) is given as `mlflow_tracking_uri=dg.EnvVar("...")`: Dagster resolves it in the
process that runs the step, and its UI and run storage show only the variable's name. Without
it, $MLOPS_LOOP_TRACKING_URI, then the YAML, name the store: the resolution the CLI uses too.
"""

import dagster as dg
from pydantic import Field

from mlops_loop.core.config import LoopConfig, load_config
from mlops_loop.core.tracking import resolve_tracking_uri


class LoopResource(dg.ConfigurableResource):
    """The mlops-loop configuration, from a YAML file or an inline JSON document."""

    config_path: str | None = Field(default=None, description="Path of the loop YAML file.")
    config_json: str | None = Field(
        default=None,
        description="The loop config as JSON "
        "(used when a LoopConfig object is passed to the factory).",
    )

    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="Overrides $MLOPS_LOOP_TRACKING_URI and the config's mlflow.tracking_uri; "
        "give it as dg.EnvVar so a URI holding a credential stays out of the YAML and of "
        "Dagster's UI.",
    )

    def load(self) -> LoopConfig:
        if self.config_json:
            config = LoopConfig.model_validate_json(self.config_json)
        elif self.config_path:
            config = load_config(self.config_path)
        else:
            raise dg.DagsterInvalidConfigError(
                "LoopResource needs config_path or config_json", [], None
            )
        return resolve_tracking_uri(config, self.mlflow_tracking_uri)
