"""Drift of a parquet batch larger than one wants in memory: 10M rows x 20 columns (16 numeric,
4 string), evaluated column by column with `evaluate_drift_parquet` against a saved
`ReferenceProfile` of 1M reference rows, vs reading the whole batch with `pd.read_parquet` and
calling `evaluate_drift` (the baseline).

The batch is written in row groups of 1M rows, so writing never holds it whole. Each evaluation
runs in a fresh subprocess that reports its own wall time and peak RSS (`ru_maxrss`), so the
data generation does not count. Run with `.venv/bin/python benchmarks/big_batch_drift.py`
(`--rows N` for another batch size, `--no-baseline` to skip the in-memory run).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from drift_speed import SEED, make_frame, peak_rss_mb  # noqa: E402

ROWS = 10_000_000
REFERENCE_ROWS = 1_000_000
ROW_GROUP = 1_000_000
LIMIT_MB = 4096


def write_batch(path: Path, rows: int, rng: np.random.Generator) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    for start in range(0, rows, ROW_GROUP):
        part = make_frame(rng, min(ROW_GROUP, rows - start), drift=0.15)
        table = pa.Table.from_pandas(part, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=ROW_GROUP)
        del part, table
    assert writer is not None
    writer.close()


def evaluate(mode: str, profile_dir: str, batch: str, out: str) -> None:
    """The subprocess: one evaluation, then its figures as JSON."""
    import pandas as pd

    from mlops_loop.core.drift import ReferenceProfile, evaluate_drift, evaluate_drift_parquet

    profile = ReferenceProfile.load(profile_dir)
    ready_mb = peak_rss_mb()
    start = time.perf_counter()
    if mode == "chunked":
        report = evaluate_drift_parquet(profile, batch)
    else:
        report = evaluate_drift(profile, pd.read_parquet(batch))
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    Path(out).write_text(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "ready_mb": ready_mb,
                "peak_mb": peak_rss_mb(),
                "report": report.to_dict(),
            }
        )
    )


def generate(folder: str, rows: int) -> None:
    """The subprocess that writes the profile and the batch, so the parent stays small."""
    from mlops_loop.core.drift import ReferenceProfile

    tmp = Path(folder)
    rng = np.random.default_rng(SEED)
    reference = make_frame(rng, REFERENCE_ROWS, drift=0.0)
    ReferenceProfile.from_frame(reference).save(tmp / "profile")
    del reference
    batch = tmp / "batch.parquet"
    start = time.perf_counter()
    write_batch(batch, rows, rng)
    print(
        f"batch: {rows:,} rows x 20 columns (16 numeric, 4 string) written in "
        f"{time.perf_counter() - start:.1f} s, {batch.stat().st_size / 2**20:,.0f} MiB of "
        f"parquet; reference profile of {REFERENCE_ROWS:,} rows; peak RSS of the generating "
        f"process: {peak_rss_mb():,.0f} MiB (not counted below)"
    )


def run(mode: str, tmp: Path) -> dict:
    out = tmp / f"{mode}.json"
    paths = [str(tmp / "profile"), str(tmp / "batch.parquet"), str(out)]
    subprocess.run([sys.executable, __file__, "--evaluate", mode, *paths], check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--evaluate", nargs=4, metavar=("MODE", "PROFILE", "BATCH", "OUT"))
    parser.add_argument("--generate", nargs=2, metavar=("FOLDER", "ROWS"))
    args = parser.parse_args()
    if args.evaluate:
        evaluate(*args.evaluate)
        return
    if args.generate:
        generate(args.generate[0], int(args.generate[1]))
        return

    # Linux keeps a process's ru_maxrss across exec, so a child started by a big process
    # reports at least that process's peak: the data are made in a sibling process instead,
    # and this parent stays at the size of its imports.
    print(f"parent process peak RSS (imports only): {peak_rss_mb():,.0f} MiB")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        generate_cmd = [sys.executable, __file__, "--generate", name, str(args.rows)]
        subprocess.run(generate_cmd, check=True)
        chunked = run("chunked", tmp)
        print(
            f"evaluate_drift_parquet (column by column): {chunked['seconds']:6.1f} s wall, "
            f"{chunked['cpu_seconds']:6.1f} s CPU, peak RSS {chunked['peak_mb']:,.0f} MiB "
            f"({chunked['ready_mb']:,.0f} MiB before the call: interpreter, libraries, profile); "
            f"{'within' if chunked['peak_mb'] <= LIMIT_MB else 'ABOVE'} {LIMIT_MB:,} MiB"
        )
        if not args.no_baseline:
            whole = run("in-memory", tmp)
            print(
                f"pd.read_parquet + evaluate_drift:          {whole['seconds']:6.1f} s wall, "
                f"{whole['cpu_seconds']:6.1f} s CPU, peak RSS {whole['peak_mb']:,.0f} MiB"
            )
            print(
                f"chunked / in-memory: time {chunked['seconds'] / whole['seconds']:.2f}x, "
                f"peak RSS {chunked['peak_mb'] / whole['peak_mb']:.2f}x; reports identical: "
                f"{chunked['report'] == whole['report']}"
            )
        report = chunked["report"]
        print(f"dataset drift: {report['dataset_drift']}; {report['rule']}")


if __name__ == "__main__":
    main()
