"""Operational figures: block usage (CPU, peak memory) and timed chunked scoring."""

import time

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from mlops_loop.core.operations import flat_metrics, measure_usage, timed_scoring


def test_peak_memory_and_cpu_belong_to_the_block():
    with measure_usage() as before:
        pass
    with measure_usage() as usage:
        block = np.ones(300 * 2**20 // 8)  # 300 MB, touched
        time.sleep(0.1)  # long enough for the sampler to see it
        start = time.process_time()
        while time.process_time() - start < 0.2:
            pass
        del block
    assert usage.peak_rss_mb >= before.peak_rss_mb + 250
    assert usage.cpu_s >= 0.2
    assert usage.started_at < usage.ended_at and usage.wall_s >= usage.cpu_s * 0.5


def test_timed_scoring_gives_the_model_scores_and_ordered_percentiles():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(25_000, 4)), columns=list("abcd"))
    model = LogisticRegression().fit(frame, frame["a"] > 0)
    scores, figures = timed_scoring(
        lambda part: model.predict_proba(part)[:, 1], frame, chunk_rows=10_000, single_rows=20
    )
    np.testing.assert_allclose(scores, model.predict_proba(frame)[:, 1])
    assert figures["rows"] == 25_000
    for name in ("chunk_latency_ms", "row_latency_in_batch_ms", "single_row_latency_ms"):
        p = figures[name]
        assert 0 < p["p50"] <= p["p95"] <= p["p99"]
    # Three chunks; scoring one row alone costs more per row than within a chunk.
    assert figures["single_row_latency_ms"]["p50"] > figures["row_latency_in_batch_ms"]["p50"]
    with measure_usage() as usage:
        pass
    flat = flat_metrics(figures, usage)
    assert flat["chunk_latency_ms_p99"] == figures["chunk_latency_ms"]["p99"]
    assert "step_peak_rss_mb" in flat and "chunk_rows" in flat


def test_an_empty_batch_scores_nothing():
    scores, figures = timed_scoring(lambda part: np.zeros(len(part)), pd.DataFrame({"a": []}))
    assert scores.size == 0 and figures["single_row_latency_ms"] == {}
