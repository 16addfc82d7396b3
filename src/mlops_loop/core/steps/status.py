"""What the loop knows now, for the CLI's `status` and the demo: champion, challenger,
history and every batch's verdicts, and a timeline plot of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.errors import LoopStateError
from mlops_loop.core.registry import CHALLENGER, CHAMPION, METRIC_TAG, MlflowRegistry
from mlops_loop.core.steps.ingest import served_figures
from mlops_loop.core.steps.performance import Performance
from mlops_loop.core.steps.relearn import relearn_history
from mlops_loop.core.steps.result import StepResult
from mlops_loop.core.steps.training import Challenger
from mlops_loop.core.store import LoopStore
from mlops_loop.core.tracking import redact_uri


@dataclass(frozen=True)
class BatchStatus(StepResult):
    """One batch's verdicts as the state folder holds them now."""

    batch: str
    quality_success: bool | None = None  # None: not validated yet
    incidents: list[str] = field(default_factory=list)  # blocking ones, "kind:column"
    dataset_drift: bool | None = None
    drift_share: float | None = None
    metric: float | None = None  # realized, on the labels known now
    estimated_metric: float | None = None
    label_coverage: float | None = None
    champion_version: int | None = None  # the version that scored it
    retrain: bool | None = None
    challenger_version: int | None = None
    promoted: bool | None = None  # None: no promotion decided
    alerts_fired: list[str] = field(default_factory=list)  # rules that started firing
    #: A served batch's online figures (`serving_latency_p99_ms`, ...); None for other batches.
    serving: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record; `serving` only for a served batch (other batches' layout is unchanged)."""
        data = super().to_dict()
        if data["serving"] is None:
            del data["serving"]
        return data

    @property
    def incident_kinds(self) -> list[str]:
        return sorted({i.split(":", 1)[0] for i in self.incidents})


@dataclass(frozen=True)
class LoopStatus(StepResult):
    """The loop's state: the registry's champion and challenger, and every batch."""

    model: str
    tracking_uri: str  # credentials redacted
    champion: int | None
    champion_since: str | None
    champion_metrics: dict[str, Any]
    challenger: int | None
    challenger_decision: str | None
    challenger_metric: float | None
    champion_metric: float | None
    metric_name: str
    history: list[dict[str, Any]]
    batches: list[BatchStatus]
    quarantined: list[str]
    task: str = "binary"  # binary, multiclass or regression
    suite_version: int = 1  # of the quality suite in use: one more per relearn
    suite_relearns: list[dict[str, Any]] = field(default_factory=list)  # oldest first

    def to_dict(self) -> dict[str, Any]:
        """The record, each batch as its own `BatchStatus.to_dict` gives it."""
        data = super().to_dict()
        data["batches"] = [b.to_dict() for b in self.batches]
        return data


def batch_status(config: LoopConfig, key: str, store: LoopStore | None = None) -> BatchStatus:
    """A batch's verdicts, read from the state folder."""
    store = store or LoopStore(config.state_dir)
    quality = store.batch_json(key, "quality") or {}
    drift = store.batch_json(key, "drift") or {}
    perf_json = store.batch_json(key, "performance")
    perf = Performance.from_dict(perf_json) if perf_json else None
    decision = store.batch_json(key, "decision") or {}
    promotion = store.batch_json(key, "promotion")
    challenger = store.batch_json(key, "challenger")
    alerts = store.batch_json(key, "alerts") or {}
    gate_alerts = store.batch_json(key, "gate_alerts") or {}
    served = served_figures(store, key)
    return BatchStatus(
        batch=key,
        quality_success=quality.get("success"),
        incidents=[
            f"{i['kind']}:{i.get('column')}"
            for i in quality.get("incidents", [])
            if i.get("severity") == "error"
        ],
        dataset_drift=drift.get("dataset_drift"),
        drift_share=drift.get("drift_share"),
        metric=None if perf is None else perf.metric,
        estimated_metric=None if perf is None else perf.estimated_metric,
        label_coverage=None if perf is None else perf.label_coverage,
        champion_version=None if perf is None else perf.champion_version,
        retrain=decision.get("retrain"),
        challenger_version=None if challenger is None else Challenger.from_dict(challenger).version,
        promoted=None if promotion is None else bool(promotion["promoted"]),
        alerts_fired=[
            e["rule"]
            for e in [*gate_alerts.get("events", []), *alerts.get("events", [])]
            if e.get("kind") == "firing"
        ],
        serving=None if served is None else served.metrics(),
    )


_FIRST_RUN = "run bootstrap_job (or `mlops-loop demo`) first, or point --config at the loop's YAML"


def require_tracking_store(config: LoopConfig) -> None:
    """Refuse a tracking URI naming a SQLite file that does not exist: MLflow would create an
    empty store there, and report a loop with no champion instead of saying it never ran.

    Raises:
        LoopStateError: naming the file.
    """
    uri = config.tracking_uri
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    if str(path) not in ("", ":memory:") and not path.exists():
        raise LoopStateError(
            f"no MLflow store at {path} (tracking URI {redact_uri(uri)}): the loop has not run "
            f"with this config; {_FIRST_RUN}, or set MLOPS_LOOP_TRACKING_URI to its server"
        )


def require_loop_state(config: LoopConfig) -> None:
    """Refuse a state folder the loop never ran in (missing, or without a reference snapshot),
    creating nothing.

    Raises:
        LoopStateError: naming the folder and what is missing.
    """
    state = config.state_dir
    if not state.is_dir():
        raise LoopStateError(f"no loop state in {state}: the folder does not exist; {_FIRST_RUN}")
    if LoopStore(state).snapshot_info() is None:
        raise LoopStateError(
            f"no loop state in {state}: it holds no reference snapshot (snapshot/snapshot.json); "
            f"{_FIRST_RUN}"
        )
    require_tracking_store(config)


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "None", "") else None
    except (TypeError, ValueError):
        return None


def loop_status(config: LoopConfig, direct: bool = True) -> LoopStatus:
    """What the loop knows now: champion, challenger, history, and every batch's verdicts.

    With `direct` (the default) a local SQLite tracking store is read from its registry tables
    without importing MLflow (`MlflowRegistry.view`); the answer is the client's either way.

    Raises:
        RegistryError: an alias names a version the registry does not hold.
        TrackingError: the tracking server cannot be reached or refused.
    """
    store = LoopStore(config.state_dir)
    view = MlflowRegistry.from_config(config).view(direct=direct)
    aliases, history = view.aliases, view.history
    champion, challenger = aliases.get(CHAMPION), aliases.get(CHALLENGER)
    relearns = relearn_history(config)
    champion_tags = view.version_tags.get(champion, {}) if champion is not None else {}
    challenger_tags = view.version_tags.get(challenger, {}) if challenger is not None else {}
    metric_tag = f"{METRIC_TAG}{config.promotion.metric}"
    return LoopStatus(
        model=config.mlflow.registered_model,
        tracking_uri=redact_uri(config.tracking_uri),
        champion=champion,
        champion_since=champion_tags.get("mlops_loop.champion_since"),
        champion_metrics={
            k.removeprefix(METRIC_TAG): v
            for k, v in champion_tags.items()
            if k.startswith(METRIC_TAG)
        },
        challenger=challenger,
        challenger_decision=challenger_tags.get("mlops_loop.decision"),
        challenger_metric=_float(challenger_tags.get(metric_tag)),
        champion_metric=_float(champion_tags.get(metric_tag)),
        metric_name=config.promotion.metric,
        task=config.task,
        history=history,
        batches=[batch_status(config, key, store) for key in store.batch_keys()],
        quarantined=store.quarantined_keys(),
        suite_version=len(relearns) + 1,
        suite_relearns=[r.to_dict() for r in relearns],
    )


def monitoring_plot(config: LoopConfig) -> str:
    """An SVG timeline of the batches: realized and estimated primary metric, drift share,
    with quarantined batches, rejections and promotions marked."""
    from mlops_loop.core.plots import timeline_svg

    status = loop_status(config)
    batches, name = status.batches, status.metric_name
    marks = []
    for i, b in enumerate(batches):
        if b.quality_success is False:
            marks.append((i, "quarantined", "#c0392b"))
        elif b.promoted:
            marks.append((i, f"v{b.challenger_version} promoted", "#27ae60"))
        elif b.promoted is False:
            marks.append((i, f"v{b.challenger_version} rejected", "#7f8c8d"))
    realized = [b.metric for b in batches]
    estimated = [b.estimated_metric for b in batches]
    values = [v for v in (*realized, *estimated) if v is not None]
    # A metric in [0, 1] shares the drift share's axis; an error in the target's units (or an
    # R² below zero) gets an axis of its own, the drift share moving to the right one.
    own = bool(values) and (min(values) < 0 or max(values) > 1)
    top = max(values) * 1.1 if own else 1.0
    bottom = min(0.0, min(values) * 1.1) if own else 0.0
    return timeline_svg(
        [b.batch for b in batches],
        [
            (f"{name} (realized)", realized, "#2c7fb8"),
            (f"{name} (estimated)", estimated, "#9ecae1"),
            ("drift share", [b.drift_share for b in batches], "#e67e22"),
        ],
        marks,
        title=f"{config.name}: champion performance and drift per batch",
        y_range=(bottom, top if top > bottom else bottom + 1.0),
        right={"drift share"} if own else None,
    )
