"""The promotion: the challenger against the champion on the same held-out rows, and the
`champion` alias moved only on evidence: `champion_model`."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.errors import DataError
from mlops_loop.core.labels import attach_labels
from mlops_loop.core.performance import metric_value
from mlops_loop.core.plots import paired_bars_svg
from mlops_loop.core.policy import PromotionDecision, decide_promotion
from mlops_loop.core.registry import AliasChange, MlflowRegistry
from mlops_loop.core.steps.result import StepResult
from mlops_loop.core.steps.run import StepContext, describe_active_run, run_name, step_run
from mlops_loop.core.steps.training import Challenger, split_holdout
from mlops_loop.core.store import LoopStore
from mlops_loop.core.tasks import TASK_METRICS
from mlops_loop.core.tracking import config_params, log_json, log_metrics, log_params, log_text
from mlops_loop.core.training import labels, predict_scores


@dataclass(frozen=True)
class Promotion(StepResult):
    """A promotion decided at a batch (`<batch>/promotion.json`)."""

    promoted: bool
    challenger_version: int
    champion_version_before: int | None
    champion_version_after: int | None
    decision: PromotionDecision
    comparison: list[dict[str, Any]] = field(default_factory=list)  # metric, both models
    change: AliasChange | None = None  # the alias move, when promoted
    history_table: str = ""
    #: How the challenger's shadow predictions differed from the served ones on live traffic
    #: (`shadow.ShadowComparison`); None when no served batch carries them.
    live_traffic: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record; `live_traffic` only when there was one (the layout is otherwise
        unchanged)."""
        data = super().to_dict()
        if data["live_traffic"] is None:
            del data["live_traffic"]
        return data


def promote_challenger(config: LoopConfig, key: str, ctx: StepContext | None = None) -> Promotion:
    """Compare the challenger trained at batch `key` with the champion on the same held-out rows;
    move `champion` only if the challenger wins with confidence.

    Works on the explicit version recorded by this batch's retrain, never on a shared alias.
    When served batches carry the challenger's shadow predictions, the report gets a "live
    traffic" section (`shadow.live_traffic`: rows compared, agreement, score differences, both
    models' metric on the rows whose labels landed), logged as `shadow_*` metrics. It is shown
    beside the decision, not part of it: the decision stays on the labelled holdout.
    """
    from mlops_loop.core.shadow import live_traffic

    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    registry = MlflowRegistry.from_config(config)
    saved = store.batch_json(key, "challenger")
    if saved is None:
        raise DataError(f"batch {key!r} has no challenger; materialize challenger_model first")
    challenger = Challenger.from_dict(saved)
    version = int(challenger.version)
    champion = registry.champion()
    # The same held-out rows the challenger was evaluated on: labels known when it was trained.
    as_of = challenger.labels_as_of
    _, holdout = split_holdout(
        attach_labels(config, store.batch(key), datetime.fromisoformat(as_of) if as_of else None),
        config,
    )
    y = labels(holdout, config.columns)
    # The fit that never saw these rows: with `training.refit` the version itself has.
    evaluated = registry.load(challenger.validation_model_uri or version)
    chal_scores = predict_scores(evaluated, holdout, config.columns)
    champ_scores = (
        predict_scores(registry.load(champion), holdout, config.columns)
        if champion is not None
        else None
    )
    segments = {c: holdout[c].to_numpy() for c in config.columns.segments if c in holdout}
    # The retrain decision of this batch: did its labels already show the champion failing?
    triggers = (store.batch_json(key, "decision") or {}).get("triggers") or []
    decision = decide_promotion(
        y,
        chal_scores,
        champ_scores,
        config.promotion,
        seed=config.training.random_state,
        segments=segments,
        champion_failing="performance" in triggers,
    )
    table = _comparison_table(config, y, chal_scores, champ_scores)
    live = live_traffic(config, version)
    with step_run(config, ctx, "promotion", key):
        if live is not None:
            log_metrics(live.metrics())
            log_json(live.to_dict(), "promotion/live_traffic.json")
        log_json(
            {
                "decision": decision.to_dict(),
                "challenger_version": version,
                "champion_version": champion,
                "comparison": table,
            },
            "promotion/decision.json",
        )
        log_text(
            _comparison_html(decision, version, champion, table)
            + (_live_html(live.to_dict()) if live is not None else ""),
            "promotion/comparison.html",
        )
        log_text(_comparison_svg(version, champion, table), "promotion/comparison.svg")
        log_metrics({f"challenger_{r['metric']}": r["challenger"] for r in table})
        log_metrics(
            {f"champion_{r['metric']}": r["champion"] for r in table if r["champion"] is not None}
        )
        log_metrics({"promoted": int(decision.promote), "challenger_version": version})
        log_json(
            [*decision.guards, *decision.segments],
            "promotion/guards_and_segments.json",
        )
        log_params(config_params(config, "promotion"))
    change: AliasChange | None = None
    if decision.promote:
        change = registry.promote(
            version,
            expected_champion=champion,
            reason="; ".join(decision.reasons),
            triggered_by=ctx.triggered_by,
            metrics={r["metric"]: r["challenger"] for r in table},
            user=ctx.user,
        )
        registry.tag_version(version, {"mlops_loop.decision": "promoted"})
    else:
        registry.tag_version(
            version,
            {
                "mlops_loop.decision": "rejected",
                "mlops_loop.rejected_reason": "; ".join(decision.reasons)[:4000],
            },
        )
    verb = "promote" if decision.promote else "reject"
    with step_run(config, ctx, "promotion", key):
        if decision.promote:
            log_history(registry)
        describe_active_run(
            config,
            f"**Challenger v{version} {verb}ed** against champion "
            f"{'none' if champion is None else f'v{champion}'}: " + "; ".join(decision.reasons),
            name=f"{run_name(ctx, 'promotion', key)}, {verb} v{version}",
        )
    result = Promotion(
        promoted=decision.promote,
        challenger_version=version,
        champion_version_before=champion,
        champion_version_after=version if decision.promote else champion,
        decision=decision,
        comparison=table,
        change=change,
        history_table=registry.history_table(),
        live_traffic=None if live is None else live.to_dict(),
    )
    store.write_batch_json(key, "promotion", result.to_dict())
    return result


def _comparison_table(
    config: LoopConfig, y: np.ndarray, chal: np.ndarray, champ: np.ndarray | None
) -> list[dict[str, Any]]:
    rows = []
    for name in TASK_METRICS[config.task]:
        c = metric_value(name, y, chal) if len(y) else float("nan")
        d = metric_value(name, y, champ) if champ is not None and len(y) else None
        rows.append(
            {
                "metric": name,
                "challenger": None if np.isnan(c) else round(c, 6),
                "champion": None if d is None or np.isnan(d) else round(d, 6),
            }
        )
    return rows


def _comparison_svg(chal: int, champ: int | None, table: list[dict[str, Any]]) -> str:
    rows = [(r["metric"], r["challenger"], r["champion"]) for r in table]
    return paired_bars_svg(
        rows, f"challenger v{chal}", f"champion v{champ}", "Same held-out rows, both models"
    )


def _comparison_html(
    decision: PromotionDecision, chal: int, champ: int | None, table: list[dict[str, Any]]
) -> str:
    verdict = "PROMOTED" if decision.promote else "REJECTED"
    rows = "".join(
        f"<tr><td>{r['metric']}</td><td>{r['challenger']}</td><td>{r['champion']}</td></tr>"
        for r in table
    )
    checks = "".join(
        f"<tr><td>{html.escape(g['where'])}</td><td>{g['metric']}</td><td>{g['challenger']}"
        f"</td><td>{g['champion']}</td><td>{g['tolerance']}</td><td>"
        f"{'ok' if g['ok'] else 'WORSE'}</td></tr>"
        for g in [*decision.guards, *decision.segments]
    )
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in decision.reasons)
    return (
        f"<!doctype html><meta charset=utf-8><title>Challenger v{chal} vs champion v{champ}"
        f"</title><style>body{{font:14px sans-serif;margin:2em}}td,th{{padding:4px 12px;"
        f"border-bottom:1px solid #ddd}}</style><h1>Challenger v{chal} vs champion v{champ}: "
        f"{verdict}</h1><ul>{reasons}</ul><table><tr><th>metric</th><th>challenger</th>"
        f"<th>champion</th></tr>{rows}</table><p>{_comparison_svg(chal, champ, table)}</p>"
        f"<h2>Guards and segments</h2><table><tr><th>where</th><th>metric</th>"
        f"<th>challenger</th><th>champion</th><th>tolerance</th><th></th></tr>{checks}</table>"
    )


def _live_html(live: dict[str, Any]) -> str:
    """The "live traffic" section of the comparison page."""
    name = html.escape(str(live.get("metric_name")))
    rows = [
        ("rows compared", live.get("rows")),
        ("served batches", ", ".join(live.get("batches") or [])),
        ("served versions", ", ".join(f"v{v}" for v in live.get("served_versions") or [])),
        ("agreement", live.get("agreement")),
        ("mean |challenger - served|", live.get("mean_abs_diff")),
        ("mean challenger - served", live.get("mean_score_diff")),
        ("correlation", live.get("correlation")),
        ("labelled rows", live.get("labelled_rows")),
        (f"challenger {name} (labelled)", live.get("challenger_metric")),
        (f"served {name} (labelled)", live.get("served_metric")),
    ]
    cells = "".join(
        f"<tr><td>{k}</td><td>{html.escape('' if v is None else str(v))}</td></tr>" for k, v in rows
    )
    return (
        f"<h2>Live traffic: challenger v{live.get('challenger_version')} in shadow</h2>"
        f"<table>{cells}</table>"
    )


def log_history(registry: MlflowRegistry) -> None:
    """The append-only champion history, as JSON and as a table, in the active run."""
    log_json(registry.history(), "registry/history.json")
    log_text(registry.history_table(), "registry/history.md")
