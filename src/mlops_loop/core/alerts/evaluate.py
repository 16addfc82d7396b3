"""Alert rules evaluated as a pure function over the per-batch metric history.

`evaluate_alerts(rules, history, state)` walks the batches it has not seen yet, in the order
given, and returns the firing/resolved transitions plus the new state, a small JSON-able dict
that the caller persists between runs. Delivery lives in `mlops_loop.core.notify`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from mlops_loop.core.alerts.event import AlertEvent
from mlops_loop.core.alerts.rules import AlertError, AlertRule
from mlops_loop.core.alerts.state import STATE_VERSION, _fresh_rule_state, _load_state
from mlops_loop.core.notify import describe_validation_error

# Relative drops are ratios of floats: 0.81 -> 0.729 must count as a 10% drop.
_EPS = 1e-9


@dataclass(frozen=True)
class _Point:
    batch: str
    time: float | None
    record: Mapping[str, Any]


def _epoch(raw: Any, where: str) -> float:
    if isinstance(raw, datetime):
        stamp = raw
    elif isinstance(raw, str):
        try:
            stamp = datetime.fromisoformat(raw)
        except ValueError as e:
            raise AlertError(f"{where}: {raw!r} is not an ISO 8601 time") from e
    elif isinstance(raw, numbers.Real) and not isinstance(raw, bool):
        return float(raw)
    else:
        raise AlertError(
            f"{where}: {raw!r} is not a time (expected a datetime, ISO 8601 text or epoch seconds)"
        )
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _points(history: Sequence[Mapping[str, Any]]) -> list[_Point]:
    points: list[_Point] = []
    seen: set[str] = set()
    for i, record in enumerate(history):
        if not isinstance(record, Mapping):
            raise AlertError(f"history[{i}] is a {type(record).__name__}, expected a mapping")
        if "batch" not in record:
            raise AlertError(f"history[{i}] has no 'batch' key (the batch or partition key)")
        batch = record["batch"]
        if isinstance(batch, bool) or not isinstance(batch, str | int):
            raise AlertError(f"history[{i}].batch is {batch!r}, expected a string key")
        batch = str(batch)
        if batch in seen:
            raise AlertError(
                f"history[{i}].batch {batch!r} appears twice; keep one record per batch"
            )
        seen.add(batch)
        raw_time = record.get("time")
        time = None if raw_time is None else _epoch(raw_time, f"history[{i}].time")
        points.append(_Point(batch, time, record))
    return points


def _metric(point: _Point, name: str) -> float | None:
    raw = point.record.get(name)
    if raw is None:
        return None
    if not isinstance(raw, numbers.Real):
        raise AlertError(f"batch {point.batch!r}: metric {name!r} is {raw!r}, expected a number")
    value = float(raw)
    return value if math.isfinite(value) else None


def _rules(rules: Sequence[AlertRule | Mapping[str, Any]]) -> list[AlertRule]:
    parsed: list[AlertRule] = []
    for i, rule in enumerate(rules):
        if isinstance(rule, AlertRule):
            parsed.append(rule)
            continue
        try:
            parsed.append(AlertRule.model_validate(rule))
        except ValidationError as e:
            raise AlertError(
                f"rules[{i}] is invalid:\n{describe_validation_error(e, f'rules[{i}]')}"
            ) from e
    names = [r.name for r in parsed]
    for name in names:
        if names.count(name) > 1:
            raise AlertError(f"rule name {name!r} is used twice")
    return parsed


def _num(x: float) -> str:
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.4g}"


def _pct(ratio: float) -> str:
    pct = abs(ratio) * 100
    return f"{pct:.0f}%" if pct >= 10 else f"{pct:.1f}%"


class _RuleRun:
    """Walks one rule over the unseen batches, updating its slice of the state."""

    def __init__(self, rule: AlertRule, state: dict[str, Any], now: float) -> None:
        self.rule = rule
        self.state = state
        self.now = now

    def relative(self, value: float, baseline: float) -> float:
        """Relative move of the metric towards the bad side (positive = worse)."""
        change = (value - baseline) / abs(baseline)
        return -change if self.rule.side == "below" else change

    def level(self, baseline: float | None, ratio: float) -> float:
        """The metric level `ratio` away from the baseline on the bad side."""
        if baseline is None:
            return ratio
        step = ratio * abs(baseline)
        return baseline - step if self.rule.side == "below" else baseline + step

    def baseline_for(self, point: _Point, value: float) -> float | None:
        source = self.rule.baseline
        assert source is not None
        if source.value is not None:
            base: float | None = source.value
        elif source.metric is not None:
            base = _metric(point, source.metric)
        else:
            assert source.first_batches is not None
            if self.state["baseline"] is None:
                self.state["baseline_values"].append(value)
                if len(self.state["baseline_values"]) == source.first_batches:
                    values = self.state["baseline_values"]
                    self.state["baseline"] = sum(values) / len(values)
                    self.state["baseline_values"] = []
                return None  # this batch is part of the baseline
            base = float(self.state["baseline"])
        # A relative change from zero is undefined: such a batch is not judged.
        return None if base is None or base == 0 else base

    def breaks(self, value: float, baseline: float | None) -> bool:
        rule = self.rule
        if rule.kind == "relative_drop":
            assert baseline is not None and rule.drop is not None
            return self.relative(value, baseline) >= rule.drop - _EPS
        assert rule.value is not None
        return value < rule.value if rule.side == "below" else value > rule.value

    def cleared(self, value: float, baseline: float | None) -> bool:
        rule = self.rule
        if rule.kind == "relative_drop":
            assert baseline is not None
            return self.relative(value, baseline) < rule.clear_level - _EPS
        if rule.side == "below":
            return value >= rule.clear_level
        return value <= rule.clear_level

    def cooling(self, time: float) -> bool:
        cooldown = self.rule.cooldown
        if cooldown is None or self.state["last_fired_batch"] is None:
            return False
        since = self.state["batches_since_fired"]
        if cooldown.batches is not None and since is not None and since <= cooldown.batches:
            return True
        fired_at = self.state["last_fired_time"]
        if cooldown.seconds is not None and fired_at is not None:
            if time - _epoch(fired_at, f"state of rule {self.rule.name!r}") < cooldown.seconds:
                return True
        return False

    def step(self, point: _Point) -> AlertEvent | None:
        rule, st = self.rule, self.state
        st["last_batch"] = point.batch
        if st["batches_since_fired"] is not None:
            st["batches_since_fired"] += 1
        value = _metric(point, rule.metric)
        if value is None:
            return None
        baseline = None
        if rule.kind == "relative_drop":
            baseline = self.baseline_for(point, value)
            if baseline is None:
                return None
        broken = self.breaks(value, baseline)
        count = 0
        if rule.kind == "n_of_m":
            assert rule.m is not None and rule.n is not None
            st["window"] = [*st["window"], broken][-rule.m :]
            count = sum(bool(b) for b in st["window"])
            active = count >= rule.n
        else:
            active = broken
        time = point.time if point.time is not None else self.now
        if st["firing"]:
            if not self.cleared(value, baseline):
                return None
            if rule.kind == "n_of_m" and active:
                return None
            st["firing"] = False
            st["since"] = None
            return self.event("resolved", point, value, baseline, time, count)
        if not active or self.cooling(time):
            return None
        st.update(
            firing=True,
            since=point.batch,
            last_fired_batch=point.batch,
            last_fired_time=_iso(time),
            batches_since_fired=0,
        )
        return self.event("firing", point, value, baseline, time, count)

    def event(
        self,
        kind: Literal["firing", "resolved"],
        point: _Point,
        value: float,
        baseline: float | None,
        time: float,
        count: int,
    ) -> AlertEvent:
        rule = self.rule
        tail = f"(rule {rule.name}, {rule.severity})"
        if kind == "resolved":
            tail = f"(rule {rule.name}, {rule.severity}, resolved)"
        back = "at or above" if rule.side == "below" else "at or below"
        moved = "fell" if rule.side == "below" else "rose"
        if rule.kind == "relative_drop":
            assert baseline is not None and rule.drop is not None
            ratio = rule.drop if kind == "firing" else rule.clear_level
            threshold = self.level(baseline, ratio)
            rel = self.relative(value, baseline)
            if kind == "firing":
                text = f"{_num(value)} {moved} {_pct(rel)} {rule.side} baseline {_num(baseline)}"
            elif rel <= 0:
                text = f"{_num(value)} is back {back} baseline {_num(baseline)}"
            else:
                text = (
                    f"{_num(value)} is {_pct(rel)} {rule.side} baseline {_num(baseline)}, "
                    f"within the clear level of {_pct(rule.clear_level)}"
                )
        else:
            assert rule.value is not None
            threshold = rule.value if kind == "firing" else rule.clear_level
            window = len(self.state["window"])
            if kind == "firing" and rule.kind == "n_of_m":
                text = (
                    f"{_num(value)} is {rule.side} {_num(threshold)} in {count} of the last "
                    f"{window} batches"
                )
            elif kind == "firing":
                text = f"{_num(value)} is {rule.side} {_num(threshold)}"
            elif rule.kind == "n_of_m":
                text = (
                    f"{_num(value)} is back {back} {_num(threshold)}; {rule.side} "
                    f"{_num(rule.value)} in {count} of the last {window} batches"
                )
            else:
                text = f"{_num(value)} is back {back} {_num(threshold)}"
        return AlertEvent(
            rule=rule.name,
            metric=rule.metric,
            kind=kind,
            severity=rule.severity,
            batch=point.batch,
            value=value,
            threshold=threshold,
            message=f"{rule.metric} {text} {tail}",
            baseline=baseline,
            time=_iso(time) if point.time is not None else None,
        )


def evaluate_alerts(
    rules: Sequence[AlertRule | Mapping[str, Any]],
    history: Sequence[Mapping[str, Any]],
    state: Mapping[str, Any] | None = None,
    *,
    now: datetime | None = None,
) -> tuple[list[AlertEvent], dict[str, Any]]:
    """Evaluate alert rules over the batches of `history` not seen in `state`.

    Args:
        rules: the rules (`AlertRule` or mappings validated into one).
        history: one record per batch, oldest first: a mapping with the key `batch` (the batch
            or partition key), optionally `time` (datetime, ISO 8601 text or epoch seconds;
            used by cooldowns in seconds), and metric name -> number. Missing, None or NaN
            metrics leave a rule unjudged on that batch.
        state: what the previous call returned (or None/{} on the first call). Each rule
            resumes after the last batch it saw; a rule the state does not know, or whose
            last batch is not in `history`, starts from the oldest batch given.
        now: time of batches without `time` (default: the current time).

    Returns:
        The events in batch order (rule order within a batch) and the new state, a
        JSON-serialisable dict holding only the given rules. The inputs are not modified.

    Raises:
        AlertError: a rule, record or state is malformed (named in the message).
    """
    parsed = _rules(rules)
    points = _points(history)
    old = _load_state(state)
    clock = _epoch(now, "now") if now is not None else datetime.now(UTC).timestamp()
    position = {p.batch: i for i, p in enumerate(points)}
    found: list[tuple[int, int, AlertEvent]] = []
    new_rules: dict[str, Any] = {}
    for r, rule in enumerate(parsed):
        rule_state = old["rules"].get(rule.name) or _fresh_rule_state()
        run = _RuleRun(rule, rule_state, clock)
        last = rule_state["last_batch"]
        start = position[last] + 1 if last in position else 0
        for i in range(start, len(points)):
            event = run.step(points[i])
            if event is not None:
                found.append((i, r, event))
        new_rules[rule.name] = rule_state
    found.sort(key=lambda t: (t[0], t[1]))
    return [e for _, _, e in found], {"version": STATE_VERSION, "rules": new_rules}
