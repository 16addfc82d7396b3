"""The loop resource: hands every asset the validated loop configuration."""

import dagster as dg
from pydantic import Field

from mlops_loop.core.config import LoopConfig, load_config


class LoopResource(dg.ConfigurableResource):
    """The mlops-loop configuration, from a YAML file or an inline JSON document."""

    config_path: str | None = Field(default=None, description="Path of the loop YAML file.")
    config_json: str | None = Field(
        default=None,
        description="The loop config as JSON "
        "(used when a LoopConfig object is passed to the factory).",
    )

    def load(self) -> LoopConfig:
        if self.config_json:
            return LoopConfig.model_validate_json(self.config_json)
        if not self.config_path:
            raise dg.DagsterInvalidConfigError(
                "LoopResource needs config_path or config_json", [], None
            )
        return load_config(self.config_path)
