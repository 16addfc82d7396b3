"""A logged dataset's schema inferred from a sample equals MLflow's own from the whole frame."""

import numpy as np
import pandas as pd
import pytest

from mlops_loop.core.tracking import SCHEMA_SAMPLE_ROWS, schema_sample


@pytest.mark.parametrize("null_at", [None, 3, SCHEMA_SAMPLE_ROWS + 2500])
def test_sampled_schema_equals_the_full_frames(null_at):
    import mlflow.data.pandas_dataset
    from mlflow.models import infer_signature

    rng = np.random.default_rng(0)
    n = SCHEMA_SAMPLE_ROWS * 4
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "income": rng.normal(5e4, 1e4, n),
            "region": rng.choice(["north", "south", "west"], n),
            "when": pd.date_range("2026-01-01", periods=n, freq="min"),
            "churned": rng.integers(0, 2, n).astype(float),
        }
    )
    if null_at is not None:
        frame.loc[null_at, "income"] = np.nan
        frame.loc[null_at + 7, "region"] = None
    full = mlflow.data.pandas_dataset.from_pandas(frame, source="x").schema
    sampled = infer_signature(schema_sample(frame)).inputs
    assert sampled.to_dict() == full.to_dict()
    required = {c["name"]: c.get("required", True) for c in full.to_dict()}
    assert required["income"] is (null_at is None)
    assert len(schema_sample(frame)) <= SCHEMA_SAMPLE_ROWS + 2
