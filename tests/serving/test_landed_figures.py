"""The two halves agree: files the prediction log lands are what the loop reads as served."""

from __future__ import annotations

import numpy as np
import pytest

from mlops_loop.core.served import file_figures, is_served, read_window
from tests.serving.helpers import SALT_ENV, landed, req, sink


@pytest.fixture(autouse=True)
def salt(monkeypatch):
    monkeypatch.setenv(SALT_ENV, "pepper")


def test_the_loop_reads_the_logs_files_and_their_figures(tmp_path):
    clock = iter(float(t) for t in range(1_000, 10_000))
    s = sink(tmp_path, batch_rows=10**6, clock=lambda: next(clock))
    s.start()
    for i, latency in enumerate([1.0, 2.0, 3.0, 4.0, 90.0]):
        s.record("req", {**req(f"r{i}", rows=2), "latency_ms": latency, "version": 3 + (i > 2)})
    s.record("err", {"id": "bad", "status": 422, "latency_ms": 0.5})
    s.close()
    [path] = landed(tmp_path)
    assert is_served(path)
    window = read_window(path)
    assert window is not None and window.requests == 5 and window.errors["422"] == 1
    figures = file_figures(path)
    assert figures is not None
    assert figures.rows == 10 and figures.errors == 1
    assert figures.error_rate == pytest.approx(1 / 6)
    assert figures.model_versions == [3, 4] and figures.model_version == 4
    assert figures.latency_p99_ms == pytest.approx(
        np.percentile([1.0, 2.0, 3.0, 4.0, 90.0, 0.5], 99)
    )
    assert figures.requests_per_s == pytest.approx(5 / window.window_s)
