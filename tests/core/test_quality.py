"""The quality gate against real Great Expectations, on small seeded frames."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlops_loop.core.config import ColumnsConfig, LoopConfig, QualityPolicy
from mlops_loop.core.errors import DataError
from mlops_loop.core.quality import (
    SCHEMA_VERSION,
    QualityResult,
    build_suite,
    validate_batch,
)

COLUMNS = ColumnsConfig(
    numerical=["age", "income"], categorical=["plan"], target="churned", id="customer_id"
)


def make_frame(n: int, seed: int, age_shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": np.arange(n) + seed * 1_000_000,
            "age": rng.normal(40 + 12 * age_shift, 12, n).round(1),
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


def check(current: pd.DataFrame, suite: dict) -> QualityResult:
    return validate_batch(None, current, suite=suite)


def kinds(result: QualityResult) -> set[tuple[str, str | None, str]]:
    return {(i.kind, i.column, i.severity) for i in result.incidents}


@pytest.mark.parametrize("n", [100, 5000, 100_000])
def test_clean_batch_of_any_size_passes(suite: dict, n: int) -> None:
    result = check(make_frame(n, seed=n), suite)
    assert result.success, result.to_markdown()
    assert result.incidents == []
    assert result.statistics["rows"] == n


def test_shifted_but_plausible_batch_passes(suite: dict) -> None:
    result = check(make_frame(3000, seed=7, age_shift=0.5), suite)
    assert result.success, result.to_markdown()


def test_inferred_columns_clean_batch_passes(reference: pd.DataFrame) -> None:
    current = make_frame(1000, seed=3)
    result = validate_batch(
        reference.drop(columns="customer_id"), current.drop(columns="customer_id")
    )
    assert result.success, result.to_markdown()


def test_missing_column_is_one_error_and_no_noise(suite: dict) -> None:
    result = check(make_frame(500, seed=2).drop(columns="income"), suite)
    assert not result.success
    assert kinds(result) == {("missing_column", "income", "error")}


def test_unexpected_column_warns_without_blocking(suite: dict) -> None:
    current = make_frame(500, seed=2).assign(extra=1.0)
    result = check(current, suite)
    assert result.success
    assert kinds(result) == {("unexpected_column", "extra", "warn")}


@pytest.mark.parametrize("old, new", [("plan", "tier"), ("income", "revenue")])
def test_renamed_column_is_one_blocking_incident_naming_both(
    suite: dict, old: str, new: str
) -> None:
    result = check(make_frame(500, seed=2).rename(columns={old: new}), suite)
    assert not result.success
    assert kinds(result) == {("renamed_column", old, "error")}
    [incident] = result.incidents
    assert incident.observed["renamed_to"] == new
    assert old in incident.message and new in incident.message


def test_a_missing_column_and_an_unrelated_new_one_stay_two_incidents(suite: dict) -> None:
    batch = make_frame(500, seed=2).drop(columns="income")
    batch["score"] = np.random.default_rng(0).normal(0, 1, len(batch))  # not income's shape
    batch["label"] = "x"  # text, where income held numbers
    result = check(batch, suite)
    assert kinds(result) == {
        ("missing_column", "income", "error"),
        ("unexpected_column", "score", "warn"),
        ("unexpected_column", "label", "warn"),
    }


def test_numbers_as_strings_are_a_type_mismatch(suite: dict) -> None:
    current = make_frame(500, seed=2)
    current["age"] = current["age"].astype(str)
    result = check(current, suite)
    assert kinds(result) == {("type_mismatch", "age", "error")}
    assert result.incidents[0].observed == "string"
    assert result.incidents[0].expected == "numeric"


def test_null_rate_above_reference_plus_margin(suite: dict) -> None:
    current = make_frame(500, seed=2)
    current.loc[current.index[:100], "income"] = np.nan
    result = check(current, suite)
    assert kinds(result) == {("null_rate", "income", "error")}
    assert result.incidents[0].observed == pytest.approx(0.2)


def test_unit_change_is_out_of_range(suite: dict) -> None:
    current = make_frame(500, seed=2)
    current["income"] = current["income"] * 1000
    result = check(current, suite)
    assert not result.success
    assert kinds(result) == {("out_of_range", "income", "error")}
    assert "income" in result.incidents[0].message


def test_unseen_category(suite: dict) -> None:
    current = make_frame(500, seed=2)
    current.loc[current.index[:50], "plan"] = "enterprise"
    result = check(current, suite)
    assert kinds(result) == {("unseen_category", "plan", "error")}
    assert "enterprise" in result.incidents[0].observed["values"]


def test_empty_batch_is_a_row_count_error(suite: dict, reference: pd.DataFrame) -> None:
    result = check(reference.iloc[:0], suite)
    assert not result.success
    assert kinds(result) == {("row_count", None, "error")}
    assert result.incidents[0].observed == 0


def test_to_dict_is_json_with_stable_keys(suite: dict) -> None:
    current = make_frame(300, seed=4).drop(columns="plan").assign(extra="x")
    result = check(current, suite)
    data = json.loads(json.dumps(result.to_dict()))
    assert list(data) == ["schema_version", "success", "incidents", "statistics"]
    assert data["schema_version"] == SCHEMA_VERSION and data["success"] is False
    assert set(data["incidents"][0]) == {
        "kind",
        "column",
        "severity",
        "observed",
        "expected",
        "message",
    }
    assert {"rows", "columns", "expectations_evaluated", "expectations_failed", "seconds"} <= set(
        data["statistics"]
    )
    assert "missing_column" in result.to_markdown()
    page = result.to_html()
    assert page.index("FAILED") < page.index("<table") and "<link" not in page


def test_suite_round_trips_through_json(reference: pd.DataFrame, suite: dict) -> None:
    loaded = json.loads(json.dumps(suite))
    assert loaded == suite and loaded["schema_version"] == SCHEMA_VERSION
    assert {e["kind"] for e in loaded["expectations"]} >= {
        "missing_column",
        "unexpected_column",
        "type_mismatch",
        "null_rate",
        "out_of_range",
        "unseen_category",
        "row_count",
    }
    config = LoopConfig(columns=COLUMNS, sources={"reference": "r.parquet", "landing": "in"})
    clean = make_frame(400, seed=5)
    broken = clean.assign(age=clean["age"] * 1000)
    for current, passes in ((clean, True), (broken, False)):
        learnt = validate_batch(reference, current, config=config)
        stored = validate_batch(None, current, suite=loaded)
        assert learnt.success is stored.success is passes
        assert kinds(learnt) == kinds(stored)


def test_timestamp_read_from_csv_as_text_is_not_a_type_mismatch() -> None:
    reference = make_frame(300, seed=1).assign(
        ts=pd.date_range("2024-01-01", periods=300, freq="h")
    )
    current = make_frame(300, seed=2).assign(
        ts=pd.date_range("2024-02-01", periods=300, freq="h").strftime("%Y-%m-%dT%H:%M:%S")
    )
    columns = COLUMNS.model_copy(update={"timestamp": "ts"})
    result = validate_batch(reference, current, suite=build_suite(reference, columns))
    assert result.success, result.to_markdown()


def test_duplicate_ids_warn_without_blocking(suite: dict) -> None:
    current = make_frame(300, seed=2)
    current.loc[current.index[:10], "customer_id"] = current["customer_id"].iloc[10]
    result = check(current, suite)
    assert result.success
    assert kinds(result) == {("duplicate_rows", "customer_id", "warn")}


def test_policy_margins_are_respected(reference: pd.DataFrame) -> None:
    strict = build_suite(reference, COLUMNS, QualityPolicy(null_rate_margin=0.0))
    current = make_frame(500, seed=2)
    # 4% nulls where the reference had none: more than sampling explains, within the default
    # margin of 2% on top of it.
    current.loc[current.index[:20], "age"] = np.nan
    assert kinds(check(current, strict)) == {("null_rate", "age", "error")}
    assert check(current, build_suite(reference, COLUMNS)).success


def test_unusable_input_raises_data_error(suite: dict) -> None:
    with pytest.raises(DataError, match="DataFrame"):
        validate_batch(None, [1, 2, 3], suite=suite)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="reference"):
        validate_batch(None, make_frame(10, seed=1))
    with pytest.raises(DataError, match="schema_version"):
        validate_batch(None, make_frame(10, seed=1), suite={"expectations": []})


def test_replayed_rows_are_a_blocking_incident(reference: pd.DataFrame, suite: dict) -> None:
    batch = make_frame(1000, seed=5)
    replayed = pd.concat([batch, batch.iloc[:200]], ignore_index=True)
    result = check(replayed, suite)
    assert not result.success
    dup = [i for i in result.incidents if i.kind == "duplicate_rows" and i.column is None]
    assert len(dup) == 1 and dup[0].severity == "error"
    assert dup[0].observed["rows"] == 400  # both copies of each of the 200 repeated rows
    assert "repeat another row entirely" in dup[0].message
    # A handful of repeats stays within the default 5% tolerance.
    few = pd.concat([batch, batch.iloc[:5]], ignore_index=True)
    assert not [i for i in check(few, suite).incidents if i.column is None]


def test_row_count_upper_bound(reference: pd.DataFrame) -> None:
    suite = build_suite(reference, COLUMNS, QualityPolicy(max_rows=500))
    result = check(make_frame(800, seed=6), suite)
    [incident] = result.incidents
    assert (incident.kind, incident.observed) == ("row_count", 800)
    assert "between 1 and 500" in incident.message


def test_user_declared_expectations(reference: pd.DataFrame) -> None:
    policy = QualityPolicy.model_validate(
        {
            "expectations": [
                {
                    "type": "ExpectColumnValuesToBeBetween",
                    "kwargs": {"column": "age", "min_value": 18, "max_value": 100},
                },
                {
                    "type": "ExpectColumnValuesToMatchRegex",
                    "kwargs": {"column": "plan", "regex": "^(basic|plus)$"},
                    "severity": "warn",
                },
            ]
        }
    )
    suite = build_suite(reference, COLUMNS, policy)
    batch = make_frame(1000, seed=7)
    batch.loc[:9, "age"] = 12.0
    result = check(batch, suite)
    custom = {(i.column, i.severity) for i in result.incidents if i.kind == "custom"}
    assert custom == {("age", "error"), ("plan", "warn")}
    assert not result.success
    [age] = [i for i in result.incidents if i.kind == "custom" and i.column == "age"]
    assert "ExpectColumnValuesToBeBetween on 'age' failed" in age.message


def test_unknown_user_expectation_is_named(reference: pd.DataFrame) -> None:
    policy = QualityPolicy.model_validate(
        {"expectations": [{"type": "ExpectMagic", "kwargs": {"column": "age"}}]}
    )
    with pytest.raises(DataError, match="ExpectMagic"):
        check(make_frame(100, seed=8), build_suite(reference, COLUMNS, policy))


@pytest.mark.slow
def test_clean_million_row_batch_passes(suite: dict) -> None:
    result = check(make_frame(1_000_000, seed=9), suite)
    assert result.success, result.to_markdown()


def test_data_docs_page_of_a_validation(reference: pd.DataFrame, suite: dict) -> None:
    batch = make_frame(500, seed=10)
    batch["income"] = batch["income"] * 1000
    result = check(batch, suite)
    page = result.data_docs_html()
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert "Expectation Validation Result" in page and "quality_gate" in page
    assert "income" in page
    assert "gx_result" not in json.dumps(result.to_dict())
