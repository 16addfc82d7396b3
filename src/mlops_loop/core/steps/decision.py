"""Whether a batch calls for a challenger, by the retrain policy (`retrain_decision`), and
which of those decisions no retrain has answered yet."""

from __future__ import annotations

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.importance import drifted_share
from mlops_loop.core.labels import now_utc
from mlops_loop.core.policy import RetrainDecision, decide_retrain
from mlops_loop.core.steps.models import importance
from mlops_loop.core.steps.performance import Performance
from mlops_loop.core.store import LoopStore


def batches_since_retrain(store: LoopStore, key: str) -> int | None:
    """Batches since the latest one before `key` that trained a challenger (None: never)."""
    keys = [k for k in store.batch_keys() if k < key]
    for i, k in enumerate(reversed(keys)):
        if (store.batch_dir(k) / "challenger.json").exists():
            return i + 1
    return None


def labelled_since_retrain(config: LoopConfig, store: LoopStore, key: str) -> int:
    """Labelled rows known now in accepted batches after the last retrain, up to `key`."""
    keys = [k for k in store.accepted_keys() if k <= key]
    since = [k for k in keys if (store.batch_dir(k) / "challenger.json").exists()]
    if since:
        keys = [k for k in keys if k > since[-1]]
    total = 0
    for k in keys:
        perf = store.batch_json(k, "performance")
        total += Performance.from_dict(perf).labelled_rows if perf else 0
    return total


def decide_batch_retrain(
    config: LoopConfig, key: str, force: bool = False, record: bool = True
) -> RetrainDecision:
    """Apply the retrain policy to what is known about a batch now.

    The decision is recorded with the batch unless `record` is False (a re-check inside a
    forced retrain must not overwrite what monitoring decided).
    """
    store = LoopStore(config.state_dir)
    quality = store.batch_json(key, "quality") or {}
    drift = store.batch_json(key, "drift") or {}
    perf = Performance.from_dict(store.batch_json(key, "performance") or {})
    drifted = [
        f["name"]
        for f in drift.get("features", [])
        if f.get("drifted") and f.get("role", "feature") == "feature"
    ]
    decision = decide_retrain(
        policy=config.retrain,
        quality_passed=bool(quality.get("success")),
        dataset_drift=drift.get("dataset_drift"),
        drifted_features=drifted,
        drifted_importance=(
            drifted_share(importance(store, perf.champion_version), drifted) if drifted else 0.0
        ),
        metric_name=config.promotion.metric,
        metric=perf.metric,
        baseline_metric=(
            perf.best_baseline_metric
            if config.retrain.baseline == "best" and perf.best_baseline_metric is not None
            else perf.baseline_metric
        ),
        labelled_rows=perf.labelled_rows,
        batches_since_retrain=batches_since_retrain(store, key),
        force=force,
        estimated_metric=perf.estimated_metric,
        new_labelled_rows=labelled_since_retrain(config, store, key),
    )
    if record:
        # When it was decided: a retrain answers this decision, not a later one.
        store.write_batch_json(
            key, "decision", {**decision.to_dict(), "decided_at": now_utc().isoformat()}
        )
    return decision


def pending_retrains(config: LoopConfig) -> list[str]:
    """Accepted batches whose latest retrain decision says retrain and that no retrain has
    answered yet (`answer_retrain`), in name order: what a retrain run has to do, whichever
    orchestrator decided it."""
    store = LoopStore(config.state_dir)
    pending = []
    for key in store.accepted_keys():
        decided = store.batch_json(key, "decision")
        if not decided or not decided.get("retrain"):
            continue
        answered = store.batch_json(key, "retrain")
        if answered is not None and answered.get("decided_at") == decided.get("decided_at"):
            continue
        if answered is None and decided.get("decided_at") is None:
            # A decision recorded before retrains were answered: a challenger answers it.
            if (store.batch_dir(key) / "challenger.json").exists():
                continue
        pending.append(key)
    return pending


def answer_retrain(config: LoopConfig, key: str, outcome: str) -> None:
    """Record that a retrain answered the batch's latest decision (`retrain.json`), so the
    decision is no longer pending: `outcome` is "trained" or "skipped"."""
    store = LoopStore(config.state_dir)
    decided = store.batch_json(key, "decision") or {}
    store.write_batch_json(
        key,
        "retrain",
        {"decided_at": decided.get("decided_at"), "outcome": outcome, "at": now_utc().isoformat()},
    )
