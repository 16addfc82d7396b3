"""Retrain and promotion decisions: pure functions that return values with their reasons."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from mlops_loop.core.config import PromotionPolicy, RetrainPolicy
from mlops_loop.core.performance import improvement, metric_value, performance_drop
from mlops_loop.core.tasks import LOWER_IS_BETTER, REGRESSION_METRICS


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to train a challenger, and why."""

    retrain: bool
    reasons: list[str]
    triggers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def decide_retrain(
    *,
    policy: RetrainPolicy,
    dataset_drift: bool | None,
    drifted_features: list[str] | None = None,
    metric_name: str = "roc_auc",
    metric: float | None = None,
    baseline_metric: float | None = None,
    labelled_rows: int = 0,
    batches_since_retrain: int | None = None,
    quality_passed: bool = True,
    force: bool = False,
    estimated_metric: float | None = None,
    new_labelled_rows: int | None = None,
    drifted_importance: float | None = None,
) -> RetrainDecision:
    """Decide whether the loop should train a challenger on this batch.

    Args:
        policy: the retrain policy.
        dataset_drift: the drift verdict of the batch (None if not evaluated).
        drifted_features: names of the drifted features, for the reason.
        metric_name: the primary metric.
        metric: the champion's realized metric on this batch (None without labels).
        baseline_metric: the champion's metric when it was validated.
        labelled_rows: labelled rows in the batch.
        batches_since_retrain: batches since the last retrain (None: never retrained).
        quality_passed: the quality verdict; a failed batch never triggers training.
        force: a scheduled or manual retrain.
        estimated_metric: the champion's metric estimated from the scores alone (no labels).
        new_labelled_rows: labelled rows that arrived since the last retrain (None: unknown).
        drifted_importance: the share of the champion's importance the drifted features carry
            (None: unknown).

    Drift alone retrains only when the champion's performance is at risk: its estimate fell
    `metric_drop` below the baseline or is unknown, or the drifted features carry
    `drift_importance_share` of its importance (when that is set; unknown importance then
    counts as at risk). Otherwise the drift is recorded ("drift, no retrain: estimated
    performance holds") and nothing is trained. Labels that judged the batch and show no
    `metric_drop` overrule both ("realized performance holds").
    """
    if not quality_passed:
        return RetrainDecision(False, ["the batch failed the quality gate; it is quarantined"])
    triggers: list[str] = []
    reasons: list[str] = []
    if force:
        triggers.append("schedule")
        reasons.append("retrain requested by schedule or by hand")
    judged = metric is not None and labelled_rows >= policy.min_labelled_rows
    if policy.on_drift and dataset_drift:
        names = ", ".join(drifted_features or []) or "features"
        held = _drift_is_harmless(
            policy, metric_name, estimated_metric, baseline_metric, drifted_importance
        )
        realized = (
            performance_drop(metric_name, metric, baseline_metric)
            if judged and metric is not None and baseline_metric is not None
            else None
        )
        if held is None and realized is not None and realized < policy.metric_drop:
            # The labels have judged the batch: they outweigh an estimate that says otherwise.
            reasons.append(
                f"drift, no retrain: realized performance holds (data drift in {names}; the "
                f"labels show {metric_name} {metric:.4f} against a baseline of "
                f"{baseline_metric:.4f}, drop {realized:.4f} < {policy.metric_drop})"
            )
        elif held is None:
            triggers.append("drift")
            reasons.append(f"data drift in {names}")
        else:
            reasons.append(
                f"drift, no retrain: estimated performance holds (data drift in {names}; {held})"
            )
    if judged and metric is not None and baseline_metric is not None:
        drop = performance_drop(metric_name, metric, baseline_metric)
        if drop >= policy.metric_drop:
            triggers.append("performance")
            reasons.append(
                f"{metric_name} fell to {metric:.4f} from a baseline of "
                f"{baseline_metric:.4f} (drop {drop:.4f} >= {policy.metric_drop})"
            )
    floor = policy.metric_floor
    if judged and metric is not None and floor is not None and "performance" not in triggers:
        if improvement(metric_name, metric, floor) < 0:
            triggers.append("performance")
            reasons.append(
                f"{metric_name} {metric:.4f} is worse than the floor {policy.metric_floor}"
            )
    if (
        policy.on_estimated_drop
        and estimated_metric is not None
        and baseline_metric is not None
        and "performance" not in triggers
    ):
        drop = performance_drop(metric_name, estimated_metric, baseline_metric)
        if drop >= policy.metric_drop and judged:
            # The labels have judged this batch: what they show decides, not the estimate.
            reasons.append(
                f"estimated {metric_name} {estimated_metric:.4f} fell {drop:.4f} below the "
                f"baseline, but the labels show {metric_name} {metric:.4f}: no drop"
            )
        elif drop >= policy.metric_drop:
            triggers.append("estimated_performance")
            reasons.append(
                f"estimated {metric_name} (from scores, without labels) fell to "
                f"{estimated_metric:.4f} from a baseline of {baseline_metric:.4f} "
                f"(drop {drop:.4f} >= {policy.metric_drop})"
            )
    if metric is not None and labelled_rows < policy.min_labelled_rows:
        reasons.append(
            f"only {labelled_rows} labelled rows (< {policy.min_labelled_rows}): "
            "performance not judged"
        )
    if not triggers:
        return RetrainDecision(False, reasons or ["no drift and no performance drop"])
    short = new_labelled_rows is not None and new_labelled_rows < policy.min_new_labelled_rows
    if short and not force:
        return RetrainDecision(
            False,
            [
                *reasons,
                f"only {new_labelled_rows} labelled rows arrived since the last retrain "
                f"(< {policy.min_new_labelled_rows}): waiting for more labels",
            ],
            triggers,
        )
    cooling = batches_since_retrain is not None and batches_since_retrain < policy.cooldown_batches
    if cooling and not force:
        return RetrainDecision(
            False,
            [
                *reasons,
                f"cooldown: {batches_since_retrain} batch(es) since "
                f"the last retrain (< {policy.cooldown_batches})",
            ],
            triggers,
        )
    return RetrainDecision(True, reasons, triggers)


def _drift_is_harmless(
    policy: RetrainPolicy,
    metric_name: str,
    estimated_metric: float | None,
    baseline_metric: float | None,
    drifted_importance: float | None,
) -> str | None:
    """Why a drift puts the champion's performance at no risk; None when it may."""
    if estimated_metric is None or baseline_metric is None:
        return None
    drop = performance_drop(metric_name, estimated_metric, baseline_metric)
    if drop >= policy.metric_drop:
        return None
    held = (
        f"estimated {metric_name} {estimated_metric:.4f} vs a baseline of {baseline_metric:.4f}, "
        f"drop {drop:.4f} < {policy.metric_drop}"
    )
    share = policy.drift_importance_share
    if share is None:
        if drifted_importance is None:
            return held
        return f"{held}; the drifted features carry {drifted_importance:.0%} of its importance"
    if drifted_importance is None or drifted_importance >= share:
        return None
    return (
        f"{held}; the drifted features carry {drifted_importance:.0%} of the model's "
        f"importance < {share:.0%}"
    )


@dataclass(frozen=True)
class PromotionDecision:
    """Whether the challenger replaces the champion, with the evidence."""

    promote: bool
    reasons: list[str]
    metric: str
    challenger: float | None
    champion: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    guards: list[dict] = field(default_factory=list)
    segments: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap(
    name: str,
    y: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    rounds: int,
    confidence: float,
    seed: int,
) -> tuple[float, float]:
    """Two-sided percentile interval of improvement(a over b) by resampling rows in pairs."""
    rng = np.random.default_rng(seed)
    n = len(y)
    deltas = []
    la, lb = row_losses(name, y, a), row_losses(name, y, b)
    if la is not None and lb is not None:
        # A metric that is a function of a mean of per-row losses (0-1, log, squared, absolute
        # error): resample the paired losses, all rounds at once.
        idx = rng.integers(0, n, (rounds, n))
        ma, mb = la[idx].mean(axis=1), lb[idx].mean(axis=1)
        if name == "rmse":
            ma, mb = np.sqrt(ma), np.sqrt(mb)
        deltas = list(mb - ma if name in LOWER_IS_BETTER else ma - mb)
    else:
        for _ in range(rounds):
            idx = rng.integers(0, n, n)
            ya = y[idx]
            delta = improvement(
                name, metric_value(name, ya, a[idx]), metric_value(name, ya, b[idx])
            )
            if not math.isnan(delta):  # e.g. a resample of one class has no AUC: skip it
                deltas.append(delta)
    if not deltas:
        return math.nan, math.nan
    tail = (1 - confidence) / 2
    return float(np.quantile(deltas, tail)), float(np.quantile(deltas, 1 - tail))


def row_losses(name: str, y: np.ndarray, scores: np.ndarray) -> np.ndarray | None:
    """Per-row values whose mean is metric `name` (its square root for rmse), oriented as the
    metric is; None for a metric that is not such a mean (ROC AUC, F1, R², median error)."""
    s = np.asarray(scores, dtype=float)
    if name in ("rmse", "mae", "mape"):
        error = s - np.asarray(y, dtype=float)
        if name == "rmse":
            return error**2
        if name == "mae":
            return np.abs(error)
        return None  # rows with a zero target drop out of MAPE: not a plain mean
    if s.ndim == 2:
        k = np.asarray(y, dtype=int)
        rows = np.arange(len(k))
        if name == "accuracy":
            return (np.argmax(s, axis=1) == k).astype(float)
        if name == "log_loss":
            return -np.log(np.clip(s[rows, k], 1e-15, 1.0))
        if name == "brier":
            onehot = np.zeros_like(s)
            onehot[rows, k] = 1.0
            return np.sum((s - onehot) ** 2, axis=1)
        return None
    if name in ("accuracy", "brier", "log_loss"):
        yb = np.asarray(y, dtype=float)
        p = np.clip(s, 1e-7, 1 - 1e-7)
        if name == "accuracy":
            return ((p >= 0.5) == (yb == 1)).astype(float)
        if name == "brier":
            return (p - yb) ** 2
        return -(yb * np.log(p) + (1 - yb) * np.log(1 - p))
    return None


def no_skill_scores(name: str, y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, str]:
    """What a model without skill answers on these rows, and how to say it: a constant score at
    the base rate (binary), the class shares (multiclass), the rows' mean, or median for the
    absolute errors (regression)."""
    n = len(y)
    s = np.asarray(scores)
    if name in REGRESSION_METRICS:
        if name in ("mae", "median_ae"):
            level = float(np.median(y))
            return np.full(n, level), f"a constant prediction at the median {level:.4g}"
        level = float(np.mean(y))
        return np.full(n, level), f"a constant prediction at the mean {level:.4g}"
    if s.ndim == 2:
        k = s.shape[1]
        shares = np.bincount(np.asarray(y, dtype=int), minlength=k) / max(n, 1)
        shown = ", ".join(f"{v:.2f}" for v in shares)
        return np.tile(shares, (n, 1)), f"the class shares [{shown}] for every row"
    base_rate = float(np.mean(y))
    return np.full(n, base_rate), f"a constant score at the base rate {base_rate:.3f}"


def _compare(
    name: str, y: np.ndarray, chal: np.ndarray, champ: np.ndarray, tolerance: float, label: str
) -> dict | None:
    """One guard or segment comparison; None where the metric is undefined on these rows."""
    c, d = metric_value(name, y, chal), metric_value(name, y, champ)
    if math.isnan(c) or math.isnan(d):
        return None
    change = improvement(name, c, d)
    return {
        "where": label,
        "metric": name,
        "challenger": round(c, 6),
        "champion": round(d, 6),
        "change": round(change, 6),
        "tolerance": tolerance,
        "n": int(len(y)),
        "ok": change >= -tolerance,
    }


def decide_promotion(
    y_true: np.ndarray,
    challenger_scores: np.ndarray,
    champion_scores: np.ndarray | None,
    policy: PromotionPolicy,
    seed: int = 0,
    segments: dict[str, np.ndarray] | None = None,
    champion_failing: bool = False,
) -> PromotionDecision:
    """Compare challenger and champion on the same labelled rows.

    Promotes only when the improvement of the primary metric is at least `min_delta`, its
    paired-bootstrap lower bound lies above zero, no guard metric is worse than its tolerance,
    and no segment (a value of a segment column with enough rows) is worse than
    `segment_tolerance`. Without a champion the challenger is promoted.

    Args:
        y_true: labels of the held-out rows.
        challenger_scores: the challenger's scores on them.
        champion_scores: the champion's scores on them (None: there is no champion).
        policy: the promotion policy.
        seed: seed of the bootstrap.
        segments: segment column name -> its values on the held-out rows.
        champion_failing: the labels already showed the champion failing; with
            `failing_champion: not_worse` the challenger then need only not be worse with
            confidence (the interval's upper bound above zero).
    """
    name = policy.metric
    y = np.asarray(y_true)
    n = len(y)
    chal = metric_value(name, y, challenger_scores) if n else math.nan
    if champion_scores is None:
        return PromotionDecision(
            True,
            ["no champion yet: the challenger becomes the champion"],
            name,
            _clean(chal),
            None,
            None,
            None,
            None,
            n,
        )
    champ = metric_value(name, y, champion_scores) if n else math.nan
    if n == 0 or math.isnan(chal) or math.isnan(champ):
        return PromotionDecision(
            False,
            [
                f"{name} is undefined on the {n} evaluation rows "
                "(no labels or a single class): nothing proves a gain"
            ],
            name,
            _clean(chal),
            _clean(champ),
            None,
            None,
            None,
            n,
        )
    delta = improvement(name, chal, champ)
    low, high = paired_bootstrap(
        name,
        y,
        challenger_scores,
        champion_scores,
        policy.bootstrap_rounds,
        policy.confidence,
        seed,
    )
    reasons = [
        f"challenger {name} {chal:.4f} vs champion {champ:.4f} on {n} held-out rows "
        f"(improvement {delta:+.4f}, {policy.confidence:.0%} CI [{low:+.4f}, {high:+.4f}])"
    ]
    promote = True
    if math.isnan(low):
        promote = False
        reasons.append(f"{name} is undefined on every bootstrap resample: nothing proves a gain")
    failing = policy.failing_champion if champion_failing else "better"
    if failing == "skill":
        reasons.append(
            "the labels show the champion failing: the challenger, trained on the newest "
            "data, need only have skill"
        )
    elif failing == "not_worse":
        reasons.append(
            "the labels show the champion failing: the challenger, trained on the newest "
            "data, need only not be worse with confidence"
        )
        if high <= 0:
            promote = False
            reasons.append(
                f"the upper confidence bound {high:+.4f} is not above zero: the challenger is "
                "worse than a failing champion"
            )
    else:
        if delta < policy.min_delta or delta <= 0:
            promote = False
            reasons.append(f"improvement {delta:+.4f} is below min_delta {policy.min_delta}")
        if low <= 0:
            promote = False
            reasons.append(
                f"the lower confidence bound {low:+.4f} is not above zero: the gain may be luck"
            )
    guards = [
        g
        for metric, tol in policy.guards.items()
        if (g := _compare(metric, y, challenger_scores, champion_scores, tol, "all"))
    ]
    for g in guards:
        if not g["ok"] and failing != "skill":
            promote = False
            reasons.append(
                f"guard {g['metric']} is worse: {g['challenger']:.4f} vs champion "
                f"{g['champion']:.4f} (tolerance {g['tolerance']})"
            )
    if policy.require_skill or failing == "skill":
        constant, what = no_skill_scores(name, y, challenger_scores)
        no_skill = metric_value(name, y, constant)
        if not math.isnan(no_skill) and improvement(name, chal, no_skill) <= 0:
            promote = False
            reasons.append(
                f"challenger {name} {chal:.4f} is no better than a model without skill "
                f"({no_skill:.4f}: {what})"
            )
    checked = []
    for column, values in (segments or {}).items():
        values = np.asarray(values, dtype=object)
        for value in sorted({str(v) for v in values}):
            mask = np.array([str(v) == value for v in values])
            if mask.sum() < policy.min_segment_rows:
                continue
            seg = _compare(
                name,
                y[mask],
                challenger_scores[mask],
                champion_scores[mask],
                policy.segment_tolerance,
                f"{column}={value}",
            )
            if seg:
                checked.append(seg)
                if not seg["ok"] and failing != "skill":
                    promote = False
                    reasons.append(
                        f"segment {seg['where']}: {name} {seg['challenger']:.4f} vs champion "
                        f"{seg['champion']:.4f} on {seg['n']} rows "
                        f"(tolerance {policy.segment_tolerance})"
                    )
    if promote:
        reasons.append(
            {
                "skill": "challenger has skill and the champion is failing: promote",
                "not_worse": "challenger is not worse than a failing champion, and no guard "
                "or segment is worse: promote",
                "better": "challenger is better with confidence, and no guard or segment is "
                "worse: promote",
            }[failing]
        )
    return PromotionDecision(
        promote, reasons, name, chal, champ, delta, low, high, n, guards, checked
    )


def _clean(x: float) -> float | None:
    return None if math.isnan(x) else x
