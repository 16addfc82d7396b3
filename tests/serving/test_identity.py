"""The endpoint's own fast path gives the model exactly what the loop's scorer gives it, so its
predictions are the loop's (`predict_frame`), for every task."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlops_loop.core.config import load_config
from mlops_loop.core.steps.scoring import predict_frame
from mlops_loop.core.training import model_inputs
from mlops_loop.serving.request import check_features, parse_payload
from mlops_loop.serving.scoring import model_frame


def _with_nulls(frame: pd.DataFrame, columns, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = frame[columns.features].copy().astype(object)
    for c in columns.features:
        out.loc[rng.random(len(out)) < 0.1, c] = None
    return out.reset_index(drop=True)


def _records(frame: pd.DataFrame) -> list[dict]:
    return [
        {k: (None if v is None or (isinstance(v, float) and np.isnan(v)) else v) for k, v in r}
        for r in (row.items() for row in frame.to_dict(orient="records"))
    ]


def test_the_fast_inputs_are_exactly_model_inputs(champion_loop, demo_frames):
    columns = champion_loop.columns
    rows = _with_nulls(demo_frames[1]["batch_002"].head(300), columns)
    table = parse_payload(json.dumps({"dataframe_records": _records(rows)}).encode(), 1000)
    fast = model_frame(check_features(table, columns), columns)
    pd.testing.assert_frame_equal(fast, model_inputs(rows, columns))


def _post_and_compare(config, rows, serve, client):
    server = serve(config)
    out = client.post(f"{server.url}/invocations", json={"dataframe_records": _records(rows)})
    assert out.status_code == 200, out.text
    expected, _ = predict_frame(config, rows)
    return out.json(), expected


def test_binary_predictions_are_the_loops_with_nulls(champion_loop, demo_frames, serve, client):
    rows = _with_nulls(demo_frames[1]["batch_003"].head(200), champion_loop.columns, seed=1)
    body, expected = _post_and_compare(champion_loop, rows, serve, client)
    assert body["predictions"] == expected[champion_loop.columns.prediction].tolist()


@pytest.fixture(scope="module")
def task_loop(request, tmp_path_factory):
    """A bootstrapped loop of the triage (multiclass) or demand (regression) stream."""
    from mlops_loop.core.steps.reference import ensure_champion, take_reference_snapshot
    from mlops_loop.demo.task_streams import demand_stream, task_stream_loop, triage_stream

    kind = request.param
    root = tmp_path_factory.mktemp(kind)
    reference, batches = (triage_stream if kind == "triage" else demand_stream)(
        seed=3, batches=4, rows=200, reference_rows=800
    )
    reference.to_parquet(root / "reference.parquet", index=False)
    (root / "in").mkdir()
    config = load_config(task_stream_loop(root, kind))
    take_reference_snapshot(config)
    ensure_champion(config)
    return config, batches["batch_001"].head(50).reset_index(drop=True)


@pytest.mark.slow
@pytest.mark.parametrize("task_loop", ["triage", "demand"], indirect=True)
def test_multiclass_and_regression_answers(task_loop, serve, client):
    config, batch = task_loop
    rows = _with_nulls(batch, config.columns, seed=2)
    body, expected = _post_and_compare(config, rows, serve, client)
    cols = config.columns
    if config.task == "multiclass":
        # The predicted class per row, the classes in order, one probability list per row.
        assert body["predictions"] == expected[cols.prediction].tolist()
        assert body["classes"] == cols.classes
        names = [f"{cols.prediction}_{c}" for c in cols.classes]
        assert body["probabilities"] == expected[names].to_numpy().tolist()
    else:
        assert config.task == "regression"
        assert body["predictions"] == expected[cols.prediction].tolist()
        assert "probabilities" not in body


def test_concurrent_requests_scored_together_get_their_own_rows_scores(
    champion_loop, demo_frames, serve
):
    """Requests that wait together are merged into one call of the model: each still gets
    exactly the scores of its own rows."""
    import asyncio

    import httpx

    rows = _with_nulls(demo_frames[1]["batch_004"].head(120), champion_loop.columns, seed=3)
    records = _records(rows)
    server = serve(champion_loop)

    async def post_all() -> list[dict]:
        async with httpx.AsyncClient(timeout=60) as c:
            outs = await asyncio.gather(
                *(
                    c.post(f"{server.url}/invocations", json={"inputs": records[i : i + 1 + i % 3]})
                    for i in range(0, len(records), 4)
                )
            )
        assert {o.status_code for o in outs} == {200}
        return [o.json() for o in outs]

    bodies = asyncio.run(post_all())
    expected = predict_frame(champion_loop, rows)[0][champion_loop.columns.prediction].tolist()
    for body, i in zip(bodies, range(0, len(records), 4), strict=True):
        assert body["predictions"] == expected[i : i + 1 + i % 3]
