"""Quality gate speed on wide frames: 5,000 columns x 200 rows, and 1M rows x 20 columns.

GX validates one expectation at a time at a cost of milliseconds each, so a 5,000-column suite
(about 20,000 entries) takes minutes in GX alone. `validate_batch` judges a suite of more than
`GX_WHOLE_ENTRIES` entries in pandas, all columns at once, and GX reruns only what failed. The
baseline is the plain-GX path (every entry through GX) run in the same process; at full width
it takes minutes, so it runs on `--gx-columns` columns and its time is scaled to 5,000 columns
(GX's cost grows at least linearly with the number of entries). Imports are excluded.

    .venv/bin/python benchmarks/quality_width.py [--columns 5000] [--gx-columns 200] [--repeat 3]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from quality_speed import make  # noqa: E402  (the 1M x 20 frame: 16 numerical, 4 categorical)


def wide(columns: int, rows: int, seed: int) -> pd.DataFrame:
    """Nine numeric columns in ten, the rest categorical, as in a wide feature table."""
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {}
    for i in range(columns):
        if i % 10 == 9:
            data[f"c{i}"] = rng.choice(["a", "b", "c", "d"], rows)
        else:
            data[f"x{i}"] = rng.normal(i % 7, 1 + i % 3, rows)
    return pd.DataFrame(data)


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--columns", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--gx-columns", type=int, default=200)
    parser.add_argument("--long-rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    t0 = time.perf_counter()
    import great_expectations  # noqa: F401

    from mlops_loop.core.quality import build_suite, validate_batch
    from mlops_loop.core.quality import validate as validate_module

    print(f"import great_expectations: {time.perf_counter() - t0:.2f} s (not counted below)")
    validate_batch(None, make(1000, 0), suite=build_suite(make(1000, 1)))  # GX's lazy imports

    def plain_gx(frame: pd.DataFrame, suite: dict):
        saved = (
            validate_module.GX_WHOLE_ENTRIES,
            validate_module.GX_WHOLE_ROWS,
            validate_module.PANDAS_FIRST,
        )
        validate_module.GX_WHOLE_ENTRIES = 10**9  # every entry through GX, as before
        validate_module.GX_WHOLE_ROWS = 10**12
        validate_module.PANDAS_FIRST = frozenset()
        try:
            return validate_batch(None, frame, suite=suite)
        finally:
            (
                validate_module.GX_WHOLE_ENTRIES,
                validate_module.GX_WHOLE_ROWS,
                validate_module.PANDAS_FIRST,
            ) = saved

    # Wide: clean, and with one column in twenty shifted (GX reruns up to GX_FAILED_ENTRIES).
    reference, batch = wide(args.columns, args.rows, 1), wide(args.columns, args.rows, 2)
    t = time.perf_counter()
    suite = build_suite(reference)
    learnt = time.perf_counter() - t
    entries = len(suite["expectations"])
    ours, result = timed(lambda: validate_batch(None, batch, suite=suite), args.repeat)
    assert result.success, result.to_markdown()
    broken = batch.copy()
    shifted = [c for c in broken.columns[::20] if c.startswith("x")]
    broken[shifted] = broken[shifted] * 100 + 1000
    ours_broken, failed = timed(lambda: validate_batch(None, broken, suite=suite), args.repeat)
    assert len(failed.incidents) == len(shifted)

    narrow_cols = list(reference.columns[: args.gx_columns])
    small = build_suite(reference[narrow_cols])
    gx_small, base = timed(lambda: plain_gx(batch[narrow_cols], small), 1)
    assert base.success
    scale = entries / len(small["expectations"])
    gx_full = gx_small * scale

    print(
        f"wide: {args.rows} rows x {args.columns:,} columns; {entries:,} expectations "
        f"(build_suite {learnt:.2f} s)"
    )
    print(f"  validate_batch, clean            {ours:7.2f} s   (target <= 30 s)")
    print(f"  validate_batch, {len(shifted)} columns out   {ours_broken:7.2f} s")
    print(
        f"  plain GX on {args.gx_columns} columns          {gx_small:7.2f} s   "
        f"({len(small['expectations'])} expectations)"
    )
    print(
        f"  plain GX scaled to {args.columns:,} columns  {gx_full:7.1f} s   "
        f"(x{scale:.1f}, an estimate)"
    )
    print(f"  ratio plain GX / ours (clean)    {gx_full / ours:7.0f}x")

    # Long: the suite is small, so GX judges it whole but for repeated rows (PANDAS_FIRST).
    ref_long, batch_long = make(200_000, 1), make(args.long_rows, 2)
    suite_long = build_suite(ref_long)
    ours_long, res = timed(lambda: validate_batch(None, batch_long, suite=suite_long), args.repeat)
    assert res.success
    gx_long, _ = timed(lambda: plain_gx(batch_long, suite_long), args.repeat)
    with_pandas = validate_module.GX_WHOLE_ENTRIES
    validate_module.GX_WHOLE_ENTRIES = 0
    try:
        pandas_long, res = timed(
            lambda: validate_batch(None, batch_long, suite=suite_long), args.repeat
        )
    finally:
        validate_module.GX_WHOLE_ENTRIES = with_pandas
    assert res.success
    print(
        f"long: {len(batch_long):,} rows x {batch_long.shape[1]} columns; "
        f"{len(suite_long['expectations'])} expectations"
    )
    print(f"  validate_batch (default)        {ours_long:7.2f} s   (target <= 2 s)")
    print(f"  plain GX                         {gx_long:7.2f} s")
    print(f"  pandas evaluator, forced         {pandas_long:7.2f} s")
    print(f"  ratio plain GX / ours            {gx_long / ours_long:7.2f}x")


if __name__ == "__main__":
    main()
