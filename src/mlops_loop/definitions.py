"""The demo loop's Dagster definitions, for `dagster dev` (see workspace.yaml).

The loop config comes from $MLOPS_LOOP_CONFIG, else `.demo/loop.yaml` (written by `make demo`).
$MLOPS_LOOP_EXECUTOR picks the executor: `in_process` (the default: every step of a run in the
run's process) or `multiprocess` (a subprocess per step). $MLOPS_LOOP_TRACKING_URI, when set,
overrides the config's `mlflow.tracking_uri` through `dg.EnvVar`, so a URI holding a credential
is read from the environment where each step runs and never shown in Dagster's UI.
"""

import os
from pathlib import Path

import dagster as dg

from mlops_loop.core.errors import InvalidConfigError
from mlops_loop.core.tracking import TRACKING_URI_ENV
from mlops_loop.defs.factory import build_definitions


@dg.definitions
def defs() -> dg.Definitions:
    path = Path(os.environ.get("MLOPS_LOOP_CONFIG", ".demo/loop.yaml"))
    if not path.exists():
        raise InvalidConfigError(
            f"no loop config at {path.resolve()}: run `make demo` first, or "
            "set MLOPS_LOOP_CONFIG to your loop's YAML file"
        )
    return build_definitions(
        path,
        executor=_executor(os.environ.get("MLOPS_LOOP_EXECUTOR")),
        mlflow_tracking_uri=(
            dg.EnvVar(TRACKING_URI_ENV) if os.environ.get(TRACKING_URI_ENV) else None
        ),
    )


def _executor(name: str | None) -> dg.ExecutorDefinition | None:
    choices = {"in_process": dg.in_process_executor, "multiprocess": dg.multiprocess_executor}
    if not name:
        return None
    if name not in choices:
        raise InvalidConfigError(
            f"MLOPS_LOOP_EXECUTOR={name!r} is not an executor; expected one of {sorted(choices)}"
        )
    return choices[name]
