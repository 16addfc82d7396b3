"""Learnt quality bounds: resolved at the batch's size, checked on the reference itself, and
the row count judged by accepted batches. Real Great Expectations on small seeded frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops_loop.core.config import ColumnsConfig, QualityPolicy
from mlops_loop.core.quality import build_suite, validate_batch
from mlops_loop.core.quality.bounds import (
    range_share,
    resolve_entries,
    unique_share,
    unseen_share,
    with_accepted_rows,
)
from mlops_loop.core.quality.selfcheck import build_checked_suite
from mlops_loop.core.steps.quality import accepted_rows
from mlops_loop.core.store import LoopStore

LOW = ColumnsConfig(categorical=["a", "b", "c"], target="flag")


def low_cardinality(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {k: rng.choice([f"{k}{i}" for i in range(3)], n) for k in "abc"}
    return pd.DataFrame({**data, "flag": rng.integers(0, 2, n)})


def kinds(result) -> set[str]:
    return {i.kind for i in result.incidents if i.severity == "error"}


def entry(suite: dict, kind: str, column: str | None) -> dict:
    return next(e for e in suite["expectations"] if (e["kind"], e["column"]) == (kind, column))


def test_repeated_rows_of_low_cardinality_data_are_normal() -> None:
    suite = build_suite(low_cardinality(2000, 1), LOW)
    for n in (50, 500, 5000):
        assert validate_batch(None, low_cardinality(n, n), suite=suite).success


def test_a_replay_is_caught_by_the_excess_over_the_expected_share() -> None:
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"x": rng.normal(size=1500), "flag": rng.integers(0, 2, 1500)})
    columns = ColumnsConfig(numerical=["x"], target="flag")
    suite = build_suite(frame.iloc[:1000], columns)
    batch = frame.iloc[1000:]
    assert validate_batch(None, batch, suite=suite).success
    replayed = validate_batch(None, pd.concat([batch, batch.iloc[:100]]), suite=suite)
    assert kinds(replayed) == {"duplicate_rows"}


def test_expected_unique_share_matches_subsamples_of_the_reference() -> None:
    rng = np.random.default_rng(3)
    values = rng.choice(40, 600, p=np.arange(1, 41) / np.arange(1, 41).sum())
    _, counts = np.unique(values, return_counts=True)
    r, f = np.unique(counts, return_counts=True)
    histogram = [[int(a), int(b)] for a, b in zip(r, f, strict=True)]
    for n in (5, 30, 200):
        draws = [rng.choice(values, n, replace=False) for _ in range(2000)]
        simulated = np.mean(
            [np.mean(pd.Series(d).map(pd.Series(d).value_counts()) == 1) for d in draws]
        )
        assert unique_share(histogram, n) == pytest.approx(simulated, abs=0.01)
    assert unique_share([[1, 1000]], 10**6) == 1.0  # all distinct: nothing to repeat
    assert unique_share([[500, 3]], 10**6) == pytest.approx(0.0, abs=1e-12)


def test_long_tail_categories_are_judged_by_their_unseen_mass() -> None:
    rng = np.random.default_rng(4)

    def make(n: int) -> pd.DataFrame:
        sku = pd.Series([f"sku_{k}" for k in rng.zipf(1.6, n)], dtype="str")
        return pd.DataFrame({"sku": sku, "flag": rng.integers(0, 2, n)})

    columns = ColumnsConfig(categorical=["sku"], target="flag")
    suite = build_suite(make(500), columns)
    assert all(validate_batch(None, make(500), suite=suite).success for _ in range(10))
    # A frequent new value is still an incident, however open-ended the column looks.
    batch = make(500)
    batch.loc[batch.index[:150], "sku"] = "maybe"
    assert kinds(validate_batch(None, batch, suite=suite)) == {"unseen_category"}


def test_null_bound_is_beta_binomial_at_the_batch_size() -> None:
    rng = np.random.default_rng(5)
    reference = pd.DataFrame(
        {"x": pd.Series(rng.normal(size=2000)).mask(rng.random(2000) < 0.3), "flag": 0}
    )
    suite = build_suite(reference, ColumnsConfig(numerical=["x"], target="flag"))
    nulls = entry(suite, "null_rate", "x")

    def tolerated(n: int) -> float:
        return 1 - resolve_entries([nulls], n)[0]["kwargs"]["mostly"]

    # Sampling noise of 30% nulls in 50 rows is 6.5 points: the old fixed 35% failed ~7% of
    # clean batches; at 100,000 rows only the reference's own uncertainty is left.
    assert tolerated(50) > 0.5
    assert 0.3 < tolerated(100_000) < 0.4  # the reference rate, its own noise and the margin
    assert tolerated(50) > tolerated(500) > tolerated(5000) > tolerated(100_000)


def test_resolution_keeps_the_entry_shape_and_leaves_old_suites_alone() -> None:
    suite = build_suite(low_cardinality(500, 6), LOW)
    resolved = resolve_entries(suite["expectations"], 50)
    assert [(e["kind"], e["column"], e["type"], set(e["kwargs"])) for e in resolved] == [
        (e["kind"], e["column"], e["type"], set(e["kwargs"])) for e in suite["expectations"]
    ]
    old = [{k: v for k, v in e.items() if k != "learnt"} for e in suite["expectations"]]
    assert resolve_entries(old, 50) == old
    # A suite of schema version "1" (no learnt bounds) still validates batches.
    v1 = {"schema_version": "1", "expectations": old}
    assert kinds(validate_batch(None, low_cardinality(100, 7).drop(columns="a"), suite=v1)) == {
        "missing_column"
    }


def test_a_bound_failing_on_held_out_reference_rows_is_widened_with_a_note() -> None:
    n = 2000
    reference = low_cardinality(n, 8).assign(x=np.random.default_rng(8).normal(size=n))
    held = np.random.default_rng(0).permutation(n)[
        n // 2 :
    ]  # the half build_checked_suite holds out
    reference.loc[held[: len(held) // 3], "x"] = np.nan  # nulls the learning half never saw
    columns = LOW.model_copy(update={"numerical": ["x"]})
    suite = build_checked_suite(reference, columns)
    [note] = [x for x in suite["notes"] if x["kind"] == "null_rate"]
    assert note["column"] == "x" and note["action"].startswith("widened")
    assert entry(suite, "null_rate", "x")["learnt"]["slack"] > 0
    assert validate_batch(None, reference, suite=suite).success


def test_a_check_the_reference_itself_fails_is_dropped_with_a_note() -> None:
    policy = QualityPolicy.model_validate(
        {
            "expectations": [
                {
                    "type": "ExpectColumnValuesToBeInSet",
                    "kwargs": {"column": "a", "value_set": ["a0"]},
                }
            ]
        }
    )
    reference = low_cardinality(500, 9)
    suite = build_checked_suite(reference, LOW, policy)
    assert [(x["kind"], x["column"]) for x in suite["notes"]] == [("custom", "a")]
    assert "dropped" in suite["notes"][0]["action"]
    assert not [e for e in suite["expectations"] if e["kind"] == "custom"]
    assert validate_batch(None, reference, suite=suite).success


def test_row_count_is_judged_by_accepted_batches() -> None:
    suite = build_suite(low_cardinality(500, 10), LOW)
    few = with_accepted_rows(suite, [1000, 1100, 950])
    assert validate_batch(None, low_cardinality(10, 11), suite=few).success  # too few to judge
    learnt = with_accepted_rows(suite, [1000, 1100, 950, 1020, 980, 1050])
    assert kinds(validate_batch(None, low_cardinality(10, 11), suite=learnt)) == {"row_count"}
    assert validate_batch(None, low_cardinality(900, 12), suite=learnt).success
    [incident] = validate_batch(None, low_cardinality(10, 11), suite=learnt).incidents
    assert incident.observed == 10 and "between" in incident.message


def test_the_loop_reads_accepted_batch_sizes_from_its_store(tmp_path) -> None:
    store = LoopStore(tmp_path)
    for key, rows, success in [("b1", 100, True), ("b2", 200, False), ("b3", 300, True)]:
        store.write_frame(store.batch_dir(key) / "batch.parquet", low_cardinality(3, 0))
        store.write_batch_json(key, "ingest", {"rows": rows, "columns": 4, "digest": "d"})
        store.write_batch_json(key, "quality", {"success": success})
    assert accepted_rows(store, "b4") == [100, 300]
    assert accepted_rows(store, "b3") == [100]  # a batch is not judged by itself


def test_slice_by_slice_validation_resolves_the_same_bounds_and_renames(tmp_path) -> None:
    from mlops_loop.core.quality import validate_parquet

    suite = build_suite(low_cardinality(2000, 13), LOW)
    clean, renamed = (
        low_cardinality(3000, 14),
        low_cardinality(3000, 15).rename(columns={"b": "b2"}),
    )
    for name, frame in (("clean", clean), ("renamed", renamed)):
        frame.to_parquet(tmp_path / f"{name}.parquet")
        chunked = validate_parquet(tmp_path / f"{name}.parquet", suite, chunk_rows=700)
        whole = validate_batch(None, frame, suite=suite)
        assert [i.to_dict() for i in chunked.incidents] == [i.to_dict() for i in whole.incidents]
    assert kinds(whole) == {"renamed_column"} and whole.incidents[0].observed["renamed_to"] == "b2"


def test_the_snapshot_records_how_its_suite_was_adjusted(tmp_path, demo_frames) -> None:
    import json

    from mlops_loop.core.config import load_config
    from mlops_loop.core.steps.reference import take_reference_snapshot
    from tests.conftest import write_loop

    reference, _ = demo_frames
    tight = {"type": "ExpectColumnValuesToBeBetween", "kwargs": {"column": "age", "max_value": 30}}
    config = load_config(write_loop(tmp_path, reference, **{"quality.expectations": [tight]}))
    info = take_reference_snapshot(config)
    assert [(n["kind"], n["column"]) for n in info.suite_notes] == [("custom", "age")]
    store = LoopStore(config.state_dir)
    stored = json.loads((store.snapshot_dir / "snapshot.json").read_text())
    assert "suite_notes" not in stored  # the snapshot record keeps its layout
    suite = store.read_json(store.snapshot_dir / "suite.json")
    assert suite["notes"] == info.to_dict()["suite_notes"]
    assert suite["schema_version"] == "2" and not [
        e for e in suite["expectations"] if e["kind"] == "custom"
    ]
    assert validate_batch(None, reference, suite=suite).success


def test_policy_keys_of_earlier_configs_still_load() -> None:
    from mlops_loop.core.config import LoopConfig

    old = {
        "null_rate_margin": 0.05,
        "range_margin": 0.5,
        "unseen_category_share": 0.01,
        "min_rows": 1,
        "max_rows": None,
        "duplicate_share": 0.05,
        "expectations": [],
    }
    config = LoopConfig(
        columns=LOW, sources={"reference": "r.parquet", "landing": "in"}, quality=old
    )
    assert config.quality.duplicate_share == 0.05 and config.quality.error_rate == 0.001
    suite = build_suite(low_cardinality(500, 16), LOW, config.quality)
    assert entry(suite, "duplicate_rows", None)["learnt"]["margin"] == 0.05


@pytest.mark.parametrize("n_reference, n", [(30, 40), (300, 300), (200, 5_000)])
def test_the_range_bound_is_exact_whatever_the_distribution(n_reference: int, n: int) -> None:
    """Values outside the range of N reference values, among n new ones: beta-binomial(n, 2,
    N - 1). At a bound's level of 10% it is exceeded in about 10% of clean batches, Cauchy or
    not; no more (a false alarm rate above the level) and not far less (a lax bound)."""
    rng = np.random.default_rng(n_reference + n)
    share = range_share({"values": n_reference, "alpha": 0.1}, n)
    exceeded = []
    for _ in range(2_000):
        reference, batch = rng.standard_cauchy(n_reference), rng.standard_cauchy(n)
        outside = (batch < reference.min()) | (batch > reference.max())
        exceeded.append(outside.mean() > share)
    # Within three standard errors of the level (0.7 points in 2,000 batches); the quantile of
    # a discrete count is a little conservative at small n.
    assert 0.04 < np.mean(exceeded) < 0.1 + 3 * np.sqrt(0.09 / 2_000)


def test_a_new_value_in_a_tenth_of_the_rows_is_caught_even_in_a_wide_suite() -> None:
    """Bounds of a wide suite share the error rate (alpha of a few millionths each): the
    reference's uncertainty and the batch's are integrated once, so a closed three-value
    domain learnt from 300 rows still refuses a new value in 10% of a 300-row batch."""
    learnt = {"values": 300, "singletons": 0, "doubletons": 0, "alpha": 0.001 / 160, "margin": 0.01}
    assert unseen_share(learnt, 300) < 0.06
    # A long tail seen once in a third of its values tolerates about that share.
    tail = {**learnt, "singletons": 100, "doubletons": 30}
    assert 0.33 < unseen_share(tail, 300) < 0.6


@pytest.mark.parametrize("n", [1, 7, 300, 5_000])
@pytest.mark.parametrize("a, b", [(0.5, 300.5), (2.0, 1_999.0), (600.5, 1_400.5)])
@pytest.mark.parametrize("q", [0.5, 0.999, 1 - 3e-6])
def test_beta_binomial_quantile_equals_scipy_s(n: int, a: float, b: float, q: float) -> None:
    from scipy import stats

    from mlops_loop.core.quality.bounds import betabinom_quantile

    assert betabinom_quantile(q, n, a, b) == int(stats.betabinom.ppf(q, n, a, b))
