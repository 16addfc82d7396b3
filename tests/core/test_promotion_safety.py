"""A promotion interrupted at any point leaves the old champion serving and a consistent
history; concurrent promotions never both win. Real MLflow (SQLite), real models."""

import threading

import pytest

from mlops_loop.core.config import load_config
from mlops_loop.core.errors import ConcurrentPromotionError
from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.steps.ingest import ingest_batch
from mlops_loop.core.steps.promotion import Promotion, promote_challenger
from mlops_loop.core.steps.quality import check_quality
from mlops_loop.core.steps.reference import ensure_champion, take_reference_snapshot
from mlops_loop.core.steps.training import train_challenger
from tests.conftest import write_loop


class Crash(Exception):
    """Stands for the process dying at that point."""


@pytest.fixture
def ready(tmp_path, demo_frames):
    """A loop with a champion (v1) and two challengers trained on concept-drift batches."""
    reference, batches = demo_frames
    keys = ["batch_005", "batch_006"]
    config = load_config(write_loop(tmp_path, reference, {k: batches[k] for k in keys}))
    take_reference_snapshot(config)
    ensure_champion(config)
    for k in keys:
        ingest_batch(config, k, config.sources.landing / f"{k}.parquet")
        assert check_quality(config, k).success
        train_challenger(config, k)
    return config, MlflowRegistry.from_config(config)


def assert_consistent(registry: MlflowRegistry) -> None:
    """The history is a chain, and its last entry names the serving champion."""
    history = registry.history()
    for before, after in zip(history, history[1:], strict=False):
        assert after["from_version"] == before["to_version"], history
    assert history[-1]["to_version"] == registry.champion(), history


@pytest.mark.parametrize(
    "point",
    ["decided", "tagged", "history_written"],
)
def test_a_crash_never_half_promotes(ready, monkeypatch, point):
    config, registry = ready
    assert registry.champion() == 1
    if point == "decided":  # after the comparison, before any registry write
        monkeypatch.setattr(MlflowRegistry, "promote", _raise)
    elif point == "tagged":  # the version is stamped, nothing else
        monkeypatch.setattr(MlflowRegistry, "_append_history", _raise)
    else:  # the history says so, the alias has not moved yet
        original = MlflowRegistry.client.fget

        def client_without_alias_moves(self):
            client = original(self)
            real = client.set_registered_model_alias

            def set_alias(name, alias, version):
                if alias == "champion":
                    raise Crash("died before moving the alias")
                return real(name, alias, version)

            client.set_registered_model_alias = set_alias
            return client

        monkeypatch.setattr(MlflowRegistry, "client", property(client_without_alias_moves))
    with pytest.raises(Crash):
        promote_challenger(config, "batch_005")
    monkeypatch.undo()

    fresh = MlflowRegistry.from_config(config)
    assert fresh.champion() == 1  # the previous champion still serves
    fresh.reconcile("next run")
    assert_consistent(fresh)
    assert fresh.previous_champion() is None  # nothing to roll back to: v1 never stopped
    # The interrupted step can simply run again, and completes.
    result = promote_challenger(config, "batch_005")
    assert fresh.champion() == result.champion_version_after
    assert_consistent(fresh)


def _raise(*args, **kwargs):
    raise Crash("died here")


def test_concurrent_promotions_never_both_win(ready):
    config, registry = ready
    outcomes: dict[str, object] = {}

    def promote(key: str) -> None:
        try:
            outcomes[key] = promote_challenger(config, key)
        except ConcurrentPromotionError as e:
            outcomes[key] = e

    threads = [threading.Thread(target=promote, args=(k,)) for k in ("batch_005", "batch_006")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    promoted = [k for k, o in outcomes.items() if isinstance(o, Promotion) and o.promoted]
    refused = [k for k, o in outcomes.items() if isinstance(o, ConcurrentPromotionError)]
    assert len(outcomes) == 2
    # Either one promotion was refused by the compare-and-set, or they ran one after the other
    # and the second compared itself against the first's winner: never two from v1.
    froms = [e["from_version"] for e in registry.history() if e["action"] == "promotion"]
    assert len(froms) == len(set(froms)), registry.history()
    assert len(promoted) + len(refused) <= 2
    assert_consistent(registry)
