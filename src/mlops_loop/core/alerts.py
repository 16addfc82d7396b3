"""Alert rules on per-batch metrics, evaluated as a pure function over the metric history.

`evaluate_alerts(rules, history, state)` walks the batches it has not seen yet, in the order
given, and returns the firing/resolved transitions plus the new state, a small JSON-able dict
that the caller persists between runs. Delivery lives in `mlops_loop.core.notify`.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, model_validator

from mlops_loop.core.errors import MlopsLoopError
from mlops_loop.core.notify import (
    DeliveryResult,
    Notifier,
    NotifierConfig,
    SmtpNotifier,
    SmtpNotifierConfig,
    WebhookNotifier,
    WebhookNotifierConfig,
    build_notifiers,
    describe_validation_error,
    notify,
)

__all__ = [
    "AlertError",
    "AlertEvent",
    "AlertRule",
    "AlertsConfig",
    "Baseline",
    "Cooldown",
    "DeliveryResult",
    "Notifier",
    "NotifierConfig",
    "SmtpNotifier",
    "SmtpNotifierConfig",
    "WebhookNotifier",
    "WebhookNotifierConfig",
    "build_notifiers",
    "evaluate_alerts",
    "notify",
]

#: Version of the persisted state layout; a state of another version is refused.
STATE_VERSION = 1
#: Keys of a history record that are not metrics.
RESERVED_KEYS = frozenset({"batch", "time"})
# Relative drops are ratios of floats: 0.81 -> 0.729 must count as a 10% drop.
_EPS = 1e-9

Severity = Literal["warn", "error"]
Direction = Literal["above", "below"]


class AlertError(MlopsLoopError, ValueError):
    """Alert rules, history or state are malformed; the message names the bad item."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Baseline(_Model):
    """What a `relative_drop` rule compares against: exactly one of the three sources."""

    value: FiniteFloat | None = Field(
        default=None, description="A fixed baseline, e.g. the champion's validation roc_auc."
    )
    metric: str | None = Field(
        default=None,
        min_length=1,
        description="Another metric of the same batch record that holds the baseline, e.g. "
        "`champion_roc_auc`; batches without it are not judged.",
    )
    first_batches: int | None = Field(
        default=None,
        ge=1,
        description="Mean of the rule's metric over the first K batches that have it. Those "
        "batches form the baseline and are not judged; the mean is kept in the state.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Baseline:
        given = [k for k in ("value", "metric", "first_batches") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "baseline needs exactly one of 'value', 'metric', 'first_batches' "
                f"(got {', '.join(given) or 'none'})"
            )
        return self


class Cooldown(_Model):
    """How long a rule that fired stays quiet; with both bounds, both must have passed."""

    batches: int | None = Field(
        default=None, ge=1, description="Batches after the firing one during which it cannot fire."
    )
    seconds: float | None = Field(
        default=None, gt=0, description="Seconds after the firing batch's time."
    )

    @model_validator(mode="after")
    def _at_least_one(self) -> Cooldown:
        if self.batches is None and self.seconds is None:
            raise ValueError("cooldown needs 'batches' or 'seconds'")
        return self


_FIELDS_BY_KIND: dict[str, tuple[set[str], set[str]]] = {
    # kind: (required fields, fields that belong to other kinds)
    "threshold": ({"direction", "value"}, {"drop", "baseline", "n", "m"}),
    "n_of_m": ({"direction", "value", "n", "m"}, {"drop", "baseline"}),
    "relative_drop": ({"drop", "baseline"}, {"value", "n", "m"}),
}
_FIELD_HELP = {
    "direction": "'above' or 'below', the side of 'value' that is bad",
    "value": "the level the metric is compared with",
    "drop": "the relative change that fires, e.g. 0.1 for 10%",
    "baseline": "{value: ...}, {metric: ...} or {first_batches: K}",
    "n": "how many of the last 'm' judged batches must break the level",
    "m": "the window of judged batches",
}


class AlertRule(_Model):
    """One alert rule on one metric of the per-batch history.

    Kinds:
        threshold: fires when the metric is `below` (or `above`) `value`.
        relative_drop: fires when the metric moved `drop` (relative, 0.1 = 10%) or more past
            its `baseline`: below it by default, above it with `direction: above`.
        n_of_m: fires when the metric was past `value` in `n` of the last `m` judged batches.

    `clear` sets hysteresis: a firing rule resolves only when the metric is back past it (a
    metric level for threshold and n_of_m, a relative drop for relative_drop). It defaults to
    the firing level.
    """

    name: str = Field(pattern=r"^\S+$", description="Unique rule name, shown in every event.")
    metric: str = Field(min_length=1, description="Metric name in the history records.")
    kind: Literal["threshold", "relative_drop", "n_of_m"] = Field(description="Rule kind.")
    direction: Direction | None = Field(
        default=None,
        description="Bad side: 'below' (e.g. roc_auc) or 'above' (e.g. drift_share). "
        "Required for threshold and n_of_m; relative_drop defaults to 'below'.",
    )
    value: FiniteFloat | None = Field(default=None, description="Firing level (threshold, n_of_m).")
    drop: float | None = Field(
        default=None, gt=0, description="Relative change against the baseline that fires."
    )
    baseline: Baseline | None = Field(default=None, description="Baseline of relative_drop.")
    n: int | None = Field(default=None, ge=1, description="Breaking batches needed (n_of_m).")
    m: int | None = Field(default=None, ge=1, description="Window of judged batches (n_of_m).")
    clear: FiniteFloat | None = Field(
        default=None,
        description="Level the metric must come back past for a firing rule to resolve; "
        "default: the firing level.",
    )
    cooldown: Cooldown | None = Field(
        default=None, description="Quiet period after a firing, in batches and/or seconds."
    )
    severity: Severity = Field(default="warn", description="'warn' or 'error'.")

    @model_validator(mode="after")
    def _fields_fit_the_kind(self) -> AlertRule:
        for field, metric in (("metric", self.metric), ("baseline.metric", self._base_metric)):
            if metric in RESERVED_KEYS:
                raise ValueError(
                    f"rule {self.name!r}: {field} {metric!r} is a reserved history key, "
                    "not a metric"
                )
        required, foreign = _FIELDS_BY_KIND[self.kind]
        for name in sorted(required):
            if getattr(self, name) is None:
                raise ValueError(
                    f"rule {self.name!r} of kind {self.kind!r} needs {name!r}: {_FIELD_HELP[name]}"
                )
        for name in sorted(foreign):
            if getattr(self, name) is not None:
                owners = [k for k, (req, _) in _FIELDS_BY_KIND.items() if name in req]
                raise ValueError(
                    f"rule {self.name!r}: field {name!r} applies to kind "
                    f"{' or '.join(repr(k) for k in owners)}, not {self.kind!r}"
                )
        if self.kind == "n_of_m" and self.n is not None and self.m is not None:
            if self.n > self.m:
                raise ValueError(
                    f"rule {self.name!r}: 'n' ({self.n}) is larger than 'm' ({self.m})"
                )
        if self.clear is not None:
            self._check_clear(self.clear)
        return self

    def _check_clear(self, clear: float) -> None:
        if self.kind == "relative_drop":
            assert self.drop is not None
            if not 0 <= clear <= self.drop:
                raise ValueError(
                    f"rule {self.name!r}: 'clear' ({clear}) is a relative change and must lie "
                    f"between 0 and 'drop' ({self.drop})"
                )
            return
        assert self.value is not None
        if self.side == "below" and clear < self.value:
            raise ValueError(
                f"rule {self.name!r}: 'clear' ({clear}) must be at or above 'value' "
                f"({self.value}) when the bad side is below"
            )
        if self.side == "above" and clear > self.value:
            raise ValueError(
                f"rule {self.name!r}: 'clear' ({clear}) must be at or below 'value' "
                f"({self.value}) when the bad side is above"
            )

    @property
    def _base_metric(self) -> str | None:
        return self.baseline.metric if self.baseline is not None else None

    @property
    def side(self) -> Direction:
        """The bad side of the metric ('below' unless `direction` says otherwise)."""
        return self.direction or "below"

    @property
    def clear_level(self) -> float:
        """The resolve level: `clear`, else the firing level (`value` or `drop`)."""
        if self.clear is not None:
            return self.clear
        level = self.drop if self.kind == "relative_drop" else self.value
        assert level is not None
        return level


class AlertsConfig(_Model):
    """The `alerts` section of the loop configuration: rules and where events go."""

    rules: list[AlertRule] = Field(default_factory=list, description="Alert rules.")
    notifiers: list[NotifierConfig] = Field(
        default_factory=list, description="Channels that receive the events (webhook, smtp)."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> AlertsConfig:
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.name in seen:
                raise ValueError(f"rules[{i}].name: rule name {rule.name!r} is used twice")
            seen.add(rule.name)
        named: set[str] = set()
        for i, notifier in enumerate(self.notifiers):
            if notifier.name is not None:
                if notifier.name in named:
                    raise ValueError(
                        f"notifiers[{i}].name: notifier name {notifier.name!r} is used twice"
                    )
                named.add(notifier.name)
        return self


@dataclass(frozen=True)
class AlertEvent:
    """A transition of one rule on one batch: it started firing, or it resolved.

    `threshold` is the level that was crossed, in metric units: the firing level for a
    firing event, the clear level for a resolved one.
    """

    rule: str
    metric: str
    kind: Literal["firing", "resolved"]
    severity: Severity
    batch: str
    value: float
    threshold: float
    message: str
    baseline: float | None = None
    time: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Point:
    batch: str
    time: float | None
    record: Mapping[str, Any]


def _fresh_rule_state() -> dict[str, Any]:
    return {
        "firing": False,
        "since": None,
        "last_batch": None,
        "last_fired_batch": None,
        "last_fired_time": None,
        "batches_since_fired": None,
        "baseline": None,
        "baseline_values": [],
        "window": [],
    }


_NONE = type(None)
_STATE_TYPES: dict[str, tuple[type, ...]] = {
    "firing": (bool,),
    "since": (str, _NONE),
    "last_batch": (str, _NONE),
    "last_fired_batch": (str, _NONE),
    "last_fired_time": (str, _NONE),
    "batches_since_fired": (int, _NONE),
    "baseline": (int, float, _NONE),
    "baseline_values": (list,),
    "window": (list,),
}


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


def _load_state(state: Mapping[str, Any] | None) -> dict[str, Any]:
    if not state:
        return {"version": STATE_VERSION, "rules": {}}
    if not isinstance(state, Mapping):
        raise AlertError(f"alert state is a {type(state).__name__}, expected a mapping")
    if state.get("version") != STATE_VERSION:
        raise AlertError(
            f"alert state version is {state.get('version')!r}, expected {STATE_VERSION}"
        )
    rules = state.get("rules")
    if not isinstance(rules, Mapping):
        raise AlertError(f"alert state 'rules' is {rules!r}, expected a mapping")
    loaded: dict[str, Any] = {}
    for name, entry in rules.items():
        if not isinstance(entry, Mapping):
            raise AlertError(f"alert state rules.{name} is {entry!r}, expected a mapping")
        fresh = _fresh_rule_state()
        for key, value in entry.items():
            if key not in fresh:
                continue
            expected = _STATE_TYPES[key]
            if not isinstance(value, expected) or (
                isinstance(value, bool) and bool not in expected
            ):
                names = " or ".join("null" if t is type(None) else t.__name__ for t in expected)
                raise AlertError(f"alert state rules.{name}.{key} is {value!r}, expected {names}")
            fresh[key] = copy.deepcopy(value)
        loaded[name] = fresh
    return {"version": STATE_VERSION, "rules": loaded}


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
