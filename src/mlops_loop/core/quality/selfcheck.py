"""A suite never rejects its own reference: `build_checked_suite`.

The suite is learnt on a random half of the reference and run on the other half, at that half's
size; a learnt bound that fails there is widened in the suite learnt on the whole reference by
the excess seen (plus a margin). Then the whole suite runs on the whole reference, and any check
still failing (a custom expectation the reference itself breaks, say) is dropped. Each change is
a note in the suite (`notes`) and in the snapshot's metadata.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops_loop.core.config import ColumnsConfig, QualityPolicy
from mlops_loop.core.quality.bounds import resolve_entries
from mlops_loop.core.quality.result import Incident
from mlops_loop.core.quality.suite import build_suite

#: A reference smaller than this is not split: its halves would say nothing.
SPLIT_MIN_ROWS = 40
#: Added to the excess a held-out half showed, so the widened bound is not on its edge.
WIDEN_MARGIN = 0.01
# Not learnt from the reference: the row count is the policy's, a column set cannot differ.
_NOT_CHECKED = frozenset({"row_count"})


def _key(entry: dict) -> tuple:
    return entry["kind"], entry["column"], entry["type"]


def _share(value: object) -> float | None:
    if isinstance(value, dict):
        value = value.get("share", value.get("max_share"))
    return float(value) if isinstance(value, int | float) else None


def _failed(suite: dict, frame: pd.DataFrame) -> dict[tuple, Incident]:
    from mlops_loop.core.quality.validate import validate_batch

    result = validate_batch(None, frame, suite=suite)
    return {
        (i.kind, i.column): i
        for i in result.incidents
        if i.severity == "error" and i.kind not in _NOT_CHECKED
    }


def build_checked_suite(
    reference: pd.DataFrame,
    columns: ColumnsConfig | None = None,
    policy: QualityPolicy | None = None,
    seed: int = 0,
) -> dict:
    """`build_suite`, then widened (or pruned) until it accepts its own reference.

    Returns:
        The suite, with `notes`: one `{"kind", "column", "action", "observed", "expected"}`
        per bound widened or check dropped.
    """
    suite = build_suite(reference, columns, policy)
    notes: list[dict] = []
    if len(reference) >= SPLIT_MIN_ROWS:
        order = np.random.default_rng(seed).permutation(len(reference))
        half = len(reference) // 2
        learn, held = reference.iloc[order[:half]], reference.iloc[order[half:]]
        failed = _failed(build_suite(learn, columns, policy), held)
        for e in suite["expectations"]:
            hit = failed.get((e["kind"], e["column"]))
            if hit is None or "learnt" not in e:
                continue
            seen, allowed = _share(hit.observed), _share(hit.expected)
            if seen is None or allowed is None:
                continue
            slack = round(seen - allowed + WIDEN_MARGIN, 6)
            e["learnt"]["slack"] = max(float(e["learnt"].get("slack", 0.0)), slack)
            notes.append(_note(hit, f"widened by {slack:.2%}: a held-out half of the reference"))
    kept = []
    still = _failed(suite, reference)
    for e in suite["expectations"]:
        hit = still.get((e["kind"], e["column"]))
        if hit is not None and e["type"] != "ExpectColumnToExist":
            notes.append(_note(hit, "dropped: the reference itself fails it"))
            continue
        kept.append(e)
    # Stored kwargs are the bounds at the reference's own size, widened ones included.
    return {**suite, "expectations": resolve_entries(kept, len(reference)), "notes": notes}


def _note(hit: Incident, action: str) -> dict:
    return {
        "kind": hit.kind,
        "column": hit.column,
        "action": f"{action} ({hit.message})",
        "observed": hit.observed,
        "expected": hit.expected,
    }
