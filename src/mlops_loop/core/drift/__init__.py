"""Drift between a reference table and a batch; see `evaluate_drift` and docs/drift.md."""

from mlops_loop.core.drift.evaluate import (
    MAX_CATEGORIES,
    MIN_EXPECTED,
    NULL_LABEL,
    SCHEMA_VERSION,
    SUMMARY_CATEGORIES,
    DriftReport,
    FeatureDrift,
    evaluate_drift,
)

__all__ = [
    "MAX_CATEGORIES",
    "MIN_EXPECTED",
    "NULL_LABEL",
    "SCHEMA_VERSION",
    "SUMMARY_CATEGORIES",
    "DriftReport",
    "FeatureDrift",
    "evaluate_drift",
]
