"""Replay the loop over a folder of historical batches, prequentially, to tune a policy.

Each batch goes through the same core steps the Dagster assets call, in name order, on a
state folder of its own: it lands without its labels, is validated, drift-tested, scored by the
model in service and its performance estimated; then its labels land as a late-label file, the
realized performance is measured, and the retrain decision (with training and promotion when it
says so) runs on what is known now. A batch is thus always judged by a model that never saw its
labels. The user's own state, MLflow store and alert channels are never touched.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_loop.core.alerts import AlertsConfig
from mlops_loop.core.config import LoopConfig
from mlops_loop.core.data import read_table, require_columns
from mlops_loop.core.errors import DataError, InvalidConfigError
from mlops_loop.core.performance import improvement
from mlops_loop.core.steps.run import StepContext

SCHEMA_VERSION = "1"
#: Row id the backtest gives every row, so late labels join to exactly their batch's rows
#: even when the data's own ids repeat across batches.
ROW_ID = "_backtest_row"

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class BatchOutcome:
    """What the loop did with one batch."""

    batch: str
    rows: int | None
    quality_success: bool
    incidents: list[str]
    dataset_drift: bool | None
    drift_share: float | None
    metric_name: str
    metric: float | None  # realized, of the model that scored the batch, once labels arrived
    estimated_metric: float | None  # from the scores alone, before the labels
    labelled_rows: int
    scored_by: int | None
    retrained: bool
    challenger_version: int | None
    promoted: bool
    champion_version: int | None  # the champion after this batch
    triggers: list[str]
    reasons: list[str]
    # What retraining cost and bought: wall seconds of training, evaluating, registering and
    # refitting at this batch; the realized metric the first champion would have had here.
    training_seconds: float = 0.0
    first_champion_metric: float | None = None


@dataclass(frozen=True)
class BacktestResult:
    """Per-batch outcomes and a summary, serialised under `schema_version`."""

    loop: str
    metric_name: str
    batches: list[BatchOutcome]
    problems: list[str] = field(default_factory=list)
    schema_version: str = SCHEMA_VERSION

    @property
    def summary(self) -> dict[str, Any]:
        metrics = [b.metric for b in self.batches if b.metric is not None]
        estimates = [b.estimated_metric for b in self.batches if b.estimated_metric is not None]
        pairs = [
            (b.metric, b.first_champion_metric)
            for b in self.batches
            if b.metric is not None and b.first_champion_metric is not None
        ]
        retrains = sum(b.retrained for b in self.batches)
        gain = (
            round(
                improvement(
                    self.metric_name,
                    _mean([p[0] for p in pairs]) or 0.0,
                    _mean([p[1] for p in pairs]) or 0.0,
                ),
                6,
            )
            if pairs
            else None
        )
        return {
            "batches": len(self.batches),
            "accepted": sum(b.quality_success for b in self.batches),
            "quarantined": [b.batch for b in self.batches if not b.quality_success],
            "quality_incidents": sum(len(b.incidents) for b in self.batches),
            "drifted": sum(bool(b.dataset_drift) for b in self.batches),
            "metric_name": self.metric_name,
            "mean_metric": _mean(metrics),
            "mean_estimated_metric": _mean(estimates),
            "retrains": retrains,
            "promotions": sum(b.promoted for b in self.batches),
            "training_seconds": round(sum(b.training_seconds for b in self.batches), 2),
            "mean_metric_first_champion": _mean([p[1] for p in pairs]),
            "metric_gain": gain,
            "metric_gain_per_retrain": (
                round(gain / retrains, 6) if gain is not None and retrains else None
            ),
            "final_champion_version": self.batches[-1].champion_version if self.batches else None,
        }

    def to_dict(self) -> dict[str, Any]:
        """`{"schema_version", "loop", "metric_name", "batches", "summary", "problems"}`."""
        return {
            "schema_version": self.schema_version,
            "loop": self.loop,
            "metric_name": self.metric_name,
            "batches": [asdict(b) for b in self.batches],
            "summary": self.summary,
            "problems": list(self.problems),
        }

    def to_text(self) -> str:
        """A readable table, one line per batch, and the summary."""
        name = self.metric_name
        head = ["batch", "quality", "drift", name, f"est. {name}", "retrain", "promoted", "champ"]
        rows = [
            [
                b.batch,
                "pass" if b.quality_success else "QUARANTINED",
                _flag(b.dataset_drift),
                _num(b.metric),
                _num(b.estimated_metric),
                f"v{b.challenger_version}" if b.retrained else "-",
                "yes" if b.promoted else "-",
                "-" if b.champion_version is None else f"v{b.champion_version}",
            ]
            for b in self.batches
        ]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)).rstrip()]
        for b, row in zip(self.batches, rows, strict=True):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            why = b.incidents if not b.quality_success else b.reasons
            lines.extend(f"    - {r[:160]}" for r in why)
        s = self.summary
        quarantined = ": " + ", ".join(s["quarantined"]) if s["quarantined"] else ""
        lines += [
            "",
            f"batches {s['batches']} (accepted {s['accepted']}, quarantined "
            f"{len(s['quarantined'])}{quarantined}"
            f"; quality incidents {s['quality_incidents']}); dataset drift in {s['drifted']}",
            f"mean {name} {_num(s['mean_metric'])} (estimated {_num(s['mean_estimated_metric'])});"
            f" retrains {s['retrains']}, promotions {s['promotions']}; "
            f"final champion {_version(s['final_champion_version'])}",
            f"cost and benefit: {s['training_seconds']:.1f} s of training; mean {name} of the "
            f"first champion kept throughout {_num(s['mean_metric_first_champion'])}, gain "
            f"{_signed(s['metric_gain'])}, per retrain {_signed(s['metric_gain_per_retrain'])}",
        ]
        lines.extend(f"problem: {p}" for p in self.problems)
        return "\n".join(lines)


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _flag(value: bool | None) -> str:
    return "-" if value is None else ("DRIFT" if value else "no")


def _version(value: int | None) -> str:
    return "-" if value is None else f"v{value}"


def _clean(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


# -- setup -----------------------------------------------------------------------------------------
def batch_files(folder: str | Path, patterns: list[str]) -> tuple[dict[str, Path], list[str]]:
    """The batch files of a folder by key, in name order, and the files left out (and why).

    Raises:
        DataError: the folder does not exist or holds no batch file.
    """
    from mlops_loop.core.store import landed_batches

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"batches folder {str(folder)!r} does not exist or is not a folder")
    files, problems = landed_batches(folder, patterns)
    if not files:
        raise DataError(
            f"batches folder {str(folder)!r} holds no batch file matching {patterns}"
            + (f" ({'; '.join(problems)})" if problems else "")
        )
    return dict(sorted(files.items())), problems


def _fresh_state(state: Path, user_state: Path) -> Path:
    state = state.resolve()
    if state == user_state.resolve() or user_state.resolve() in state.parents:
        raise InvalidConfigError(
            f"backtest state {str(state)!r} is the loop's own state_dir (or inside it); "
            "give a separate folder"
        )
    if state.exists() and (not state.is_dir() or any(state.iterdir())):
        raise InvalidConfigError(
            f"backtest state {str(state)!r} is not an empty folder; give a new or empty one"
        )
    state.mkdir(parents=True, exist_ok=True)
    return state


def working_config(
    config: LoopConfig, reference: Path, work: Path, mlflow_uri: str | None = None
) -> LoopConfig:
    """A copy of `config` whose state, sources and MLflow store all lie under `work`.

    Alert channels are dropped: a replay must not page anyone. Single-row latency samples are
    off: a replay's timings say nothing about serving, and they dominate scoring time. With
    an explicit `mlflow_uri`
    the experiment and the registered model get names of their own, so no real model's
    `champion` alias can move.
    """
    sources = config.sources.model_copy(
        update={
            "reference": reference,
            "landing": work / "landing",
            "labels": work / "labels",
            "patterns": ["*.parquet"],
        }
    )
    columns = config.columns.model_copy(update={"id": ROW_ID, "label_time": None})
    if mlflow_uri is None:
        mlflow = config.mlflow.model_copy(update={"tracking_uri": None, "artifact_location": None})
    else:
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime()) + f"-{os.getpid()}"
        mlflow = config.mlflow.model_copy(
            update={
                "tracking_uri": mlflow_uri,
                "artifact_location": None,
                "experiment": f"{config.mlflow.experiment}-backtest",
                "registered_model": f"{config.mlflow.registered_model}-backtest-{stamp}",
            }
        )
    return config.model_copy(
        update={
            "state_dir": work / "state",
            "sources": sources,
            "columns": columns,
            "mlflow": mlflow,
            "alerts": AlertsConfig(),
            "operations": config.operations.model_copy(update={"single_row_samples": 0}),
        }
    )


def _with_row_ids(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    if ROW_ID in frame.columns:
        raise DataError(f"column {ROW_ID!r} is reserved by the backtest; rename it in the data")
    return frame.assign(**{ROW_ID: [f"{prefix}:{i}" for i in range(len(frame))]})


# -- the replay ------------------------------------------------------------------------------------
def backtest(
    config: LoopConfig,
    batches: str | Path,
    reference: str | Path | None = None,
    *,
    state_dir: str | Path | None = None,
    mlflow_uri: str | None = None,
    progress: Progress | None = None,
) -> BacktestResult:
    """Replay the loop's steps over the batch files of a folder, in name order.

    Args:
        config: the loop configuration (its policies are what is being tried).
        batches: folder of historical batch files (parquet/CSV) with their labels.
        reference: the labelled reference data; `config.sources.reference` when None.
        state_dir: keep the replay's state (and MLflow SQLite store) here, a new or empty
            folder; a temporary folder, removed afterwards, when None.
        mlflow_uri: record to this MLflow tracking URI instead of SQLite in the state folder.
        progress: called with (batches done, batches in all, batch key) after each batch.

    Raises:
        DataError: the folder is missing or holds no batch file, or the reference is unusable.
        InvalidConfigError: `state_dir` is not a new or empty folder apart from the loop's own.
    """
    from mlops_loop.core.registry import MlflowRegistry
    from mlops_loop.core.steps.reference import ensure_champion, take_reference_snapshot

    files, problems = batch_files(batches, config.sources.patterns)
    ref_path = Path(reference) if reference is not None else config.sources.reference
    ref = read_table(ref_path)
    require_columns(ref, [*config.columns.features, config.columns.target], f"reference {ref_path}")
    keep = state_dir is not None
    work = (
        _fresh_state(Path(state_dir), config.state_dir)
        if state_dir is not None
        else Path(tempfile.mkdtemp(prefix="mlops-loop-backtest-"))
    )
    try:
        for sub in ("landing", "labels", "state", "snapshot"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        ref_copy = work / "snapshot" / "reference.parquet"
        _with_row_ids(ref, "reference").to_parquet(ref_copy, index=False)
        cfg = working_config(config, ref_copy, work, mlflow_uri)
        (work / "loop.json").write_text(cfg.model_dump_json(indent=2))
        ctx = StepContext(triggered_by="backtest")
        take_reference_snapshot(cfg, ctx)
        first = ensure_champion(cfg, ctx).champion
        first_model = MlflowRegistry.from_config(cfg).load(first)
        outcomes = []
        for i, (key, path) in enumerate(files.items()):
            outcomes.append(_replay_batch(cfg, key, path, ctx, (first, first_model)))
            if progress is not None:
                progress(i + 1, len(files), key)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return BacktestResult(
        loop=config.name, metric_name=config.promotion.metric, batches=outcomes, problems=problems
    )


def _replay_batch(
    cfg: LoopConfig, key: str, path: Path, ctx: StepContext, first: tuple[int, Any]
) -> BatchOutcome:
    from mlops_loop.core.labels import ingest_labels
    from mlops_loop.core.registry import MlflowRegistry
    from mlops_loop.core.steps.decision import decide_batch_retrain
    from mlops_loop.core.steps.drift import evaluate_batch_drift
    from mlops_loop.core.steps.ingest import ingest_batch
    from mlops_loop.core.steps.performance import measure_performance
    from mlops_loop.core.steps.promotion import promote_challenger
    from mlops_loop.core.steps.quality import check_quality
    from mlops_loop.core.steps.scoring import score_batch
    from mlops_loop.core.steps.training import train_challenger

    target, name = cfg.columns.target, cfg.promotion.metric
    registry = MlflowRegistry.from_config(cfg)
    blank: dict[str, Any] = dict(
        batch=key,
        rows=None,
        incidents=[],
        dataset_drift=None,
        drift_share=None,
        metric_name=name,
        metric=None,
        estimated_metric=None,
        labelled_rows=0,
        scored_by=None,
        retrained=False,
        challenger_version=None,
        promoted=False,
        triggers=[],
        reasons=[],
    )
    try:
        frame = _with_row_ids(read_table(path), key)
    except DataError as e:  # an unusable file is an incident of the history, not of the replay
        return BatchOutcome(
            **{**blank, "incidents": [f"unreadable:{e}"], "reasons": [str(e)]},
            quality_success=False,
            champion_version=registry.champion(),
        )
    # The batch lands unlabelled; its labels arrive once it has been judged.
    landed = work_path(cfg, "landing", key)
    frame.drop(columns=[target], errors="ignore").to_parquet(landed, index=False)
    ingest_batch(cfg, key, landed)
    quality = check_quality(cfg, key, ctx)
    incidents = [f"{i.kind}:{i.column}" for i in quality.incidents if i.severity == "error"]
    if not quality.success:  # quarantined: nothing downstream runs, as in the asset graph
        return BatchOutcome(
            **{
                **blank,
                "rows": len(frame),
                "incidents": incidents,
                "reasons": [i.message for i in quality.incidents if i.severity == "error"],
            },
            quality_success=False,
            champion_version=registry.champion(),
        )
    drift = evaluate_batch_drift(cfg, key, ctx).report
    score_batch(cfg, key, ctx)
    before = measure_performance(cfg, key, ctx)
    if target in frame.columns:
        labels = frame.loc[frame[target].notna(), [ROW_ID, target]]
        label_file = work_path(cfg, "labels", key)
        labels.to_parquet(label_file, index=False)
        arrived = time.time() - 1  # known before the measurement that follows
        os.utime(label_file, (arrived, arrived))
        ingest_labels(cfg)
    after = measure_performance(cfg, key, ctx)
    decision = decide_batch_retrain(cfg, key)
    challenger: int | None = None
    promoted = False
    reasons = list(decision.reasons)
    started = time.perf_counter()
    if decision.retrain:
        challenger = train_challenger(cfg, key, ctx).version
        promotion = promote_challenger(cfg, key, ctx)
        promoted = promotion.promoted
        reasons += [f"promotion: {r}" for r in promotion.decision.reasons]
    seconds = time.perf_counter() - started
    return BatchOutcome(
        **{
            **blank,
            "rows": len(frame),
            "incidents": incidents,
            "dataset_drift": bool(drift.dataset_drift),
            "drift_share": _clean(drift.drift_share),
            "metric": _clean(after.metric),
            "estimated_metric": _clean(before.estimated_metric),
            "labelled_rows": after.labelled_rows,
            "scored_by": after.champion_version,
            "retrained": decision.retrain,
            "challenger_version": challenger,
            "promoted": promoted,
            "triggers": list(decision.triggers),
            "reasons": reasons,
            "training_seconds": round(seconds, 3) if decision.retrain else 0.0,
            "first_champion_metric": (
                _clean(after.metric)
                if after.champion_version == first[0]
                else _first_champion_metric(cfg, frame, first[1])
            ),
        },
        quality_success=True,
        champion_version=registry.champion(),
    )


def work_path(cfg: LoopConfig, folder: str, key: str) -> Path:
    """Where the replay writes a batch's landed file or its label file."""
    base = cfg.sources.landing if folder == "landing" else cfg.sources.labels
    assert base is not None
    return Path(base) / f"{key}.parquet"


def _first_champion_metric(cfg: LoopConfig, frame: pd.DataFrame, model: Any) -> float | None:
    """The realized metric the first champion would have had on a batch's labelled rows."""
    from mlops_loop.core.performance import metric_value
    from mlops_loop.core.training import labelled_rows, labels, predict_scores

    known = labelled_rows(frame, cfg.columns)
    if not len(known):
        return None
    scores = predict_scores(model, known, cfg.columns)
    return _clean(metric_value(cfg.promotion.metric, labels(known, cfg.columns), scores))
