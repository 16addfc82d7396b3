"""Seeded labelled streams for regression and multiclass models, for backtests.

Two kinds, each a reference and `batches` weekly batches that go through the same phases (see
`task_phase`; with the default 10 batches):

- `stationary`, `batch_001`-`batch_003`: every batch like the reference;
- `covariate`, `batch_004`-`batch_005`: the inputs move and the concept P(y | x) stays;
- `concept`, `batch_006`: what drives the target changes, inputs back to normal;
- `new_regime`, `batch_007`-`batch_010`: the new concept holds, so a model refit on
  `batch_006` does well again.

`demand_stream`: a store's demand on a day (a float, kilograms sold), regression.
`triage_stream`: an incident ticket's `priority` ("low", "medium", "high"), three classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

TASK_KINDS = ("demand", "triage")
Phase = Literal["stationary", "covariate", "concept", "new_regime"]

DEMAND_NUMERICAL = ["temperature", "price", "promo_share", "last_year_demand"]
DEMAND_CATEGORICAL = ["day_of_week", "store_type"]
DEMAND_TARGET = "demand"
STORE_TYPES = ["urban", "suburban", "rural"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

TRIAGE_NUMERICAL = ["users_affected", "error_rate", "latency_ms", "reporter_tickets_30d"]
TRIAGE_CATEGORICAL = ["service", "customer_tier"]
TRIAGE_TARGET = "priority"
TRIAGE_LABELS = ["low", "medium", "high"]
SERVICES = ["web", "api", "payments", "batch"]
TIERS = ["free", "pro", "enterprise"]

_T0 = pd.Timestamp("2026-01-05", tz="UTC")  # a Monday: the first batch's week starts here
_STORE_LEVEL = {"urban": 1.35, "suburban": 1.0, "rural": 0.6}
_NEW_STORE_SHIFT = {"urban": -0.7, "suburban": 0.3, "rural": 0.0}  # log demand
_DAY_LEVEL = np.array([0.85, 0.85, 0.9, 0.95, 1.1, 1.35, 1.0])
_SERVICE_WEIGHT = {"web": 0.0, "api": 0.3, "payments": 0.8, "batch": -0.6}
_TIER_WEIGHT = {"free": 0.0, "pro": 0.5, "enterprise": 1.1}


def task_phase(i: int, batches: int) -> Phase:
    """The phase of batch `i` (0-based) of a stream of `batches` batches.

    The first ~30% are stationary, the covariate episode runs to the middle, the concept
    changes at the middle batch and the new regime holds after it.

    Raises:
        ValueError: fewer than 4 batches, or `i` outside `range(batches)`.
    """
    if batches < 4:
        raise ValueError(f"batches={batches}: a task stream needs at least 4, one per phase")
    if not 0 <= i < batches:
        raise ValueError(f"batch index {i} is outside range({batches})")
    stationary_end = max(1, (3 * batches + 5) // 10)
    concept_at = max(stationary_end + 1, (batches + 1) // 2)
    if i < stationary_end:
        return "stationary"
    if i < concept_at:
        return "covariate"
    return "concept" if i == concept_at else "new_regime"


def _times(n: int, start: pd.Timestamp, days: int) -> pd.DatetimeIndex:
    # Evenly spread over the window: strictly increasing, and later windows come later.
    return start + pd.to_timedelta(np.arange(n) * (days * 86_400 / n), unit="s")


def _demand_batch(rng: np.random.Generator, times: pd.DatetimeIndex, phase: Phase) -> pd.DataFrame:
    n = len(times)
    heat = phase == "covariate"
    new = phase in ("concept", "new_regime")
    store = rng.choice(STORE_TYPES, n, p=[0.45, 0.35, 0.2])
    day = times.dayofweek.to_numpy()
    # The heat wave lifts temperatures and prices (suppliers pass on cooling costs).
    temperature = rng.normal(27.0 if heat else 17.0, 4.5 if heat else 6.5, n)
    price = np.clip(rng.normal(11.6 if heat else 10.0, 1.6, n), 6.0, 16.0)
    promo = rng.beta(2.0, 8.0, n)
    size = np.clip(rng.lognormal(0.0, 0.5, n), 0.4, 2.5)  # unobserved but for last year
    level = 40.0 * size * np.vectorize(_STORE_LEVEL.get)(store) * _DAY_LEVEL[day]
    last_year = level * rng.gamma(50.0, 1 / 50.0, n)
    log_effect = 0.02 * (temperature - 17.0) - 1.2 * np.log(price / 10.0) + 1.5 * (promo - 0.2)
    if new:
        # A discounter opens in town: urban stores lose half their trade, shoppers drive out to
        # suburban stores (a third more), and everyone watches prices and promotions closely.
        log_effect = (
            0.02 * (temperature - 17.0)
            - 2.5 * np.log(price / 10.0)
            + 2.5 * (promo - 0.2)
            + np.vectorize(_NEW_STORE_SHIFT.get)(store)
        )
    mu = level * np.exp(log_effect)
    demand = rng.gamma(30.0, mu / 30.0)
    demand[rng.random(n) < 0.01] = 0.0  # closed for the day or out of stock
    return pd.DataFrame(
        {
            "event_time": times,
            "temperature": temperature.round(1),
            "price": price.round(2),
            "promo_share": promo.round(3),
            "last_year_demand": last_year.round(2),
            "day_of_week": np.array(DAYS)[day],
            "store_type": store,
            DEMAND_TARGET: demand.round(2),
        }
    )


def _triage_batch(rng: np.random.Generator, times: pd.DatetimeIndex, phase: Phase) -> pd.DataFrame:
    n = len(times)
    release = phase == "covariate"
    new = phase in ("concept", "new_regime")
    # A big release: slower responses and an api-heavy mix of tickets.
    service = rng.choice(
        SERVICES, n, p=[0.2, 0.5, 0.15, 0.15] if release else [0.4, 0.25, 0.15, 0.2]
    )
    tier = rng.choice(TIERS, n, p=[0.5, 0.35, 0.15])
    users = np.floor(rng.lognormal(2.0, 1.3, n)).astype(int) + 1
    error_rate = rng.beta(1.5, 25.0, n)
    latency = rng.lognormal(np.log(450.0 if release else 300.0), 0.5, n)
    reporter = rng.poisson(2.0, n)  # never matters
    service_w = np.vectorize(_SERVICE_WEIGHT.get)(service)
    tier_w = np.vectorize(_TIER_WEIGHT.get)(tier)
    score = (
        0.8 * np.log(users) + 20.0 * error_rate + 1.1 * np.log(latency / 300.0) + service_w + tier_w
    )
    cuts = (3.0, 4.5)
    if new:
        # A new on-call policy: users affected count more, slow-but-working services go down
        # the queue (latency's effect reverses), the service no longer counts, and the
        # medium/high cut moves down.
        score = 1.3 * np.log(users) + 20.0 * error_rate - 1.1 * np.log(latency / 300.0) + tier_w
        cuts = (3.0, 4.0)
    score = score + rng.logistic(0.0, 0.18, n)
    priority = np.array(TRIAGE_LABELS)[np.searchsorted(cuts, score)]
    return pd.DataFrame(
        {
            "event_time": times,
            "users_affected": users,
            "error_rate": error_rate.round(4),
            "latency_ms": latency.round(1),
            "reporter_tickets_30d": reporter,
            "service": service,
            "customer_tier": tier,
            TRIAGE_TARGET: priority,
        }
    )


def _stream(
    kind: str, seed: int, batches: int, rows: int, reference_rows: int
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    make = _demand_batch if kind == "demand" else _triage_batch
    phases = [task_phase(i, batches) for i in range(batches)]  # checks `batches`
    if rows < 1 or reference_rows < 1:
        raise ValueError(f"rows={rows}, reference_rows={reference_rows}: both must be >= 1")
    rng = np.random.default_rng([seed, TASK_KINDS.index(kind)])
    # The reference is the four weeks before the first batch.
    reference = make(rng, _times(reference_rows, _T0 - pd.Timedelta(days=28), 28), "stationary")
    reference.insert(0, "id", np.arange(reference_rows))
    out = {}
    offset = reference_rows
    for i, phase in enumerate(phases):
        frame = make(rng, _times(rows, _T0 + pd.Timedelta(days=7 * i), 7), phase)
        frame.insert(0, "id", np.arange(offset, offset + rows))
        out[f"batch_{i + 1:03d}"] = frame
        offset += rows
    return reference, out


def demand_stream(
    seed: int, batches: int = 10, rows: int = 1000, reference_rows: int = 2000
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """(reference, {`batch_001`...: batch}) of daily store demand, reproducible from `seed`.

    Each row is a store-day: `temperature`, `price`, `promo_share`, `last_year_demand` (the
    same store and weekday a year ago: it carries the store's size, which is unobserved),
    `day_of_week`, `store_type`, and the target `demand` (kilograms, two decimals, about 1%
    zeros for closed or sold-out days). Phases (default 10 batches; `task_phase`):

    - `batch_001`-`batch_003`: stationary;
    - `batch_004`-`batch_005`: a heat wave, temperature about +10 C and prices about +16%,
      demand given the inputs unchanged;
    - `batch_006`: a discounter opens: price elasticity -1.2 -> -2.5, promotions pull harder,
      urban stores lose half their trade and suburban ones gain a third; a model of the
      reference has about twice its hold-out RMSE;
    - `batch_007`-`batch_010`: the new regime holds.

    Raises:
        ValueError: fewer than 4 batches, or fewer than 1 row.
    """
    return _stream("demand", seed, batches, rows, reference_rows)


def triage_stream(
    seed: int, batches: int = 10, rows: int = 1000, reference_rows: int = 2000
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """(reference, {`batch_001`...: batch}) of incident tickets, reproducible from `seed`.

    Each row is a ticket: `users_affected`, `error_rate`, `latency_ms`,
    `reporter_tickets_30d` (never matters), `service`, `customer_tier`, and the target
    `priority`, one of `TRIAGE_LABELS` (about 45% low, 35% medium, 20% high). Phases
    (default 10 batches; `task_phase`):

    - `batch_001`-`batch_003`: stationary;
    - `batch_004`-`batch_005`: a release, latency about +50% and an api-heavy service mix,
      priority given the inputs unchanged;
    - `batch_006`: a new on-call policy: latency's effect reverses, the service no longer
      counts, users affected count more and the medium/high boundary moves down;
    - `batch_007`-`batch_010`: the new regime holds.

    Raises:
        ValueError: fewer than 4 batches, or fewer than 1 row.
    """
    return _stream("triage", seed, batches, rows, reference_rows)


def task_stream_loop(root: Path, kind: str, model: dict[str, Any] | None = None) -> Path:
    """Write `root/loop.yaml` for a replay of a task stream `kind`: the package's default
    policies, the reference at `root/reference.parquet`, batches landing in `root/in`. No
    `task` key (the loop infers it from the target), and no `model` key unless `model`
    (estimator and params) is given, so the loop picks its default for the task.
    Returns its path.

    Raises:
        ValueError: `kind` is not one of `TASK_KINDS`.
    """
    if kind not in TASK_KINDS:
        raise ValueError(
            f"task stream kind {kind!r} is unknown; expected one of {list(TASK_KINDS)}"
        )
    numerical, categorical, target = (
        (DEMAND_NUMERICAL, DEMAND_CATEGORICAL, DEMAND_TARGET)
        if kind == "demand"
        else (TRIAGE_NUMERICAL, TRIAGE_CATEGORICAL, TRIAGE_TARGET)
    )
    doc: dict[str, Any] = {
        "name": f"{kind}-stream",
        "state_dir": str(root / "state"),
        "columns": {
            "numerical": numerical,
            "categorical": categorical,
            "target": target,
            "id": "id",
            "timestamp": "event_time",
        },
        "sources": {"reference": str(root / "reference.parquet"), "landing": str(root / "in")},
    }
    if model is not None:
        doc["model"] = model
    path = root / "loop.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path
