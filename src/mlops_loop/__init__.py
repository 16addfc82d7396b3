"""mlops-loop: a self-driving retraining loop for scikit-learn models on Dagster and MLflow.

The public functions are imported lazily, so `import mlops_loop` stays fast.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["build_definitions", "evaluate_drift", "load_config", "validate_batch"]

_EXPORTS = {
    "build_definitions": "mlops_loop.defs.factory",
    "evaluate_drift": "mlops_loop.core.drift",
    "load_config": "mlops_loop.core.config",
    "validate_batch": "mlops_loop.core.quality",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mlops_loop' has no attribute {name!r}")
