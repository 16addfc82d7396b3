"""Seeded labelled streams of the kinds a retraining policy must handle, for backtests.

Six numerical features and one categorical; a binary label from one of two concepts:

- concept `a`: the label rises with `x0` and `x2 > 0`, falls with `x1`;
- concept `b`: the label rises with `x3` and `x1`, falls with `x0` (what mattered changed).

`x4`, `x5` and `channel` never matter. Stream kinds, each batch `rows` rows:

- `stationary`: every batch like the reference;
- `covariate`: from `change_at`, the inputs move (`x4`, `x5` by 1.5 standard deviations,
  `x0` by 0.5, the channel mix changes) and the concept stays;
- `prior`: from `change_at`, positives become rarer (about half of the rows to a fifth), each
  class keeping its inputs' distribution;
- `abrupt`: concept `b` from `change_at`;
- `gradual`: the share of rows under concept `b` grows from 0 at `change_at - 1` to 1 four
  batches later;
- `recurring`: concepts `a` and `b` take turns, two batches each, from `change_at`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

KINDS = ("stationary", "covariate", "prior", "abrupt", "gradual", "recurring")
NUMERICAL = ["x0", "x1", "x2", "x3", "x4", "x5"]
CATEGORICAL = ["channel"]
TARGET = "label"
CHANNELS = ["web", "store", "phone"]


def _inputs(rng: np.random.Generator, n: int, shifted: bool) -> pd.DataFrame:
    mean = np.array([0.5, 0, 0, 0, 1.5, -1.5]) if shifted else np.zeros(6)
    x = rng.normal(mean, 1.0, size=(n, 6))
    frame = pd.DataFrame(x, columns=NUMERICAL)
    frame["channel"] = rng.choice(CHANNELS, n, p=[0.2, 0.3, 0.5] if shifted else [0.5, 0.3, 0.2])
    return frame


def _labels(rng: np.random.Generator, x: pd.DataFrame, share_b: float) -> np.ndarray:
    z_a = 1.6 * x["x0"] - 1.2 * x["x1"] + 1.5 * (x["x2"] > 0) - 0.75
    z_b = 1.6 * x["x3"] + 1.2 * x["x1"] - 1.0 * x["x0"] + 0.8 * np.sin(2 * x["x3"])
    p_a = 1 / (1 + np.exp(-1.6 * z_a.to_numpy(dtype=float)))
    p_b = 1 / (1 + np.exp(-1.6 * z_b.to_numpy(dtype=float)))
    under_b = rng.random(len(x)) < share_b
    return (rng.random(len(x)) < np.where(under_b, p_b, p_a)).astype(int)


def _batch(
    rng: np.random.Generator, n: int, *, shifted: bool, share_b: float, positive_rate: float | None
) -> pd.DataFrame:
    if positive_rate is None:
        x = _inputs(rng, n, shifted)
        return x.assign(**{TARGET: _labels(rng, x, share_b)})
    # Prior shift: draw many rows, then keep each class in the wanted proportion.
    x = _inputs(rng, 4 * n, shifted)
    y = _labels(rng, x, share_b)
    pos = rng.permutation(np.flatnonzero(y == 1))[: int(round(n * positive_rate))]
    neg = rng.permutation(np.flatnonzero(y == 0))[: n - len(pos)]
    keep = rng.permutation(np.concatenate([pos, neg]))
    return x.iloc[keep].reset_index(drop=True).assign(**{TARGET: y[keep]})


def share_of_b(kind: str, i: int, change_at: int) -> float:
    """The share of rows under concept `b` in batch `i` (0-based) of a stream `kind`."""
    if i < change_at:
        return 0.0
    if kind == "abrupt":
        return 1.0
    if kind == "gradual":
        return min(1.0, (i - change_at + 1) / 4)
    if kind == "recurring":
        return float(((i - change_at) // 2) % 2 == 0)
    return 0.0


def policy_stream(
    kind: str,
    seed: int,
    *,
    batches: int = 8,
    rows: int = 1000,
    reference_rows: int = 2000,
    change_at: int = 2,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """(reference, {batch key: labelled batch}) of a stream `kind`, reproducible from `seed`.

    Rows carry an `id` and an `event_time` (a minute apart, a week between batches).

    Raises:
        ValueError: `kind` is not one of `KINDS`.
    """
    if kind not in KINDS:
        raise ValueError(f"stream kind {kind!r} is unknown; expected one of {list(KINDS)}")
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    t0 = pd.Timestamp("2026-01-05")

    def stamp(frame: pd.DataFrame, week: int, offset: int) -> pd.DataFrame:
        n = len(frame)
        return frame.assign(
            id=np.arange(offset, offset + n),
            event_time=t0 + pd.Timedelta(days=7 * week) + pd.to_timedelta(np.arange(n), "min"),
        )

    reference = stamp(
        _batch(rng, reference_rows, shifted=False, share_b=0.0, positive_rate=None), 0, 0
    )
    out = {}
    for i in range(batches):
        after = i >= change_at
        frame = _batch(
            rng,
            rows,
            shifted=kind == "covariate" and after,
            share_b=share_of_b(kind, i, change_at),
            positive_rate=0.2 if kind == "prior" and after else None,
        )
        out[f"b{i + 1:02d}"] = stamp(frame, i + 1, 1_000_000 * (i + 1))
    return reference, out


def stream_loop(root: Path, model: dict[str, Any], name: str = "policy-streams") -> Path:
    """Write `root/loop.yaml` for a replay of these streams: the package's default retrain,
    training and promotion policies, `model` (estimator and params), the reference at
    `root/reference.parquet`. Returns its path."""
    doc = {
        "name": name,
        "state_dir": str(root / "state"),
        "columns": {
            "numerical": NUMERICAL,
            "categorical": CATEGORICAL,
            "target": TARGET,
            "id": "id",
            "timestamp": "event_time",
        },
        "sources": {"reference": str(root / "reference.parquet"), "landing": str(root / "in")},
        "model": model,
    }
    path = root / "loop.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path
