"""Batch files cut short are refused where batch files are read, naming the file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_loop.core.data import read_table
from mlops_loop.core.drift import ParquetBatch
from mlops_loop.core.errors import DataError, TruncatedFileError
from mlops_loop.core.parquet import parquet_rows


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {"a": np.arange(100), "b": rng.normal(size=100), "c": rng.choice(["x", "y,z"], 100)}
    )


def cut(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


def test_a_complete_csv_and_a_header_only_csv_are_read(tmp_path: Path, frame) -> None:
    frame.to_csv(tmp_path / "full.csv", index=False)
    assert len(read_table(tmp_path / "full.csv")) == 100
    (tmp_path / "header.csv").write_text("a,b,c\n")
    assert len(read_table(tmp_path / "header.csv")) == 0


def test_a_csv_whose_last_line_has_fewer_fields_is_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "batch.csv"
    path.write_text("a,b,c\n1,2,3\n4,5,6\n7,8\n")
    with pytest.raises(TruncatedFileError, match=r"batch\.csv: line 4 has 2 field\(s\), the head"):
        read_table(path)


def test_a_csv_cut_inside_its_last_field_is_cut_short(tmp_path: Path, frame) -> None:
    path = tmp_path / "batch.csv"
    frame[["a", "b"]].to_csv(path, index=False)
    data = path.read_bytes()
    end_of_row_50 = data.index(b"\n", data.index(b"\n50,") + 1)  # line 52
    cut(path, end_of_row_50 - 3)  # the row keeps its two fields, its last one shortened
    with pytest.raises(TruncatedFileError, match="line 52 does not end with a line break"):
        read_table(path)


def test_a_csv_cut_inside_a_quoted_field_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "batch.csv"
    path.write_text('a,c\n1,"x"\n2,"y,z\n')
    with pytest.raises(TruncatedFileError, match="line 3 ends inside a quoted field"):
        read_table(path)


def test_a_parquet_cut_short_is_named_as_such_wherever_it_is_opened(tmp_path: Path, frame) -> None:
    path = tmp_path / "batch.parquet"
    frame.to_parquet(path, index=False)
    cut(path, path.stat().st_size // 2)
    for read in (read_table, parquet_rows, ParquetBatch):
        with pytest.raises(TruncatedFileError, match=r"batch\.parquet: the parquet file ends"):
            read(path)
    # Garbage is not a truncation: it stays a plain DataError.
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot be read as parquet") as raised:
        read_table(path)
    assert not isinstance(raised.value, TruncatedFileError)
