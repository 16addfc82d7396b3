"""The quality gate on odd input: datetimes, infinities and column labels that are not names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops_loop.core.config import ColumnsConfig
from mlops_loop.core.errors import DataError
from mlops_loop.core.quality import build_suite, validate_batch
from mlops_loop.core.quality.chunked import validate_parquet


def dated(n: int, seed: int, years: int = 0) -> pd.DataFrame:
    """Sign-up dates spread over 2021 (in random order, so not a clock) and a number."""
    rng = np.random.default_rng(seed)
    days = pd.to_timedelta(rng.integers(0, 365, n), unit="D")
    return pd.DataFrame(
        {
            "signup": pd.Timestamp("2021-01-01") + days + pd.DateOffset(years=years),
            "x": rng.normal(0, 1, n),
            "churned": rng.integers(0, 2, n),
        }
    )


COLUMNS = ColumnsConfig(numerical=["x", "signup"], target="churned")


def out_of_range(result) -> list[tuple[str, str | None]]:
    return [(i.kind, i.column) for i in result.incidents]


@pytest.mark.parametrize("years", [4, 10, -4])
@pytest.mark.parametrize("columns", [None, COLUMNS], ids=["inferred", "configured"])
def test_datetime_shifted_by_years_is_out_of_range(years, columns):
    reference = dated(1000, seed=1)
    suite = build_suite(reference, columns)
    [entry] = [
        e for e in suite["expectations"] if e["kind"] == "out_of_range" and e["column"] == "signup"
    ]
    assert entry["kwargs"]["min_value"] < "2021-01-01" < entry["kwargs"]["max_value"] < "2022-08"
    result = validate_batch(None, dated(500, seed=2, years=years), suite=suite)
    assert not result.success
    assert out_of_range(result) == [("out_of_range", "signup")]
    assert "'signup' has 100.0% of values" in result.incidents[0].message
    assert validate_batch(None, dated(500, seed=3), suite=suite).success


def test_datetime_range_holds_for_text_dates_and_timezones():
    reference = dated(1000, seed=1)
    suite = build_suite(reference)
    clean, shifted = dated(300, seed=2), dated(300, seed=2, years=4)
    as_text = clean.assign(signup=clean["signup"].dt.strftime("%Y-%m-%dT%H:%M:%S"))
    assert validate_batch(None, as_text, suite=suite).success  # ISO text is accepted as before
    text_shifted = shifted.assign(signup=shifted["signup"].dt.strftime("%Y-%m-%d"))
    assert out_of_range(validate_batch(None, text_shifted, suite=suite)) == [
        ("out_of_range", "signup")
    ]
    aware = clean.assign(signup=clean["signup"].dt.tz_localize("UTC"))
    assert validate_batch(None, aware, suite=suite).success
    # Learnt on aware times, checked on naive ones (both read as UTC).
    aware_suite = build_suite(reference.assign(signup=reference["signup"].dt.tz_localize("UTC")))
    assert validate_batch(None, clean, suite=aware_suite).success
    assert not validate_batch(None, shifted, suite=aware_suite).success


def test_datetime_clock_gets_no_range_when_inferred():
    """Increasing unique times are an event clock: every new batch leaves their range."""
    reference = dated(300, seed=1).assign(ts=pd.date_range("2024-01-01", periods=300, freq="h"))
    later = dated(300, seed=2).assign(ts=pd.date_range("2025-01-01", periods=300, freq="h"))
    assert validate_batch(reference, later).success


def test_datetime_shift_is_out_of_range_chunked(tmp_path):
    suite = build_suite(dated(1000, seed=1), COLUMNS)
    for years, passes in ((0, True), (4, False)):
        path = tmp_path / f"batch{years}.parquet"
        dated(3000, seed=2, years=years).to_parquet(path, index=False, row_group_size=500)
        chunked = validate_parquet(path, suite, chunk_rows=700)
        whole = validate_batch(None, pd.read_parquet(path), suite=suite)
        assert chunked.success is whole.success is passes
        assert [i.to_dict() for i in chunked.incidents] == [i.to_dict() for i in whole.incidents]


def test_reference_with_infinities_learns_its_range_from_finite_values():
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 500), "y": rng.normal(5, 1, 500)})
    reference.loc[[3, 7], "x"] = [np.inf, -np.inf]
    suite = build_suite(reference)
    [entry] = [
        e for e in suite["expectations"] if e["kind"] == "out_of_range" and e["column"] == "x"
    ]
    assert -10 < entry["kwargs"]["min_value"] < -2 and 2 < entry["kwargs"]["max_value"] < 10
    assert validate_batch(None, reference, suite=suite).success  # 2 infinities in 500: tolerated
    batch = reference.copy()
    batch.loc[:49, "x"] = np.inf
    result = validate_batch(None, batch, suite=suite)
    assert out_of_range(result) == [("out_of_range", "x")]
    assert result.incidents[0].observed["examples"] == ["inf"]
    assert "10.0% of values (e.g. 'inf')" in result.incidents[0].message


def test_column_of_only_infinities_and_nulls_gets_no_range():
    reference = pd.DataFrame(
        {"x": [np.inf, -np.inf, np.nan] * 40, "y": np.arange(120) * 0.5, "z": [1e308, -1e308] * 60}
    )
    suite = build_suite(reference)
    ranged = {
        e["column"]: e["kwargs"] for e in suite["expectations"] if e["kind"] == "out_of_range"
    }
    assert "x" not in ranged
    assert None not in (ranged["z"]["min_value"], ranged["z"]["max_value"])  # no JSON infinity
    result = validate_batch(None, reference, suite=suite)
    assert result.success, result.to_markdown()


def test_cli_validate_of_a_reference_with_infinities(tmp_path):
    from tests.test_cli import run

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(0, 1, 300), "c": rng.choice(["a", "b"], 300)})
    frame.loc[5, "x"] = np.inf
    frame.to_csv(tmp_path / "ref.csv", index=False)
    frame.to_csv(tmp_path / "cur.csv", index=False)
    out = run("validate", str(tmp_path / "ref.csv"), str(tmp_path / "cur.csv"))
    assert out.returncode == 0, out.stderr
    assert '"success": true' in out.stdout


def test_multiindex_columns_are_a_data_error_naming_them():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        rng.normal(size=(20, 2)), columns=pd.MultiIndex.from_tuples([("a", "x"), ("a", "y")])
    )
    flat = pd.DataFrame({"a_x": rng.normal(size=20), "a_y": rng.normal(size=20)})
    expected = r"MultiIndex column labels .*\('a', 'x'\).*expected flat, unique string"
    with pytest.raises(DataError, match="reference has " + expected):
        build_suite(frame)
    with pytest.raises(DataError, match="current batch has " + expected):
        validate_batch(None, frame, suite=build_suite(flat))
    with pytest.raises(DataError, match="current batch has " + expected):
        validate_batch(frame, frame)


@pytest.mark.parametrize("label", [("a", "x"), 3, 2.5, None], ids=["tuple", "int", "float", "none"])
def test_column_labels_that_are_not_strings_are_named(label):
    frame = pd.DataFrame({"ok": [1.0, 2.0, 3.0]})
    frame[label] = [1, 2, 3]
    with pytest.raises(DataError, match=r"not strings: .*expected flat, unique string"):
        build_suite(frame)
    with pytest.raises(DataError, match=r"not strings"):
        validate_batch(None, frame, suite=build_suite(frame[["ok"]]))
