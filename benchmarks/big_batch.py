"""A 10M-row parquet batch through the quality gate, drift and scoring, a slice at a time.

Generates a seeded batch of 10M rows x 20 feature columns (16 numeric, 4 categorical) plus a
label, written in row groups of 1M rows so generation never holds it whole, and a 200k-row
reference; learns the quality suite, the drift profile and a small model from the reference.
Then, each in a fresh subprocess started by a small parent (so neither generation nor another
run counts in its peak RSS):

- chunked, 10M rows: `validate_parquet`, `evaluate_drift_parquet`, `score_parquet`;
- chunked, 1M rows (the first row group) and in memory, 1M rows (`pd.read_parquet`,
  `validate_batch`, `evaluate_drift`, `predict_scores` + `to_parquet`): the baseline.

Each prints wall time and sampled peak RSS per stage and the process's `ru_maxrss`. The data live
in a temporary folder under /tmp, deleted at the end.

    .venv/bin/python benchmarks/big_batch.py [--rows 10000000]
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROWS = 10_000_000
REFERENCE_ROWS = 200_000
ROW_GROUP = 1_000_000
LIMIT_MB = 4096
SEED = 20260301


def columns():
    from mlops_loop.core.config import ColumnsConfig

    return ColumnsConfig(
        numerical=[f"x{i}" for i in range(16)],
        categorical=[f"c{i}" for i in range(4)],
        target="label",
        id="row_id",
    )


def make(rng: np.random.Generator, rows: int, start: int, shift: float) -> pd.DataFrame:
    data: dict[str, object] = {"row_id": np.arange(start, start + rows)}
    for i in range(16):
        data[f"x{i}"] = rng.normal(i + shift * (i % 3 == 0), 1 + i / 10, rows)
    for i in range(4):
        data[f"c{i}"] = rng.choice([f"v{j}" for j in range(5 + 5 * i)], rows)
    logit = 0.8 * data["x0"] - 0.5 * data["x3"] + 1.0  # type: ignore[operator]
    data["label"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")
    return pd.DataFrame(data)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def generate(folder: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlops_loop.core.config import ModelSpec
    from mlops_loop.core.drift import ReferenceProfile
    from mlops_loop.core.quality import build_suite
    from mlops_loop.core.training import train_model

    rng = np.random.default_rng(SEED)
    reference = make(rng, REFERENCE_ROWS, -REFERENCE_ROWS, shift=0.0)
    cols = columns()
    (folder / "suite.json").write_text(json.dumps(build_suite(reference, cols)))
    ReferenceProfile.from_frame(reference).save(folder / "profile")
    spec = ModelSpec(estimator="sklearn.linear_model.LogisticRegression", params={"max_iter": 200})
    (folder / "model.pkl").write_bytes(pickle.dumps(train_model(reference, spec, cols)))
    del reference
    start = time.perf_counter()
    writer = None
    for lo in range(0, rows, ROW_GROUP):
        part = make(rng, min(ROW_GROUP, rows - lo), lo, shift=0.2)
        table = pa.Table.from_pandas(part, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(folder / "batch.parquet", table.schema)
            part.to_parquet(folder / "slice.parquet", index=False)  # the 1M-row baseline
        writer.write_table(table, row_group_size=ROW_GROUP)
        del part, table
    assert writer is not None
    writer.close()
    size = (folder / "batch.parquet").stat().st_size / 2**20
    print(
        f"generated: {rows:,} rows x 20 features (+ id, label) in "
        f"{time.perf_counter() - start:.0f} s, {size:,.0f} MiB of parquet; reference "
        f"{REFERENCE_ROWS:,} rows; generator peak RSS {peak_mb():,.0f} MiB (not counted)"
    )


def run(folder: Path, mode: str, batch: str, out: Path) -> None:
    """One subprocess: the three stages on one batch, figures as JSON."""
    import great_expectations  # noqa: F401  # the import is not part of any stage

    from mlops_loop.core.drift import ReferenceProfile, evaluate_drift, evaluate_drift_parquet
    from mlops_loop.core.operations import measure_usage, score_parquet, timed_scoring
    from mlops_loop.core.quality import validate_batch
    from mlops_loop.core.quality.chunked import validate_parquet
    from mlops_loop.core.training import predict_scores

    cols = columns()
    suite = json.loads((folder / "suite.json").read_text())
    profile = ReferenceProfile.load(folder / "profile")
    model = pickle.loads((folder / "model.pkl").read_bytes())
    path, scored = folder / batch, folder / f"scored-{mode}.parquet"
    ready = peak_mb()
    stages: dict[str, dict] = {}
    if mode.startswith("chunked"):
        with measure_usage() as u:
            quality = validate_parquet(path, suite)
        stages["quality"] = {"s": u.wall_s, "peak_mb": u.peak_rss_mb}
        with measure_usage() as u:
            drift = evaluate_drift_parquet(profile, path)
        stages["drift"] = {"s": u.wall_s, "peak_mb": u.peak_rss_mb}
        with measure_usage() as u:
            score_parquet(lambda p: predict_scores(model, p, cols), path, scored, "prediction")
        stages["scoring"] = {"s": u.wall_s, "peak_mb": u.peak_rss_mb}
    else:
        with measure_usage() as u:
            frame = pd.read_parquet(path)
            quality = validate_batch(None, frame, suite=suite)
        stages["quality"] = {"s": u.wall_s, "peak_mb": u.peak_rss_mb}
        with measure_usage() as u:
            drift = evaluate_drift(profile, frame)
        stages["drift"] = {"s": u.wall_s, "peak_mb": u.peak_rss_mb}
        with measure_usage() as u:
            # As the loop's in-memory scoring step: timed calls of 10k rows, then one write.
            scores, _ = timed_scoring(lambda p: predict_scores(model, p, cols), frame)
            frame.assign(prediction=scores).to_parquet(scored, index=False)
        stages["scoring"] = {"s": u.wall_s, "peak_mb": u.peak_rss_mb}
    verdict = {
        "quality": quality.to_dict()["incidents"],
        "success": quality.success,
        "drift": drift.drift_share,
    }
    figures = {"ready_mb": ready, "ru_maxrss_mb": peak_mb(), "stages": stages, **verdict}
    out.write_text(json.dumps(figures, default=str))


def sub(folder: Path, mode: str, batch: str) -> dict:
    cmd = [sys.executable, __file__, "--run", str(folder), mode, batch]
    subprocess.run(cmd, check=True)
    return json.loads((folder / f"{mode}.json").read_text())


def show(name: str, r: dict) -> None:
    parts = ", ".join(
        f"{k} {v['s']:6.1f} s (peak {v['peak_mb']:,.0f} MiB)" for k, v in r["stages"].items()
    )
    total = sum(v["s"] for v in r["stages"].values())
    print(f"{name}: {parts}; total {total:6.1f} s; ru_maxrss {r['ru_maxrss_mb']:,.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--run", nargs=3, metavar=("FOLDER", "MODE", "BATCH"))
    parser.add_argument("--generate", nargs=2, metavar=("FOLDER", "ROWS"))
    args = parser.parse_args()
    if args.generate:
        generate(Path(args.generate[0]), int(args.generate[1]))
        return
    if args.run:
        folder, mode, batch = args.run
        run(Path(folder), mode, batch, Path(folder) / f"{mode}.json")
        return
    # ru_maxrss survives exec: the data are made in a sibling process, not in this parent.
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="big-batch-") as name:
        folder = Path(name)
        gen = [sys.executable, __file__, "--generate", name, str(args.rows)]
        subprocess.run(gen, check=True)
        big = sub(folder, "chunked", "batch.parquet")
        show(f"chunked   {args.rows:>10,} rows", big)
        small = sub(folder, "chunked-1m", "slice.parquet")
        show(f"chunked   {ROW_GROUP:>10,} rows", small)
        whole = sub(folder, "in-memory", "slice.parquet")
        show(f"in memory {ROW_GROUP:>10,} rows", whole)
        t_small = sum(v["s"] for v in small["stages"].values())
        t_whole = sum(v["s"] for v in whole["stages"].values())
        print(
            f"1M rows, chunked / in memory: time {t_small / t_whole:.2f}x, ru_maxrss "
            f"{small['ru_maxrss_mb'] / whole['ru_maxrss_mb']:.2f}x; same quality incidents: "
            f"{small['quality'] == whole['quality']}; same drift share: "
            f"{small['drift'] == whole['drift']}"
        )
        verdict = "within" if big["ru_maxrss_mb"] <= LIMIT_MB else "ABOVE"
        print(
            f"10M run: ru_maxrss {big['ru_maxrss_mb']:,.0f} MiB, {verdict} {LIMIT_MB:,} MiB "
            f"(interpreter, libraries, profile and model: {big['ready_mb']:,.0f} MiB); quality "
            f"passed: {big['success']} ({len(big['quality'])} incidents); drift share "
            f"{big['drift']}"
        )


if __name__ == "__main__":
    main()
