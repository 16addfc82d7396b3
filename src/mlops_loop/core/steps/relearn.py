"""Relearning the quality suite when the upstream changed for good, and re-validating the
batches the old suite quarantined: `relearn_suite_job`, `mlops-loop quality relearn|revalidate`.

Every suite the loop has used is kept under `snapshot/suites/` (`v0001.json` is the one learnt
at the snapshot); `snapshot/suite.json` is the one in use, replaced by a rename only after the
new version and its MLflow run and history entry are written, so a crash leaves the old suite
in force. `snapshot/suites/history.json` lists the relearns, oldest first.
"""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.data import frame_digest
from mlops_loop.core.errors import RelearnError
from mlops_loop.core.registry import AliasChange, MlflowRegistry
from mlops_loop.core.steps.alerts import AlertsChecked, check_gate_stuck
from mlops_loop.core.steps.ingest import serving_columns
from mlops_loop.core.steps.quality import check_quality
from mlops_loop.core.steps.reference import learn_suite
from mlops_loop.core.steps.result import StepResult
from mlops_loop.core.steps.run import StepContext, step_run
from mlops_loop.core.store import LoopStore, exclusive
from mlops_loop.core.tracking import log_json, log_params

if TYPE_CHECKING:
    from mlops_loop.core.quality import QualityResult

#: MLflow tag prefix of a relearn run (who, when, why, which versions).
TAG_PREFIX = "mlops_loop.relearn."


@dataclass(frozen=True)
class SuiteRelearn(StepResult):
    """One relearn of the quality suite (an entry of `snapshot/suites/history.json`)."""

    version: int  # the suite in use from now on
    previous_version: int
    reason: str
    triggered_by: str
    user: str
    at: str
    batches: list[str] = field(default_factory=list)  # learnt from, with the reference
    rows: int = 0  # rows learnt from
    digest: str = ""  # of those rows
    expectations: int = 0
    previous_expectations: int = 0
    quarantined: list[str] = field(default_factory=list)  # by the old suite: to re-validate
    run_id: str | None = None  # the MLflow run that records it


@dataclass(frozen=True)
class Revalidated(StepResult):
    """A batch judged again by the suite in use now."""

    batch: str
    success: bool
    suite_version: int
    incidents: list[str] = field(default_factory=list)  # blocking ones, "kind:column"
    stuck: AlertsChecked | None = None


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def suites_dir(store: LoopStore) -> Path:
    return store.snapshot_dir / "suites"


def relearn_history(config: LoopConfig) -> list[SuiteRelearn]:
    """Every relearn of the quality suite, oldest first."""
    store = LoopStore(config.state_dir)
    return [SuiteRelearn.from_dict(r) for r in store.read_json(_history(store)) or []]


def suite_version(config: LoopConfig) -> int:
    """The version of the suite in use: 1 for the snapshot's, one more per relearn."""
    return len(relearn_history(config)) + 1


def _history(store: LoopStore) -> Path:
    return suites_dir(store) / "history.json"


def _keys(store: LoopStore, batches: Sequence[str]) -> list[str]:
    keys = list(dict.fromkeys(str(b).strip() for b in batches))
    known = store.batch_keys()
    for key in keys:
        if key not in known:
            raise RelearnError(
                f"batch {key!r} is not in the loop's store, so the suite cannot learn from it; "
                f"expected one of the ingested batches: {', '.join(known) or 'none yet'}"
            )
    return keys


def relearn_suite(
    config: LoopConfig,
    reason: str,
    batches: Sequence[str] = (),
    ctx: StepContext | None = None,
) -> SuiteRelearn:
    """Learn the quality suite again from the reference and the named batches.

    The batches may be accepted ones or quarantined ones named on purpose (the new shape the
    upstream sends now). The old suite is kept, versioned; who, when and why are recorded in
    an MLflow run (params, tags, the new suite as an artifact) and in the champion history.

    Raises:
        RelearnError: the reason is empty, or a batch is not in the store.
        DataError: there is no reference snapshot yet.
    """
    import mlflow
    import pandas as pd

    if not isinstance(reason, str) or not reason.strip():
        raise RelearnError(
            f"a relearn of the quality suite needs a reason (who asked and why), got {reason!r}"
        )
    reason = reason.strip()
    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    keys = _keys(store, batches)
    # A served batch's own columns (request ids, latencies, predictions) are not the data's.
    frame = pd.concat(
        [
            store.reference(),
            *(store.batch(k).drop(columns=serving_columns(config, store, k)) for k in keys),
        ],
        ignore_index=True,
    )
    suite = learn_suite(config, frame)
    folder = suites_dir(store)
    with exclusive(folder / ".lock"):
        current = store.read_json(store.snapshot_dir / "suite.json")
        if current is None:
            raise RelearnError(
                "the reference snapshot has no quality suite to relearn; materialize "
                "reference_snapshot (bootstrap_job) first"
            )
        history = store.read_json(_history(store)) or []
        previous = len(history) + 1
        version = previous + 1
        old_path = folder / f"v{previous:04d}.json"
        if not old_path.exists():
            store.write_json(old_path, current)
        store.write_json(folder / f"v{version:04d}.json", suite)
        with step_run(config, ctx, "relearn_suite") as run:
            record = SuiteRelearn(
                version=version,
                previous_version=previous,
                reason=reason,
                triggered_by=ctx.triggered_by,
                user=_user(),
                at=datetime.now(UTC).isoformat(timespec="seconds"),
                batches=keys,
                rows=len(frame),
                digest=frame_digest(frame),
                expectations=len(suite.get("expectations", [])),
                previous_expectations=len(current.get("expectations", [])),
                quarantined=store.quarantined_keys(),
                run_id=run.info.run_id,
            )
            log_json(suite, "quality/suite.json")
            log_json(current, f"quality/suite_v{previous:04d}.json")
            log_json(record.to_dict(), "quality/relearn.json")
            log_params(
                {
                    "loop": config.name,
                    "relearn.reason": reason[:500],
                    "relearn.triggered_by": record.triggered_by,
                    "relearn.user": record.user,
                    "relearn.batches": ", ".join(keys) or "none (reference only)",
                    "relearn.rows": record.rows,
                    "relearn.digest": record.digest,
                    "quality.suite_version": version,
                    "quality.previous_suite_version": previous,
                    "quality.expectations": record.expectations,
                }
            )
            mlflow.set_tags(
                {
                    f"{TAG_PREFIX}reason": reason[:5000],
                    f"{TAG_PREFIX}triggered_by": record.triggered_by,
                    f"{TAG_PREFIX}user": record.user,
                    f"{TAG_PREFIX}at": record.at,
                    f"{TAG_PREFIX}suite_version": str(version),
                }
            )
            _record_in_history(config, record)
            # The suite in use switches last: until this rename, batches meet the old one.
            store.write_json(store.snapshot_dir / "suite.json", suite)
            store.write_json(_history(store), [*history, record.to_dict()])
    return record


def _record_in_history(config: LoopConfig, record: SuiteRelearn) -> None:
    """The relearn as an entry of the champion history (next to promotions and rollbacks)."""
    registry = MlflowRegistry.from_config(config)
    champion = registry.champion()
    if champion is None:
        return  # no registered champion yet: its history does not exist
    registry.record(
        AliasChange(
            "relearn",
            champion,
            champion,
            record.reason,
            record.triggered_by,
            at=record.at,
            user=record.user,
            details={
                "suite_from": record.previous_version,
                "suite_to": record.version,
                "batches": record.batches,
                "run_id": record.run_id,
            },
        )
    )


def revalidate(
    config: LoopConfig, batches: Sequence[str] = (), ctx: StepContext | None = None
) -> list[Revalidated]:
    """Judge batches again with the suite in use now: the named ones, else every quarantined
    one. A batch that passes becomes accepted (training and baselines read it from then on).

    Raises:
        RelearnError: a named batch is not in the store.
    """
    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    keys = _keys(store, batches) if batches else store.quarantined_keys()
    version = suite_version(config)
    out: list[Revalidated] = []
    for key in keys:
        result: QualityResult = check_quality(config, key, ctx)
        stuck = check_gate_stuck(config, key, ctx)
        out.append(
            Revalidated(
                batch=key,
                success=result.success,
                suite_version=version,
                incidents=[
                    f"{i.kind}:{i.column}" for i in result.incidents if i.severity == "error"
                ],
                stuck=stuck,
            )
        )
    return out
