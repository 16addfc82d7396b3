"""Late labels: label files that land apart from their batches (`late_labels`, `labels_job`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.labels import LabelIngest, ingest_labels, label_coverage
from mlops_loop.core.steps.run import StepContext, step_run
from mlops_loop.core.store import LoopStore
from mlops_loop.core.tracking import log_json, log_metrics


@dataclass(frozen=True)
class LabelsRead(LabelIngest):
    """One pass over the labels folder (`labels/last_ingest.json`), with the batches it calls
    for measuring again."""

    remeasure: list[str] = field(default_factory=list)  # accepted, scored batches affected
    coverage: list[dict[str, Any]] = field(default_factory=list)  # per batch


def ingest_late_labels(config: LoopConfig, ctx: StepContext | None = None) -> LabelsRead:
    """Read label files that landed apart from their batches; name the batches they touch.

    Only accepted, scored batches are listed in `remeasure`: their realized performance can be
    measured again with the new labels. The per-batch label coverage is in `coverage`.
    """
    ctx = ctx or StepContext()
    read = ingest_labels(config)
    store = LoopStore(config.state_dir)
    accepted = set(store.accepted_keys())
    result = LabelsRead(
        **read.to_dict(),
        remeasure=[
            k
            for k in read.affected
            if k in accepted and (store.batch_dir(k) / "scored.parquet").exists()
        ],
        coverage=label_coverage(config),
    )
    store.write_json(store.root / "labels" / "last_ingest.json", result.to_dict())
    if result.files:
        with step_run(config, ctx, "labels"):
            log_metrics(
                {
                    "label_files": len(result.files),
                    "label_rows": result.rows,
                    "new_labels": result.new_labels,
                    "corrected_labels": result.corrected_labels,
                    "known_labels": result.known_labels,
                    "batches_relabelled": len(result.remeasure),
                }
            )
            log_json(result.to_dict(), "labels/ingest.json")
    return result
