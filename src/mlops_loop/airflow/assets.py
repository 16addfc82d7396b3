"""The Airflow assets of one loop: the champion model, and the retrain decisions."""

from __future__ import annotations

from dataclasses import dataclass

from airflow.sdk import Asset


@dataclass(frozen=True)
class LoopAssets:
    champion: Asset  # updated by bootstrap, a promotion and a rollback
    decisions: Asset  # an event carries the batches whose decision says retrain (`keys`)


def loop_assets(prefix: str) -> LoopAssets:
    return LoopAssets(
        champion=Asset(f"{prefix}champion_model"),
        decisions=Asset(f"{prefix}retrain_decision"),
    )
