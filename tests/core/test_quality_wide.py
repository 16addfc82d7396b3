"""Wide suites judged in pandas give the verdict GX gives, incident for incident.

`validate_batch` hands a suite of more than `GX_WHOLE_ENTRIES` entries to the pandas evaluator
and GX reruns only what failed (at most `GX_FAILED_ENTRIES`); repeated rows are found in pandas
first at any width (`PANDAS_FIRST`). Each broken batch of a seeded
table is judged three ways, which must agree to the letter: GX alone, pandas with GX rerunning
the failures, and pandas alone (GX judging only what pandas declines).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from mlops_loop.core.config import ColumnsConfig, QualityPolicy
from mlops_loop.core.quality import QualityResult, build_suite, validate_batch
from mlops_loop.core.quality import validate as validate_module
from mlops_loop.core.quality.chunked import validate_parquet
from mlops_loop.core.quality.vectorized import evaluate

COLUMNS = ColumnsConfig(
    numerical=["age", "income", "score", "visits", "signup", "ratio"],
    categorical=["plan", "tier", "vip"],
    target="churned",
    id="customer_id",
)
POLICY = QualityPolicy.model_validate(
    {
        "expectations": [
            {
                "type": "ExpectColumnValuesToBeBetween",
                "kwargs": {"column": "age", "min_value": 0, "max_value": 90, "strict_max": True},
            },
            {"type": "ExpectColumnValuesToNotBeNull", "kwargs": {"column": "plan"}},
            {
                "type": "ExpectColumnValuesToMatchRegex",
                "kwargs": {"column": "plan", "regex": "^(basic|plus|pro)$"},
                "severity": "warn",
            },
            {"type": "ExpectColumnMeanToBeBetween", "kwargs": {"column": "age", "max_value": 45}},
        ]
    }
)
MODES = {
    "gx": {"GX_WHOLE_ENTRIES": 10**9, "GX_WHOLE_ROWS": 10**12, "PANDAS_FIRST": frozenset()},
    "pandas+gx": {"GX_WHOLE_ENTRIES": 0},
    "pandas": {"GX_WHOLE_ENTRIES": 0, "GX_FAILED_ENTRIES": 0},
}


def make(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    visits = pd.array(rng.integers(0, 30, n), dtype="Int64")
    visits[rng.random(n) < 0.05] = pd.NA
    return pd.DataFrame(
        {
            "customer_id": np.arange(n) + seed * 1_000_000,
            "age": rng.normal(40, 8, n).round(1),
            "income": rng.lognormal(10, 0.5, n),
            "score": rng.normal(0, 1, n).astype("float32"),
            "visits": visits,
            "signup": pd.Timestamp("2022-01-01") + pd.to_timedelta(rng.integers(0, 700, n), "D"),
            "ratio": np.where(rng.random(n) < 0.002, np.inf, rng.random(n)),
            "plan": rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2]),
            "tier": pd.Categorical(rng.choice(["gold", "silver"], n)),
            "vip": rng.random(n) < 0.1,
            "churned": rng.integers(0, 2, n),
        }
    )


def _set(frame: pd.DataFrame, rows: slice, column: str, value: object) -> pd.DataFrame:
    frame = frame.copy()
    if isinstance(frame[column].dtype, pd.CategoricalDtype):
        frame[column] = frame[column].astype(object)
    frame.loc[frame.index[rows], column] = value
    return frame


BROKEN: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "clean": lambda f: f,
    "missing column": lambda f: f.drop(columns="income"),
    "extra column": lambda f: f.assign(extra=1.0),
    "renamed column": lambda f: f.rename(columns={"plan": "tier2"}),
    "numbers as text": lambda f: f.assign(age=f["age"].astype(str)),
    "nulls": lambda f: _set(f, slice(0, 300), "income", np.nan),
    "nulls in a nullable int": lambda f: _set(f, slice(0, 200), "visits", pd.NA),
    "unit change": lambda f: f.assign(income=f["income"] * 1000),
    "float32 shift": lambda f: f.assign(score=f["score"] * 50),
    "integers out of range": lambda f: _set(f, slice(0, 60), "visits", 500),
    "infinities": lambda f: _set(f, slice(0, 40), "ratio", -np.inf),
    "dates four years on": lambda f: f.assign(signup=f["signup"] + pd.DateOffset(years=4)),
    "dates as shifted text": lambda f: f.assign(
        signup=(f["signup"] + pd.DateOffset(years=9)).dt.strftime("%Y-%m-%d")
    ),
    "unseen category": lambda f: _set(f, slice(0, 50), "plan", "enterprise"),
    "unseen categorical": lambda f: _set(f, slice(0, 50), "tier", "bronze"),
    "label outside 0/1": lambda f: _set(f, slice(0, 30), "churned", 2),
    "duplicate ids": lambda f: _set(f, slice(0, 10), "customer_id", 7),
    "replayed rows": lambda f: pd.concat([f, f.iloc[:200]], ignore_index=True),
    "ages over 90": lambda f: _set(f, slice(0, 5), "age", 90.0),
    "empty": lambda f: f.iloc[:0],
    "one row": lambda f: f.iloc[:1],
    "all broken": lambda f: _set(
        f.assign(income=f["income"] * -1, signup=f["signup"] - pd.DateOffset(years=30)),
        slice(0, 300),
        "plan",
        None,
    ),
}


# Cases a suite has nothing to say about: no custom checks and no id when inferred.
QUIET = {"configured": {"one row"}, "inferred": {"one row", "duplicate ids", "ages over 90"}}


@pytest.fixture(scope="module")
def suites() -> dict[str, dict]:
    reference = make(2000, seed=1)
    return {
        "configured": build_suite(reference, COLUMNS, POLICY),
        "inferred": build_suite(reference.drop(columns="customer_id")),
    }


def judged(monkeypatch: pytest.MonkeyPatch, mode: str, judge: Callable[[], QualityResult]):
    with monkeypatch.context() as m:
        for name, value in MODES[mode].items():
            m.setattr(validate_module, name, value)
        return judge()


def comparable(result: QualityResult) -> dict:
    out = result.to_dict()
    out["statistics"].pop("seconds")
    return out


@pytest.mark.parametrize("case", list(BROKEN))
@pytest.mark.parametrize("suite_name", ["configured", "inferred"])
def test_pandas_verdict_equals_the_gx_verdict(monkeypatch, suites, suite_name, case):
    suite = suites[suite_name]
    batch = BROKEN[case](make(1000, seed=2))
    if suite_name == "inferred":
        batch = batch.drop(columns="customer_id", errors="ignore")
    results = {
        mode: judged(monkeypatch, mode, lambda: validate_batch(None, batch, suite=suite))
        for mode in MODES
    }
    expected = comparable(results["gx"])
    if case not in QUIET[suite_name]:
        assert bool(expected["incidents"]) is (case != "clean")
    for mode in ("pandas+gx", "pandas"):
        assert comparable(results[mode]) == expected, mode
    if any(i["kind"] != "type_mismatch" for i in expected["incidents"]):
        assert results["pandas+gx"].gx_result is not None  # GX's own report of the failures


@pytest.mark.parametrize(
    "case", ["clean", "nulls", "unit change", "dates four years on", "replayed rows", "all broken"]
)
def test_chunked_pandas_verdict_equals_the_gx_verdict(monkeypatch, tmp_path, suites, case):
    suite = suites["configured"]
    path = tmp_path / "batch.parquet"
    BROKEN[case](make(3000, seed=3)).to_parquet(path, index=False, row_group_size=500)
    results = {
        mode: judged(monkeypatch, mode, lambda: validate_parquet(path, suite, chunk_rows=700))
        for mode in MODES
    }
    expected = comparable(results["gx"])
    assert expected["success"] is (case == "clean")
    for mode in ("pandas+gx", "pandas"):
        assert comparable(results[mode]) == expected, mode


def test_wide_frame_verdict_equals_the_gx_verdict(monkeypatch):
    """A frame too wide for GX alone (by default) against GX alone, with failures to report."""
    rng = np.random.default_rng(5)
    names = [f"x{i}" for i in range(60)] + [f"c{i}" for i in range(20)]
    reference = pd.DataFrame(
        {
            n: rng.normal(i, 1, 300) if n[0] == "x" else rng.choice(["a", "b", "c"], 300)
            for i, n in enumerate(names)
        }
    )
    suite = build_suite(reference)
    assert len(suite["expectations"]) > validate_module.GX_WHOLE_ENTRIES
    batch = reference.sample(frac=1, random_state=1).reset_index(drop=True)
    batch[names[:5]] = batch[names[:5]] * 100
    batch.loc[:30, "c3"] = "z"
    batch.loc[:40, "x7"] = np.nan
    default = validate_batch(None, batch, suite=suite)
    plain = judged(monkeypatch, "gx", lambda: validate_batch(None, batch, suite=suite))
    assert not plain.success and len(plain.incidents) == 7
    assert comparable(default) == comparable(plain)
    assert len(default.gx_result.results) == 7 < len(plain.gx_result.results)
    assert validate_batch(None, reference, suite=suite).success


def test_evaluator_declines_what_it_cannot_judge_as_gx_does():
    frame = pd.DataFrame({"x": [1.0, 2.0], "o": ["a", 1], "b": [True, False]})
    entries = {
        0: {"type": "ExpectColumnValuesToMatchRegex", "kwargs": {"column": "o", "regex": "a"}},
        1: {"type": "ExpectColumnValuesToBeBetween", "kwargs": {"column": "o", "min_value": 0}},
        2: {"type": "ExpectColumnValuesToBeBetween", "kwargs": {"column": "b", "max_value": 1}},
        3: {"type": "ExpectColumnValuesToBeBetween", "kwargs": {"column": "x"}},
        4: {
            "type": "ExpectColumnValuesToBeBetween",
            "kwargs": {"column": "x", "min_value": 3, "max_value": 1},
        },
        5: {
            "type": "ExpectColumnValuesToNotBeNull",
            "kwargs": {"column": "x", "row_condition": "x>1"},
        },
        6: {"type": "ExpectColumnValuesToNotBeNull", "kwargs": {"column": "x", "mostly": 2}},
        7: {
            "type": "ExpectColumnValuesToBeBetween",
            "kwargs": {"column": "x", "min_value": 0, "max_value": 1.5},
        },
    }
    for e in entries.values():
        e.update(kind="custom", column=e["kwargs"]["column"], severity="error")
    outcomes = evaluate(frame, entries)
    assert list(outcomes) == [7]
    assert outcomes[7].result["partial_unexpected_list"] == [2.0]
