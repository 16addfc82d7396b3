"""The stuck quality gate: one expectation quarantining batch after batch.

When the upstream changes shape for good (a unit, a category set), every batch from then on is
quarantined by the same expectation and the loop stops learning without a sound.
`stuck_gate_events` replays the quality verdicts in batch order, as a pure function, and says
where such a spell started (K batches in a row) and where it ended (a batch that no longer
fails that expectation). Delivery and records are the `alerts` step's, as for the rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlops_loop.core.alerts.event import AlertEvent, Severity
from mlops_loop.core.alerts.rules import AlertError

RULE = "quality_gate_stuck"
SEVERITY: Severity = "error"


def expectation_name(kind: str, column: str | None) -> str:
    """How an expectation of the suite is named in the alert: `kind:column`, or `kind`."""
    return f"{kind}:{column}" if column else kind


def failed_expectations(quality: Mapping[str, Any]) -> list[str]:
    """The expectations that quarantined a batch (its error incidents), from its verdict JSON;
    none when it passed."""
    if quality.get("success"):
        return []
    return sorted(
        {
            expectation_name(str(i.get("kind")), i.get("column"))
            for i in quality.get("incidents", [])
            if i.get("severity") == "error"
        }
    )


def _subject(name: str) -> str:
    kind, _, column = name.partition(":")
    return column or kind


def stuck_gate_events(
    verdicts: Sequence[tuple[str, Sequence[str]]], after: int
) -> tuple[list[AlertEvent], list[str]]:
    """Where the gate got stuck, and where it came unstuck, over the verdicts in batch order.

    Args:
        verdicts: `(batch, failed expectations)` per validated batch, oldest first; an empty
            list of expectations is a batch that passed.
        after: how many consecutive batches one expectation must quarantine.

    Returns:
        The firing events (one per spell, on the batch that makes it `after` in a row) and the
        resolved events (on the first batch that no longer fails it), in batch order, and the
        expectations still stuck after the last batch.

    Raises:
        AlertError: `after` is below 1.
    """
    if after < 1:
        raise AlertError(f"quality_stuck_after is {after!r}, expected a whole number >= 1")
    streaks: dict[str, list[str]] = {}
    firing: set[str] = set()
    events: list[AlertEvent] = []
    for batch, failed in verdicts:
        now = set(failed)
        for name in sorted(streaks):
            if name in now:
                continue
            spell = streaks.pop(name)
            if name in firing:
                firing.discard(name)
                events.append(_event("resolved", name, batch, len(spell), after, spell))
        for name in sorted(now):
            spell = streaks.setdefault(name, [])
            spell.append(batch)
            if len(spell) >= after and name not in firing:
                firing.add(name)
                events.append(_event("firing", name, batch, len(spell), after, spell))
    return events, sorted(firing)


def _event(
    kind: str, name: str, batch: str, count: int, after: int, spell: list[str]
) -> AlertEvent:
    subject = _subject(name)
    if kind == "firing":
        shown = ", ".join(spell[-after:])
        message = (
            f"quality gate stuck on `{subject}`: the upstream or the suite changed "
            f"({name} quarantined {count} batches in a row: {shown}). If the new shape is "
            "right, relearn the suite (relearn_suite_job, or `mlops-loop quality relearn`); "
            "else fix the upstream"
        )
    else:
        message = (
            f"quality gate no longer stuck on `{subject}`: batch {batch} passed {name} "
            f"after {count} quarantined in a row"
        )
    return AlertEvent(
        rule=RULE,
        metric=name,
        kind="firing" if kind == "firing" else "resolved",
        severity=SEVERITY,
        batch=batch,
        value=float(count),
        threshold=float(after),
        message=message,
    )
