"""The stuck quality gate: K batches in a row quarantined by one expectation raise one alert."""

from __future__ import annotations

import pytest

from mlops_loop.core.alerts import AlertsConfig
from mlops_loop.core.alerts.stuck import RULE, failed_expectations, stuck_gate_events
from mlops_loop.core.config import load_config
from mlops_loop.core.errors import InvalidConfigError
from tests.conftest import write_loop

INCOME = "out_of_range:income"
AGE = "null_rate:age"


def kinds(events):
    return [(e.batch, e.metric, e.kind) for e in events]


def stream(*failed):
    return [(f"b{i:02d}", list(f)) for i, f in enumerate(failed, start=1)]


def test_k_minus_one_batches_raise_nothing():
    events, stuck = stuck_gate_events(stream([INCOME], [INCOME]), after=3)
    assert events == [] and stuck == []


def test_k_batches_raise_one_alert_naming_the_column():
    events, stuck = stuck_gate_events(stream([INCOME], [INCOME], [INCOME]), after=3)
    assert kinds(events) == [("b03", INCOME, "firing")]
    [event] = events
    assert event.rule == RULE and event.severity == "error"
    assert event.message.startswith(
        "quality gate stuck on `income`: the upstream or the suite changed"
    )
    assert "b01, b02, b03" in event.message and event.value == 3 and event.threshold == 3
    assert stuck == [INCOME]


def test_the_alert_fires_once_per_spell_not_every_batch_after():
    events, stuck = stuck_gate_events(stream(*[[INCOME]] * 7), after=3)
    assert kinds(events) == [("b03", INCOME, "firing")]
    assert stuck == [INCOME]


def test_a_different_expectation_in_between_resets_the_count():
    events, _ = stuck_gate_events(stream([INCOME], [INCOME], [AGE], [INCOME], [INCOME]), after=3)
    assert events == []


def test_a_passing_batch_in_between_resets_the_count():
    events, _ = stuck_gate_events(stream([INCOME], [INCOME], [], [INCOME], [INCOME]), after=3)
    assert events == []


def test_a_spell_resolves_on_the_first_batch_that_passes_it_and_a_new_spell_fires_again():
    events, stuck = stuck_gate_events(
        stream([INCOME], [INCOME], [INCOME], [INCOME], [], [INCOME], [INCOME], [INCOME]),
        after=3,
    )
    assert kinds(events) == [
        ("b03", INCOME, "firing"),
        ("b05", INCOME, "resolved"),
        ("b08", INCOME, "firing"),
    ]
    assert "no longer stuck on `income`" in events[1].message
    assert stuck == [INCOME]


def test_two_expectations_stuck_together_are_two_alerts_and_one_can_resolve_alone():
    events, stuck = stuck_gate_events(
        stream([INCOME, AGE], [INCOME, AGE], [INCOME, AGE], [INCOME]), after=3
    )
    assert kinds(events) == [
        ("b03", AGE, "firing"),
        ("b03", INCOME, "firing"),
        ("b04", AGE, "resolved"),
    ]
    assert stuck == [INCOME]


def test_only_error_incidents_of_a_failed_verdict_count():
    verdict = {
        "success": False,
        "incidents": [
            {"kind": "out_of_range", "column": "income", "severity": "error"},
            {"kind": "unexpected_column", "column": None, "severity": "warn"},
            {"kind": "row_count", "column": None, "severity": "error"},
        ],
    }
    assert failed_expectations(verdict) == ["out_of_range:income", "row_count"]
    assert failed_expectations({**verdict, "success": True}) == []


def test_the_count_is_configurable_and_validated(tmp_path, demo_frames):
    assert AlertsConfig().quality_stuck_after == 3
    reference, _ = demo_frames
    config = load_config(write_loop(tmp_path, reference, **{"alerts.quality_stuck_after": 5}))
    assert config.alerts.quality_stuck_after == 5
    with pytest.raises(InvalidConfigError, match="quality_stuck_after"):
        load_config(write_loop(tmp_path, reference, **{"alerts.quality_stuck_after": 0}))


def unit_changed(frame):
    changed = frame.copy()
    changed["income"] = changed["income"] * 1000  # the upstream now sends milli-units
    return changed


@pytest.mark.slow
def test_the_step_delivers_the_alert_once_through_the_notifiers(tmp_path, demo_frames, webhook):
    from mlops_loop.core.steps.alerts import check_gate_stuck
    from mlops_loop.core.steps.ingest import ingest_batch
    from mlops_loop.core.steps.quality import check_quality
    from mlops_loop.core.steps.reference import take_reference_snapshot
    from mlops_loop.core.store import LoopStore

    url, received = webhook
    reference, batches = demo_frames
    keys = ["batch_101", "batch_102", "batch_103", "batch_104"]
    frames = {k: unit_changed(batches["batch_001"]) for k in keys}
    path = write_loop(
        tmp_path,
        reference,
        frames,
        **{"alerts.notifiers": [{"type": "webhook", "url": url, "timeout": 5}]},
    )
    config = load_config(path)
    take_reference_snapshot(config)
    checked = {}
    for key in keys:
        ingest_batch(config, key, config.sources.landing / f"{key}.parquet")
        assert not check_quality(config, key).success
        checked[key] = check_gate_stuck(config, key)
    assert [len(checked[k].fired) for k in keys] == [0, 0, 1, 0]
    assert checked["batch_104"].firing == [f"{RULE} ({INCOME})"]  # still stuck, not re-sent
    assert len(received) == 1 and "quality gate stuck on `income`" in received[0]["text"]
    # Running the step again on the same batch sends nothing new.
    assert check_gate_stuck(config, "batch_103").sent == []
    assert len(received) == 1
    store = LoopStore(config.state_dir)
    assert store.batch_json("batch_103", "gate_alerts")["events"][0]["metric"] == INCOME
