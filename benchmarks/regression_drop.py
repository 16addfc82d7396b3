"""How far a regressor's batch RMSE strays from its hold-out RMSE with nothing changed, under a
covariate episode and after a concept change: the table behind the regression default of
`retrain.metric_drop` (a share of the baseline for metrics in the target's units).

On `mlops_loop.demo.task_streams.demand_stream` (seeds, batch sizes below), a
HistGradientBoostingRegressor fit on the first half of the reference, its hold-out RMSE on the
second half (the loop's baseline), then each batch's RMSE as a ratio of it.

    PYTHONPATH=src .venv/bin/python benchmarks/regression_drop.py [--seeds 1,2,3,4,5]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mlops_loop.demo.task_streams import (  # noqa: E402
    DEMAND_CATEGORICAL,
    DEMAND_NUMERICAL,
    DEMAND_TARGET,
    demand_stream,
    task_phase,
)


def ratios(seed: int, rows: int, batches: int = 10) -> list[tuple[str, float]]:
    from sklearn.ensemble import HistGradientBoostingRegressor

    reference, frames = demand_stream(seed, batches=batches, rows=rows)

    def x(f: pd.DataFrame) -> pd.DataFrame:
        out = f[DEMAND_NUMERICAL].astype(float)
        for c in DEMAND_CATEGORICAL:
            out[c] = f[c].astype("category")
        return out

    half = len(reference) // 2
    model = HistGradientBoostingRegressor(max_iter=100, categorical_features="from_dtype")
    model.fit(x(reference.iloc[:half]), reference[DEMAND_TARGET].iloc[:half])

    def rmse(f: pd.DataFrame) -> float:
        return float(np.sqrt(np.mean((model.predict(x(f)) - f[DEMAND_TARGET]) ** 2)))

    base = rmse(reference.iloc[half:])
    return [(task_phase(i, batches), rmse(frame) / base) for i, frame in enumerate(frames.values())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--rows", default="600,1000")
    args = parser.parse_args()
    table: dict[tuple[str, int], list[float]] = {}
    for rows in (int(r) for r in args.rows.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            for phase, ratio in ratios(seed, rows):
                table.setdefault((phase, rows), []).append(ratio)
    print(
        "| phase | rows | batches | min ratio | median | max ratio | "
        "retrain at 0.05 | at 0.25 (default) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (phase, rows), values in table.items():
        v = np.asarray(values)
        print(
            f"| {phase} | {rows} | {len(v)} | {v.min():.3f} | {np.median(v):.3f} | "
            f"{v.max():.3f} | {np.mean(v >= 1.05):.0%} | {np.mean(v >= 1.25):.0%} |"
        )


if __name__ == "__main__":
    main()
