"""Drift on inputs a careless user gives it: datetimes, batches of all-new categories, empty
batches. Each case once gave a silent wrong answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_loop.core.config import DriftPolicy, LoopConfig
from mlops_loop.core.drift import (
    ReferenceProfile,
    evaluate_drift,
    evaluate_drift_parquet,
)
from mlops_loop.core.errors import DataError

ALONE = DriftPolicy(multivariate=False)  # the per-column verdicts, without the joint check


def entry(report, name):
    [found] = [f for f in report.features if f.name == name]
    return found


def hourly(n: int, start: str = "2020-01-01") -> pd.Series:
    return pd.Series(pd.date_range(start, periods=n, freq="h"))


def frames(n: int = 1000, years: int = 0, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ref = pd.DataFrame({"x": rng.normal(size=n), "when": hourly(n)})
    cur = pd.DataFrame({"x": rng.normal(size=n), "when": hourly(n) + pd.DateOffset(years=years)})
    return ref, cur


# -- datetimes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("years", [4, 10])
def test_a_datetime_column_shifted_by_years_is_drift(years: int) -> None:
    ref, cur = frames(years=years)
    report = evaluate_drift(ref, cur, policy=ALONE)
    when = entry(report, "when")
    assert when.kind == "datetime" and when.method == "ks"
    assert when.drifted and when.effect_size == pytest.approx(1.0)
    assert report.dataset_drift and report.drifted_features == ["when"]
    # Summaries are in epoch seconds: a shift of `years` years shows in the minimum.
    shift = when.current_summary["min"] - when.reference_summary["min"]
    assert shift == pytest.approx(pd.Timedelta(days=365.25 * years).total_seconds(), rel=0.01)


def test_a_clean_batch_over_the_same_dates_is_not_drift() -> None:
    rng = np.random.default_rng(3)
    span = pd.Timestamp("2020-01-01").value + rng.integers(0, 4 * 365 * 86400, 2000) * 10**9
    times = pd.to_datetime(span)
    ref = pd.DataFrame({"when": times[:1000]})
    cur = pd.DataFrame({"when": times[1000:]})
    report = evaluate_drift(ref, cur)
    when = entry(report, "when")
    assert when.kind == "datetime" and when.error is None
    assert not when.drifted and when.effect_size < 0.1
    assert not report.dataset_drift


def test_iso_text_dates_are_datetimes_as_after_a_csv_round_trip(tmp_path: Path) -> None:
    ref, cur = frames(years=4)
    ref.to_csv(tmp_path / "ref.csv", index=False)
    cur.to_csv(tmp_path / "cur.csv", index=False)
    ref_text, cur_text = pd.read_csv(tmp_path / "ref.csv"), pd.read_csv(tmp_path / "cur.csv")
    assert not pd.api.types.is_datetime64_any_dtype(ref_text["when"])  # text
    when = entry(evaluate_drift(ref_text, cur_text, policy=ALONE), "when")
    assert when.kind == "datetime" and when.drifted
    same = entry(evaluate_drift(ref_text, ref_text.copy(), policy=ALONE), "when")
    assert same.kind == "datetime" and same.effect_size == 0.0 and not same.drifted


def test_text_that_is_not_all_dates_stays_categorical() -> None:
    ref = pd.DataFrame({"code": ["2020-01-01"] * 50 + ["unknown"] * 50})
    assert entry(evaluate_drift(ref, ref.copy()), "code").kind == "categorical"


def test_a_batch_value_that_is_not_a_date_is_named_in_the_entry() -> None:
    ref, cur = frames()
    cur["when"] = cur["when"].astype(str)
    cur.loc[7, "when"] = "yesterday"
    when = entry(evaluate_drift(ref, cur, policy=ALONE), "when")
    assert not when.drifted
    assert "'yesterday' in the current batch is not a date" in when.error


def test_a_configured_numerical_column_holding_dates_is_compared_in_time() -> None:
    ref, cur = frames(years=4)
    config = LoopConfig.model_validate(
        {
            "columns": {"numerical": ["x", "when"], "target": "y"},
            "sources": {"reference": "r.parquet", "landing": "landing"},
            "drift": {"multivariate": False},
        }
    )
    when = entry(evaluate_drift(ref, cur, config=config), "when")
    assert when.kind == "datetime" and when.drifted
    # A profile built with the same config gives the same report.
    profile = ReferenceProfile.from_frame(ref, config)
    assert evaluate_drift(profile, cur, config=config).to_dict() == (
        evaluate_drift(ref, cur, config=config).to_dict()
    )


def test_datetimes_drift_alike_from_frame_profile_and_parquet(tmp_path: Path) -> None:
    ref, cur = frames(years=4)
    cur["when"] = cur["when"].dt.tz_localize("Europe/Paris")  # aware: compared in UTC
    cur.to_parquet(tmp_path / "cur.parquet", index=False)
    expected = evaluate_drift(ref, cur).to_dict()
    profile = ReferenceProfile.from_frame(ref)
    saved = ReferenceProfile.load(profile.save(tmp_path / "profile"))
    assert saved.kinds["when"] == "datetime"
    assert evaluate_drift(saved, cur).to_dict() == expected
    assert evaluate_drift_parquet(saved, tmp_path / "cur.parquet").to_dict() == expected
    assert entry(evaluate_drift(saved, cur), "when").drifted
    assert "when" in expected["multivariate"]["features"]


# -- categories new to the reference ---------------------------------------------------------------
def test_a_batch_of_only_new_categories_is_drift_at_small_sizes() -> None:
    rng = np.random.default_rng(0)
    n = 1000
    ref = pd.DataFrame({"x": rng.normal(size=n), "store": [f"s{i % 200}" for i in range(n)]})
    cur = pd.DataFrame({"x": rng.normal(size=n), "store": [f"t{i % 200}" for i in range(n)]})
    store = entry(evaluate_drift(ref, cur, policy=ALONE), "store")
    assert store.drifted
    assert store.statistics["total_variation"] == pytest.approx(1.0)
    assert store.p_value < 1e-10


def test_new_rare_values_of_a_long_tail_are_no_false_alarm() -> None:
    # A Zipf tail of 20,000 values: every clean batch brings values the reference never saw.
    rng = np.random.default_rng(1)
    weights = 1 / np.arange(1, 20_001) ** 1.1
    weights /= weights.sum()

    def draw(n: int) -> pd.DataFrame:
        return pd.DataFrame({"z": [f"v{i}" for i in rng.choice(weights.size, n, p=weights)]})

    ref = draw(50_000)
    for n in (1000, 10_000):
        cur = draw(n)
        z = entry(evaluate_drift(ref, cur, policy=ALONE), "z")
        new_share = (~cur["z"].isin(set(ref["z"]))).mean()
        assert new_share > 0.05  # plenty of values new to the reference
        assert not z.drifted and z.effect_size < 0.1


def test_an_id_like_column_is_not_drift_for_holding_new_ids() -> None:
    rng = np.random.default_rng(4)
    ref = pd.DataFrame({"id": [f"u{i}" for i in rng.permutation(10_000)[:2000]]})
    cur = pd.DataFrame({"id": [f"u{i}" for i in rng.permutation(10_000)[:500]]})
    ident = entry(evaluate_drift(ref, cur, policy=ALONE), "id")
    assert not ident.drifted and ident.effect_size < 0.1


# -- empty batches ---------------------------------------------------------------------------------
def test_an_empty_batch_is_an_error_not_no_drift(tmp_path: Path) -> None:
    ref, cur = frames()
    with pytest.raises(DataError, match=r"^the current batch is empty \(0 rows\)"):
        evaluate_drift(ref, cur.iloc[:0])
    with pytest.raises(DataError, match=r"^the reference is empty \(0 rows\)"):
        evaluate_drift(ref.iloc[:0], cur)
    cur.iloc[:0].to_parquet(tmp_path / "empty.parquet", index=False)
    with pytest.raises(DataError, match="the current batch is empty"):
        evaluate_drift_parquet(ReferenceProfile.from_frame(ref), tmp_path / "empty.parquet")


def test_the_loop_quarantines_an_empty_batch_and_its_drift_step_refuses_it(
    loop_config: LoopConfig, demo_frames
) -> None:
    from mlops_loop.core.steps.drift import evaluate_batch_drift
    from mlops_loop.core.steps.ingest import ingest_batch
    from mlops_loop.core.steps.quality import check_quality
    from mlops_loop.core.steps.reference import take_reference_snapshot
    from mlops_loop.core.store import LoopStore

    _, batches = demo_frames
    landed = loop_config.sources.landing / "empty_batch.parquet"
    next(iter(batches.values())).iloc[:0].to_parquet(landed, index=False)
    take_reference_snapshot(loop_config)
    ingest_batch(loop_config, "empty_batch", landed)
    quality = check_quality(loop_config, "empty_batch")
    # The gate stops it first, so the asset graph never asks for its drift...
    assert not quality.success
    assert "row_count" in {i.kind for i in quality.incidents if i.severity == "error"}
    # ...and asked anyway (a run launched by hand), the step refuses it by name.
    with pytest.raises(DataError, match="batch 'empty_batch' is empty \\(0 rows\\)"):
        evaluate_batch_drift(loop_config, "empty_batch")
    assert LoopStore(loop_config.state_dir).batch_json("empty_batch", "drift") is None
