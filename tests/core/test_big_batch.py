"""Big parquet batches a slice at a time: the same verdicts, scores and digests as in memory."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mlops_loop.core.config import ColumnsConfig, ModelSpec
from mlops_loop.core.data import frame_digest
from mlops_loop.core.errors import DataError
from mlops_loop.core.operations import score_parquet
from mlops_loop.core.parquet import parquet_digest, store_parquet
from mlops_loop.core.quality import QualityResult, build_suite, validate_batch
from mlops_loop.core.quality.chunked import validate_parquet
from mlops_loop.core.training import predict_scores, train_model

COLUMNS = ColumnsConfig(
    numerical=["age", "income"], categorical=["plan"], target="churned", id="customer_id"
)
CHUNK = 700  # slices that do not line up with anything in the data


def make_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": np.arange(n) + seed * 1_000_000,
            "age": rng.normal(40, 12, n).round(1),
            "income": rng.lognormal(10, 0.5, n),
            "plan": rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2]),
            "churned": rng.integers(0, 2, n),
        }
    )


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return make_frame(2000, seed=1)


@pytest.fixture(scope="module")
def suite(reference: pd.DataFrame) -> dict:
    return build_suite(reference, COLUMNS)


def mixed_batch(n: int = 5000) -> pd.DataFrame:
    """Nulls, out-of-range values, unseen categories, repeated rows and ids, an extra column;
    each spread over the whole batch so that every slice sees some."""
    rng = np.random.default_rng(7)
    frame = make_frame(n, seed=2)
    frame.loc[rng.random(n) < 0.10, "income"] = np.nan
    frame.loc[rng.random(n) < 0.05, "age"] += 500
    frame.loc[rng.random(n) < 0.03, "plan"] = "enterprise"
    frame["note"] = "x"
    # Rows of the first slices repeated in the last ones: only a global count sees them.
    return pd.concat([frame, frame.iloc[:300]], ignore_index=True)


def assert_same_verdict(chunked: QualityResult, whole: QualityResult) -> None:
    assert chunked.success == whole.success
    assert [(i.kind, i.column, i.severity) for i in chunked.incidents] == [
        (i.kind, i.column, i.severity) for i in whole.incidents
    ]
    for c, w in zip(chunked.incidents, whole.incidents, strict=True):
        assert c.expected == w.expected
        assert c.message == w.message
        _assert_close(c.observed, w.observed)
    drop = {"seconds"}
    assert {k: v for k, v in chunked.statistics.items() if k not in drop} == {
        k: v for k, v in whole.statistics.items() if k not in drop
    }


def _assert_close(a: object, b: object) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_close(a[k], b[k])
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    else:
        assert a == b


def test_chunked_verdict_on_a_mixed_batch_equals_the_in_memory_one(tmp_path, suite):
    frame = mixed_batch()
    path = tmp_path / "batch.parquet"
    frame.to_parquet(path, index=False, row_group_size=1000)
    whole = validate_batch(None, pd.read_parquet(path), suite=suite)
    chunked = validate_parquet(path, suite, chunk_rows=CHUNK)

    assert not whole.success
    found = {(i.kind, i.column) for i in whole.incidents}
    assert {
        ("null_rate", "income"),
        ("out_of_range", "age"),
        ("unseen_category", "plan"),
        ("duplicate_rows", None),
        ("duplicate_rows", "customer_id"),
        ("unexpected_column", "note"),
    } <= found
    assert_same_verdict(chunked, whole)
    # The repeats lie in different slices: 300 rows repeated, 600 rows in repeated groups.
    by_key = {(i.kind, i.column): i for i in chunked.incidents}
    assert by_key[("duplicate_rows", "customer_id")].observed == {"duplicated": 600}
    assert by_key[("duplicate_rows", None)].observed["rows"] == 600
    assert chunked.gx_result is None


def test_chunked_verdict_on_missing_and_mistyped_columns_equals_the_in_memory_one(tmp_path, suite):
    frame = make_frame(3000, seed=3).drop(columns=["plan"])
    frame["age"] = frame["age"].astype(str)
    frame.loc[::7, "income"] = np.nan  # nulls too, on a column still checked
    path = tmp_path / "batch.parquet"
    frame.to_parquet(path, index=False)
    whole = validate_batch(None, pd.read_parquet(path), suite=suite)
    chunked = validate_parquet(path, suite, chunk_rows=CHUNK)
    assert {("missing_column", "plan"), ("type_mismatch", "age")} <= {
        (i.kind, i.column) for i in whole.incidents
    }
    assert_same_verdict(chunked, whole)


def test_clean_batch_passes_chunked_and_row_count_is_summed(tmp_path, suite):
    frame = make_frame(4000, seed=4)
    path = tmp_path / "batch.parquet"
    frame.to_parquet(path, index=False)
    result = validate_parquet(path, suite, chunk_rows=CHUNK)
    assert result.success, result.to_markdown()
    assert result.statistics["rows"] == 4000
    assert_same_verdict(result, validate_batch(None, frame, suite=suite))


def test_unreadable_file_is_named(tmp_path, suite):
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DataError, match="bad.parquet: cannot be read as parquet"):
        validate_parquet(bad, suite)


def test_scored_file_equals_in_memory_scores(tmp_path, reference):
    spec = ModelSpec(estimator="sklearn.linear_model.LogisticRegression", params={"max_iter": 200})
    model = train_model(reference, spec, COLUMNS)
    frame = make_frame(2500, seed=5)
    path, out = tmp_path / "batch.parquet", tmp_path / "scored.parquet"
    frame.to_parquet(path, index=False, row_group_size=1000)
    figures = score_parquet(
        lambda part: predict_scores(model, part, COLUMNS),
        path,
        out,
        "prediction",
        chunk_rows=CHUNK,
        call_rows=300,
        single_rows=5,
    )
    scored = pd.read_parquet(out)
    expected = frame.assign(prediction=predict_scores(model, frame, COLUMNS))
    pd.testing.assert_frame_equal(scored, expected, check_exact=False, rtol=1e-12)
    assert figures["rows"] == 2500
    assert len(figures["single_row_latency_ms"]) == 3  # p50, p95, p99 of the 5 rows
    assert figures["chunk_rows"] == 300


def test_store_copies_parquet_and_adds_a_missing_target(tmp_path):
    frame = make_frame(1500, seed=6)
    labelled, unlabelled = tmp_path / "a.parquet", tmp_path / "b.parquet"
    frame.to_parquet(labelled, index=False)
    frame.drop(columns=["churned"]).to_parquet(unlabelled, index=False)

    info = store_parquet(labelled, tmp_path / "store" / "a.parquet", "churned", chunk_rows=CHUNK)
    assert info == {"rows": 1500, "columns": 5, "digest": frame_digest(frame)}
    assert (tmp_path / "store" / "a.parquet").read_bytes() == labelled.read_bytes()

    info = store_parquet(unlabelled, tmp_path / "store" / "b.parquet", "churned", chunk_rows=CHUNK)
    stored = pd.read_parquet(tmp_path / "store" / "b.parquet")
    expected = frame.drop(columns=["churned"]).assign(churned=np.nan)
    pd.testing.assert_frame_equal(stored, expected)
    assert (
        info["digest"]
        == frame_digest(expected)
        == parquet_digest(tmp_path / "store" / "b.parquet", chunk_rows=CHUNK)
    )


@pytest.mark.slow
def test_loop_steps_take_the_chunked_path_over_the_row_limit(tmp_path, loop_config, demo_frames):
    from mlops_loop.core.steps.drift import evaluate_batch_drift
    from mlops_loop.core.steps.ingest import big_batch, ingest_batch
    from mlops_loop.core.steps.performance import measure_performance
    from mlops_loop.core.steps.quality import check_quality
    from mlops_loop.core.steps.reference import ensure_champion, take_reference_snapshot
    from mlops_loop.core.steps.scoring import score_batch
    from mlops_loop.core.store import LoopStore

    _, batches = demo_frames
    name, frame = next(iter(batches.items()))
    landed = tmp_path / "landing" / f"{name}.parquet"
    frame.to_parquet(landed, index=False)
    take_reference_snapshot(loop_config)
    ensure_champion(loop_config)
    ops = loop_config.operations
    small = loop_config.model_copy(
        update={
            "operations": ops.model_copy(update={"in_memory_max_rows": 100, "read_chunk_rows": 333})
        }
    )
    results = {}
    for label, config in (("whole", loop_config), ("chunked", small)):
        info = ingest_batch(config, name, landed)
        big = big_batch(config, LoopStore(config.state_dir), name)
        assert (big is None) == (label == "whole")
        quality = check_quality(config, name)
        drift = evaluate_batch_drift(config, name)
        scored = score_batch(config, name)
        perf = measure_performance(config, name)
        results[label] = (info, quality, drift, scored, perf)
    (iw, qw, dw, sw, pw), (ic, qc, dc, sc, pc) = results["whole"], results["chunked"]
    assert ic == iw and ic.digest == frame_digest(frame)
    assert_same_verdict(qc, qw)
    assert qc.gx_result is None and qw.gx_result is not None  # the chunked path ran
    assert dc.report.to_dict() == dw.report.to_dict()
    assert sc.rows == sw.rows == len(frame)
    assert "read_write_s" in sc.operations and "read_write_s" not in sw.operations
    assert pc.metrics == pw.metrics and pc.segments == pw.segments
    # Segment drift: the chunked path splits the file per value, with the same rows as in memory.
    seg_w = LoopStore(loop_config.state_dir).batch_json(name, "segment_drift")
    seg_c = LoopStore(small.state_dir).batch_json(name, "segment_drift")
    assert seg_c == seg_w and seg_w


def test_chunked_incidents_withhold_the_values_of_private_columns(tmp_path, reference):
    """A user's check on a private column reports its verdict, never the value it observed."""
    from mlops_loop.core.config import QualityPolicy

    policy = QualityPolicy.model_validate(
        {
            "expectations": [
                {
                    "type": "ExpectColumnMaxToBeBetween",
                    "kwargs": {"column": "customer_id", "max_value": 2_000_000},
                }
            ]
        }
    )
    suite = build_suite(reference, COLUMNS, policy)
    frame = make_frame(3000, seed=1)
    frame.loc[2990:, "customer_id"] += 7_000_000  # ten ids from another system
    path = tmp_path / "batch.parquet"
    frame.to_parquet(path, index=False)
    strays = [str(frame["customer_id"].max())]

    def id_incident_text(private: set[str]) -> str:
        result = validate_parquet(path, suite, chunk_rows=CHUNK, private=private)
        hits = [i for i in result.incidents if i.column == "customer_id" and i.kind == "custom"]
        assert hits, result.to_markdown()
        return " ".join(f"{i.message} {i.observed} {i.expected}" for i in hits)

    assert any(v in id_incident_text(set()) for v in strays)  # shown by default
    hidden = id_incident_text({"customer_id"})
    assert not [v for v in strays if v in hidden], hidden
