"""A seeded, realistic tabular stream: customers who may churn, arriving in batches.

Episodes script what production does to a model: stable weeks, a broken upstream pipeline,
a shift of the customer mix (covariate drift), and a change in what makes people churn
(concept drift) that only labels reveal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

NUMERICAL = ["age", "income", "tenure_months", "sessions_per_week", "support_tickets"]
CATEGORICAL = ["region", "plan", "device"]
REGIONS = ["north", "south", "east", "west"]
PLANS = ["basic", "pro", "enterprise"]
DEVICES = ["mobile", "desktop", "tablet"]


@dataclass(frozen=True)
class Episode:
    """One batch of the scripted stream."""

    name: str
    kind: str  # stable | quality | covariate | concept
    description: str
    rows: int = 2000


SCENARIO = [
    Episode("batch_001", "stable", "a normal week"),
    Episode("batch_002", "stable", "a normal week"),
    Episode("batch_003", "quality", "an upstream bug: income in cents and half the ages lost"),
    Episode("batch_004", "covariate", "a marketing push brings older customers from the west"),
    Episode("batch_005", "concept", "a competitor launches: heavy users start to churn"),
    Episode("batch_006", "concept", "the new churn pattern holds"),
    Episode("batch_007", "concept", "the pattern holds; the weekly retrain schedule fires"),
]


def _features(rng: np.random.Generator, n: int, covariate_shift: bool) -> pd.DataFrame:
    age_mean = 52.0 if covariate_shift else 40.0
    region_p = [0.15, 0.15, 0.15, 0.55] if covariate_shift else [0.3, 0.25, 0.25, 0.2]
    return pd.DataFrame(
        {
            "age": np.clip(rng.normal(age_mean, 12, n), 18, 90).round(0),
            "income": np.round(rng.lognormal(10.6, 0.45, n), 2),
            "tenure_months": np.round(rng.gamma(2.0, 12.0, n), 1),
            "sessions_per_week": rng.poisson(5, n).astype(float),
            "support_tickets": rng.poisson(0.8, n).astype(float),
            "region": rng.choice(REGIONS, n, p=region_p),
            "plan": rng.choice(PLANS, n, p=[0.6, 0.3, 0.1]),
            "device": rng.choice(DEVICES, n, p=[0.55, 0.35, 0.1]),
        }
    )


def _churn(rng: np.random.Generator, x: pd.DataFrame, concept: str) -> np.ndarray:
    z = (
        -0.4
        - 0.045 * (x["tenure_months"] - 24)
        - 0.35 * (x["sessions_per_week"] - 5)
        + 0.8 * x["support_tickets"]
        - 0.6 * (x["plan"] == "enterprise")
        + 0.02 * (x["age"] - 40)
    )
    if concept == "new":
        # Heavy users now leave for the competitor; tickets matter less.
        z = (
            -0.4
            + 0.55 * (x["sessions_per_week"] - 5)
            + 0.1 * x["support_tickets"]
            + 0.9 * (x["device"] == "mobile")
            - 0.01 * (x["tenure_months"] - 24)
        )
    # Scaled so that a good model reaches a ROC AUC of about 0.85 on either concept.
    p = 1 / (1 + np.exp(-1.8 * z.to_numpy(dtype=float)))
    return (rng.random(len(x)) < p).astype(int)


def make_frame(
    rng: np.random.Generator,
    n: int,
    *,
    start: pd.Timestamp,
    id_offset: int,
    covariate_shift: bool = False,
    concept: str = "old",
    new_concept_share: float | None = None,
) -> pd.DataFrame:
    """`n` labelled rows with ids and timestamps one minute apart from `start`.

    `new_concept_share` (0 to 1), when given, overrides `concept`: that share of the rows, drawn
    at random, follows the new concept and the rest the old one (gradual concept drift).
    """
    x = _features(rng, n, covariate_shift)
    frame = pd.DataFrame(
        {
            "customer_id": np.arange(id_offset, id_offset + n),
            "event_time": start + pd.to_timedelta(np.arange(n), unit="min"),
        }
    )
    frame = pd.concat([frame, x], axis=1)
    if new_concept_share is None:
        frame["churned"] = _churn(rng, x, concept)
    else:
        old, new = _churn(rng, x, "old"), _churn(rng, x, "new")
        frame["churned"] = np.where(rng.random(n) < new_concept_share, new, old)
    return frame


def break_pipeline(rng: np.random.Generator, frame: pd.DataFrame) -> pd.DataFrame:
    """What an upstream bug does: a unit change and lost values."""
    broken = frame.copy()
    broken["income"] = broken["income"] * 100
    lost = rng.random(len(broken)) < 0.5
    broken.loc[lost, "age"] = np.nan
    return broken


def generate(
    seed: int = 7, reference_rows: int = 5000, scenario: list[Episode] | None = None
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The reference frame and one frame per episode, all reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2026-01-05")
    reference = make_frame(rng, reference_rows, start=t0, id_offset=1)
    batches: dict[str, pd.DataFrame] = {}
    offset = reference_rows + 1
    for i, ep in enumerate(scenario or SCENARIO):
        start = t0 + pd.Timedelta(days=7 * (i + 1))
        frame = make_frame(
            rng,
            ep.rows,
            start=start,
            id_offset=offset,
            covariate_shift=ep.kind == "covariate",
            concept="new" if ep.kind == "concept" else "old",
        )
        if ep.kind == "quality":
            frame = break_pipeline(rng, frame)
        batches[ep.name] = frame
        offset += ep.rows
    return reference, batches
