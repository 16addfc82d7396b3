"""Reading tables and fingerprinting them."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_loop.core.errors import DataError, TruncatedFileError

SUFFIXES = (".parquet", ".pq", ".csv")
#: Bytes read from the end of a CSV file to find its last line.
_TAIL_BYTES = 1 << 16
_PARQUET_MAGIC = b"PAR1"


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a parquet or CSV file into a DataFrame.

    Raises:
        TruncatedFileError: the file ends before its end (see `check_complete`).
        DataError: the file is missing, has an unknown suffix, or cannot be parsed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix!r}; expected one of {SUFFIXES}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    # Before parsing: pandas reads a CSV whose last row was cut short without complaint,
    # filling the missing fields with NaN.
    check_complete(path)
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow and the CSV parser raise many unrelated types
        text = " ".join(str(e).split())
        if suffix == ".csv" and "EOF inside string" in text:
            raise TruncatedFileError(
                f"{path}: line {_last_line(path)} ends inside a quoted field, and so does the "
                f"file ({text}); it looks cut short"
            ) from e
        raise DataError(f"{path}: cannot be read as {suffix[1:]}: {text}") from e


def check_complete(path: str | Path) -> None:
    """Refuse a batch file that ends mid-row or mid-record, as a broken upload leaves it.

    A CSV whose last line has fewer fields than its header or lacks its closing line break, or
    a parquet file that starts as parquet but lacks the footer every complete one ends with,
    is cut short.

    Raises:
        TruncatedFileError: naming the file, and for a CSV the line and its field counts.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        _check_parquet(path)
    elif suffix == ".csv":
        _check_csv(path)


def _check_parquet(path: Path) -> None:
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(4)
        f.seek(max(size - 4, 0))
        tail = f.read(4)
    if head == _PARQUET_MAGIC and (size < 12 or tail != _PARQUET_MAGIC):
        raise TruncatedFileError(
            f"{path}: the parquet file ends before its footer ({size} bytes, no closing "
            f"{_PARQUET_MAGIC.decode()} marker); it looks cut short"
        )


def _check_csv(path: Path) -> None:
    size = path.stat().st_size
    with path.open("rb") as f:
        header = f.readline()
        if not header.strip() or f.tell() >= size:
            return  # no data line: nothing can be cut
        f.seek(max(size - _TAIL_BYTES, 0))
        tail = f.read()
    body = tail.rstrip(b"\r\n")
    start = body.rfind(b"\n") + 1
    if start == 0 and size > _TAIL_BYTES:
        return  # a last line longer than the tail read: too odd to judge here
    last = body[start:]
    try:
        want, got = _fields(header), _fields(last)
    except (csv.Error, UnicodeDecodeError):
        return  # pandas names what it cannot parse
    if got is not None and want is not None and got < want:
        problem = f"has {got} field(s), the header has {want}"
    elif not tail.endswith(b"\n") and last.strip():
        # Every writer of CSV ends each row with a line break; a row cut inside its last
        # field keeps the field count, and only the missing break tells.
        problem = "does not end with a line break, as every row of a complete CSV does"
    else:
        return
    line = _line_at(path, size - len(tail) + start)
    raise TruncatedFileError(f"{path}: line {line} {problem}; the file looks cut short mid-row")


def _fields(line: bytes) -> int | None:
    """Fields of one physical CSV line; None when it is not one whole record."""
    rows = list(csv.reader(io.StringIO(line.decode("utf-8"), newline="")))
    return len(rows[0]) if len(rows) == 1 else None


def _last_line(path: Path) -> int:
    size = path.stat().st_size
    with path.open("rb") as f:
        f.seek(max(size - _TAIL_BYTES, 0))
        tail = f.read()
    return _line_at(path, size - len(tail) + tail.rstrip(b"\r\n").rfind(b"\n") + 1)


def _line_at(path: Path, offset: int) -> int:
    """The 1-based number of the line that starts at byte `offset`."""
    breaks = 0
    with path.open("rb") as f:
        while offset > 0 and (chunk := f.read(min(1 << 20, offset))):
            breaks += chunk.count(b"\n")
            offset -= len(chunk)
    return breaks + 1


def frame_digest(frame: pd.DataFrame) -> str:
    """A content digest of a frame: the same rows and columns give the same 16 hex digits."""
    h = hashlib.sha256()
    h.update(",".join(map(str, frame.columns)).encode())
    h.update(",".join(str(t) for t in frame.dtypes).encode())
    if len(frame):
        row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        h.update(np.ascontiguousarray(row_hashes).tobytes())
    return h.hexdigest()[:16]


def require_columns(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    """Raise `DataError` naming the columns of `columns` that `frame` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{what} lacks column(s) {missing}; it has {list(frame.columns)}")
