"""Property-based fuzzing of `evaluate_drift`: whatever frames it is given, it answers with a
report or raises `DataError` saying what is wrong; never another exception.

Frames mix every dtype a user's data arrives in (numbers with NaN and infinities, text,
booleans, naive and aware datetimes, ISO date text, pandas categoricals, mixed objects), with
empty and one-row sides, wide frames, and duplicate, unicode and non-string column names.
Each case the fuzzing found is kept below as a named regression test.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_loop.core.drift import ReferenceProfile, evaluate_drift
from mlops_loop.core.errors import DataError

NAMES = st.one_of(
    st.sampled_from(["x", "y", "é", "列", "a b", "", "🙂", "x"]),
    st.integers(min_value=0, max_value=3),
)
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, np.nan, np.inf, -np.inf, 1e308, -1e308]),
)
TEXT = st.one_of(st.sampled_from(["a", "b", "<null>", "", "2020-01-01"]), st.text(max_size=3))
STAMPS = st.datetimes(
    min_value=pd.Timestamp("1900-01-01").to_pydatetime(),
    max_value=pd.Timestamp("2200-01-01").to_pydatetime(),
)
MIXED = st.one_of(st.none(), st.integers(-5, 5), FLOATS, TEXT, st.booleans(), STAMPS)


@st.composite
def columns(draw: st.DrawFn, rows: int) -> pd.Series:
    kind = draw(
        st.sampled_from(
            ["float", "int", "bool", "text", "dates", "aware", "iso", "category", "mixed", "null"]
        )
    )
    if kind == "float":
        return pd.Series(draw(st.lists(FLOATS, min_size=rows, max_size=rows)), dtype="float64")
    if kind == "int":
        return pd.Series(draw(st.lists(st.integers(-(2**62), 2**62), min_size=rows, max_size=rows)))
    if kind == "bool":
        return pd.Series(draw(st.lists(st.booleans(), min_size=rows, max_size=rows)), dtype=bool)
    if kind == "text":
        return pd.Series(draw(st.lists(st.one_of(TEXT, st.none()), min_size=rows, max_size=rows)))
    if kind in ("dates", "aware"):
        values = draw(st.lists(st.one_of(STAMPS, st.none()), min_size=rows, max_size=rows))
        stamps = pd.Series(pd.to_datetime(values))
        return stamps.dt.tz_localize("Asia/Tokyo") if kind == "aware" else stamps
    if kind == "iso":
        values = draw(st.lists(st.one_of(STAMPS, st.none()), min_size=rows, max_size=rows))
        return pd.Series([None if v is None else v.isoformat() for v in values], dtype=object)
    if kind == "category":
        return pd.Series(
            draw(st.lists(st.sampled_from(["a", "b", None]), min_size=rows, max_size=rows)),
            dtype="category",
        )
    if kind == "null":
        return pd.Series([None] * rows, dtype=object)
    return pd.Series(draw(st.lists(MIXED, min_size=rows, max_size=rows)), dtype=object)


@st.composite
def frames(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame]:
    wide = draw(st.booleans()) and draw(st.booleans())
    names = draw(st.lists(NAMES, min_size=0, max_size=60 if wide else 5))
    sides = []
    for _ in range(2):
        rows = draw(st.sampled_from([0, 1, 2, 7, 24]))
        data = {i: draw(columns(rows)) for i in range(len(names))}
        frame = pd.DataFrame(data, index=pd.RangeIndex(rows))
        frame.columns = pd.Index(names, dtype=object)
        sides.append(frame)
    return sides[0], sides[1]


def check(reference: pd.DataFrame, current: pd.DataFrame) -> None:
    """Either a report, JSON-serialisable and renderable, or a DataError saying why not."""
    try:
        report = evaluate_drift(reference, current)
    except DataError as e:
        message = str(e)
        assert message and "\n" not in message
        assert (
            "is empty (0 rows)" in message
            or "no feature column is in both frames" in message
            or any(repr(c) in message or str(c) in message for c in reference.columns)
        ), message
        return
    json.dumps(report.to_dict(), allow_nan=False)
    report.to_html()
    report.to_markdown()
    for f in report.features:
        assert f.error is None or f.drifted is False
        assert f.p_value is None or 0.0 <= f.p_value <= 1.0


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames())
def test_drift_answers_or_raises_data_error_on_any_frames(pair) -> None:
    check(*pair)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames())
def test_drift_against_a_profile_answers_or_raises_data_error(pair) -> None:
    reference, current = pair
    try:
        profile = ReferenceProfile.from_frame(reference)
    except DataError:
        return
    try:
        evaluate_drift(profile, current)
    except DataError:
        pass


# -- cases the fuzzing found -----------------------------------------------------------------------
def test_the_html_of_a_datetime_column_plots_it_as_numbers() -> None:
    # A datetime's summary is numerical (epoch seconds); it was drawn as category bars.
    ref = pd.DataFrame({"y": pd.to_datetime(["2000-01-01", "2000-01-02"]), "x": [0, 1]})
    report = evaluate_drift(ref, ref.copy())
    assert "<svg" in report.to_html()
    check(ref, ref.copy())
