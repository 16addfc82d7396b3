"""The state `evaluate_alerts` hands back between runs: a small JSON-able dict per rule."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from mlops_loop.core.alerts.rules import AlertError

#: Version of the persisted state layout; a state of another version is refused.
STATE_VERSION = 1


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
