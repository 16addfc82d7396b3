"""MLflow runs for the loop's steps, through an explicit tracking URI.

MLflow's logging helpers (`log_model`, `log_input`) only work on the fluent API's active run.
`tracked_run` therefore sets the tracking URI for the duration of one step and restores the
previous one afterwards, so nothing leaks into the caller's global MLflow state.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_loop.core.config import ColumnsConfig, LoopConfig
from mlops_loop.core.data import frame_digest
from mlops_loop.core.tracking_errors import mlflow_client, redact_text, redact_uri, tracking_errors

__all__ = ["redact_text", "redact_uri", "resolve_tracking_uri"]

#: Names a tracking URI that overrides the loop YAML's, for the CLI and the Dagster code
#: location alike (a URI holding a credential stays out of the YAML).
TRACKING_URI_ENV = "MLOPS_LOOP_TRACKING_URI"

TAG_RUN_KEY = "mlops_loop.run_key"
TAG_PARTITION = "mlops_loop.partition"
TAG_STEP = "mlops_loop.step"
TAG_ERROR = "mlops_loop.error"


def resolve_tracking_uri(config: LoopConfig, override: str | None = None) -> LoopConfig:
    """`config` with the tracking URI the loop uses: `override` if given, else the variable
    $MLOPS_LOOP_TRACKING_URI if set, else the YAML's `mlflow.tracking_uri`."""
    import os

    uri = override or os.environ.get(TRACKING_URI_ENV)
    if not uri:
        return config
    mlflow = config.mlflow.model_copy(update={"tracking_uri": uri})
    return config.model_copy(update={"mlflow": mlflow})


def ensure_experiment(config: LoopConfig) -> str:
    """The id of the loop's experiment, created with the configured artifact root if new.

    Raises:
        TrackingError: the tracking server cannot be reached or refused.
    """
    client = mlflow_client(config.tracking_uri)
    exp = client.get_experiment_by_name(config.mlflow.experiment)
    if exp is not None:
        return exp.experiment_id
    try:
        # The kind tag makes the MLflow UI open on training runs rather than GenAI traces.
        return client.create_experiment(
            config.mlflow.experiment,
            artifact_location=config.artifact_location,
            tags={"mlflow.experimentKind": "custom_model_development"},
        )
    except Exception:
        # Another process created it between our look-up and our create.
        exp = client.get_experiment_by_name(config.mlflow.experiment)
        if exp is None:
            raise
        return exp.experiment_id


_uri_state = threading.Condition()
_uri_active: dict[str, Any] = {"uri": None, "holders": 0, "saved": None}
_uri_thread = threading.local()


@contextmanager
def mlflow_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at `uri` (tracking and registry) for the block, then restore.

    MLflow keeps the URI in process-wide state, so threads (e.g. two promotions at once) share
    it: blocks for the same URI run together and the previous URI comes back only when the last
    of them ends; a block for another URI waits until none is active. (Restoring on each exit
    would point a still-running step at another store halfway through its run.)

    Raises:
        RuntimeError: a thread already inside a block for one URI opens one for another (it
            would wait for itself).
        TrackingError: the tracking server cannot be reached, refused or failed in the block.
    """
    import mlflow

    with tracking_errors(uri):
        with _pointed_at(uri, mlflow):
            yield


@contextmanager
def _pointed_at(uri: str, mlflow: Any) -> Iterator[None]:
    depth = getattr(_uri_thread, "depth", 0)
    with _uri_state:
        if depth and _uri_active["uri"] != uri:
            raise RuntimeError(
                f"MLflow is pointed at {redact_uri(_uri_active['uri'])} for this thread's "
                f"current step; a block for {redact_uri(uri)} cannot open inside it"
            )
        while _uri_active["holders"] and _uri_active["uri"] != uri:
            _uri_state.wait()
        if not _uri_active["holders"]:
            _uri_active["saved"] = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
            _uri_active["uri"] = uri
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)
        _uri_active["holders"] += 1
    _uri_thread.depth = depth + 1
    try:
        yield
    finally:
        _uri_thread.depth = depth
        with _uri_state:
            _uri_active["holders"] -= 1
            if not _uri_active["holders"]:
                tracking, registry = _uri_active["saved"]
                mlflow.set_tracking_uri(tracking)
                mlflow.set_registry_uri(registry)
                _uri_active.update(uri=None, saved=None)
                _uri_state.notify_all()


@contextmanager
def tracked_run(
    config: LoopConfig,
    *,
    run_name: str,
    run_key: str | None = None,
    tags: Mapping[str, str] | None = None,
    system_metrics: bool = False,
    description: str | None = None,
) -> Iterator[Any]:
    """Open (or resume, for the same `run_key`) an MLflow run of the loop's experiment.

    `description` becomes the run's description when the run is created.

    Steps of one orchestrator run share the `run_key` (e.g. the Dagster run id and partition),
    so they log into a single MLflow run that the UI shows as one row.
    """
    import mlflow

    with mlflow_uri(config.tracking_uri):
        experiment_id = ensure_experiment(config)
        run_id = None
        if run_key:
            found = mlflow.search_runs(
                [experiment_id],
                filter_string=f"tags.`{TAG_RUN_KEY}` = '{run_key}'",
                max_results=1,
                output_format="list",
            )
            run_id = found[0].info.run_id if found else None
        all_tags = {**(tags or {}), **({TAG_RUN_KEY: run_key} if run_key else {})}
        if description and run_id is None:
            all_tags["mlflow.note.content"] = description
        # nested=True lets a step open its run even if the caller has one of its own active.
        if system_metrics:
            # CPU, memory, disk and network every second while the step runs (needs psutil).
            mlflow.set_system_metrics_sampling_interval(1)
            mlflow.set_system_metrics_samples_before_logging(1)
        with mlflow.start_run(
            run_id=run_id,
            experiment_id=experiment_id,
            run_name=None if run_id else run_name,
            tags=all_tags,
            nested=mlflow.active_run() is not None,
            log_system_metrics=system_metrics or None,
        ) as run:
            try:
                yield run
            except BaseException as e:
                # The run ends FAILED; say which step failed and why, and count it.
                step = all_tags.get(TAG_STEP, run_name)
                error = redact_text(f"{step}: {type(e).__name__}: {e}", config.tracking_uri)
                mlflow.set_tag(TAG_ERROR, error[:5000])
                mlflow.log_metric("step_failures", 1)
                raise


def log_json(payload: Any, artifact_file: str) -> None:
    import mlflow

    mlflow.log_text(json.dumps(payload, indent=2, default=str), artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    import mlflow

    mlflow.log_text(text, artifact_file)


def log_file(path: Path, artifact_path: str | None = None) -> None:
    import mlflow

    mlflow.log_artifact(str(path), artifact_path)


def log_dataset(
    frame: pd.DataFrame,
    *,
    name: str,
    context: str,
    source: str,
    target: str | None = None,
    columns: ColumnsConfig | None = None,
) -> str:
    """Record `frame` as a dataset input of the active run; returns its content digest.

    The private columns of `columns` are hashed or dropped before MLflow sees the frame; the
    digest is that of the frame as stored, so the record still names the stored data.
    """
    import warnings

    import mlflow
    import mlflow.data.pandas_dataset

    from mlops_loop.core.privacy import mask_private

    digest = frame_digest(frame)
    frame = mask_private(frame, columns)
    # MLflow warns that a plain name could be several kinds of source, and that integer
    # columns cannot hold NaN; neither matters for a lineage record.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.pandas_dataset.from_pandas(
            frame,
            source=source,
            name=name,
            digest=digest,
            targets=target if target in frame.columns else None,
        )
        if len(frame) > SCHEMA_SAMPLE_ROWS:
            from mlflow.models import infer_signature

            # MLflow infers the schema value by value in Python (tens of seconds for 100k
            # rows); the same schema comes from a sample that keeps each column's first null.
            dataset.__dict__["schema"] = infer_signature(schema_sample(frame)).inputs

    mlflow.log_input(dataset, context=context)
    return digest


#: Rows of a logged dataset from which its schema is inferred.
SCHEMA_SAMPLE_ROWS = 1_000


def schema_sample(frame: pd.DataFrame) -> pd.DataFrame:
    """The first `SCHEMA_SAMPLE_ROWS` rows, plus the first row holding a null in each column
    that has one (so that a column's "required" flag is inferred as from the whole frame)."""
    nulls = frame.isna()
    first_nulls = {int(nulls[c].to_numpy().argmax()) for c in frame.columns if nulls[c].any()}
    rows = sorted(set(range(min(len(frame), SCHEMA_SAMPLE_ROWS))) | first_nulls)
    return frame.iloc[rows]


def log_metrics(metrics: Mapping[str, Any], prefix: str = "") -> None:
    """Log the numeric, finite entries of `metrics`."""
    import math

    import mlflow

    clean = {
        f"{prefix}{k}": float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    if clean:
        mlflow.log_metrics(clean)


def scratch_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="mlops-loop-")


def log_params(params: Mapping[str, Any]) -> None:
    """Log params, skipping any the run already has (steps of one run share it)."""
    import mlflow

    run = mlflow.active_run()
    have = set(mlflow.get_run(run.info.run_id).data.params) if run else set()
    fresh = {k: str(v)[:6000] for k, v in params.items() if k not in have}
    if fresh:
        mlflow.log_params(fresh)


def config_params(config: LoopConfig, *sections: str) -> dict[str, Any]:
    """Flatten the named sections of the loop config into `section.field` params."""
    out: dict[str, Any] = {}
    for section in sections:
        for key, value in getattr(config, section).model_dump().items():
            if isinstance(value, dict):
                out.update({f"{section}.{key}.{k}": v for k, v in value.items()})
            else:
                out[f"{section}.{key}"] = value
    return out
