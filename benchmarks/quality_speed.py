"""Quality gate speed: validating a 1M-row x 20-column batch, imports excluded.

Generates a seeded reference (200k rows) and batch (1M rows) with 16 numerical and
4 categorical columns, learns the suite, then times `validate_batch` on the batch. The baseline
in the same process is the same checks written as plain pandas expressions (no Great
Expectations), the floor any implementation pays for reading the data.

    .venv/bin/python benchmarks/quality_speed.py [--rows 1000000] [--repeat 3]
"""

import argparse
import resource
import statistics
import time

import numpy as np
import pandas as pd


def make(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {f"x{i}": rng.normal(i, 1 + i / 10, rows) for i in range(16)}
    for i in range(4):
        data[f"c{i}"] = rng.choice([f"v{j}" for j in range(5 + 5 * i)], rows)
    return pd.DataFrame(data)


def pandas_baseline(suite: dict, frame: pd.DataFrame) -> int:
    """The suite's column, null, range and set checks as plain pandas."""
    failed = 0
    for e in suite["expectations"]:
        col, kw = e.get("column"), e["kwargs"]
        if e["type"] == "ExpectColumnValuesToNotBeNull":
            failed += frame[col].notna().mean() < kw["mostly"]
        elif e["type"] == "ExpectColumnValuesToBeBetween":
            s = frame[col]
            ok = s.between(kw["min_value"], kw["max_value"]).mean()
            failed += ok < kw.get("mostly", 1)
        elif e["type"] == "ExpectColumnValuesToBeInSet":
            failed += frame[col].isin(kw["value_set"]).mean() < kw.get("mostly", 1)
    return failed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    t0 = time.perf_counter()
    import great_expectations  # noqa: F401

    from mlops_loop.core.quality import build_suite, validate_batch

    print(f"import great_expectations: {time.perf_counter() - t0:.2f} s (not counted below)")
    reference, batch = make(200_000, 1), make(args.rows, 2)
    suite = build_suite(reference)
    validate_batch(None, batch.head(1000), suite=suite)  # warm GX's own lazy imports

    ours, base = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        result = validate_batch(None, batch, suite=suite)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        pandas_baseline(suite, batch)
        base.append(time.perf_counter() - t)
    assert result.success, result.to_dict()["incidents"]
    o, b = statistics.median(ours), statistics.median(base)
    print(
        f"batch: {len(batch):,} rows x {batch.shape[1]} columns; "
        f"{result.statistics['expectations_evaluated']} expectations"
    )
    print(f"  validate_batch           {o:6.2f} s   (target <= 2 s)")
    print(f"  plain pandas checks      {b:6.2f} s   (floor)")
    print(f"  ratio ours / pandas      {o / b:6.1f}x")
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"  peak RSS                 {peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
