"""Drift between a reference table and a batch; see `evaluate_drift` and docs/drift.md."""

from mlops_loop.core.drift.chunked import ParquetBatch, evaluate_drift_parquet
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
from mlops_loop.core.drift.profile import ReferenceProfile

__all__ = [
    "MAX_CATEGORIES",
    "MIN_EXPECTED",
    "NULL_LABEL",
    "SCHEMA_VERSION",
    "SUMMARY_CATEGORIES",
    "DriftReport",
    "FeatureDrift",
    "ParquetBatch",
    "ReferenceProfile",
    "evaluate_drift",
    "evaluate_drift_parquet",
]
