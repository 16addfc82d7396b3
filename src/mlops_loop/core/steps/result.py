"""The base of the steps' typed results: JSON out (`to_dict`) and back in (`from_dict`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Self


@dataclass(frozen=True)
class StepResult:
    """A frozen record a step returns and, where it keeps one, writes to the state folder."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON the state folder and MLflow keep (nested records become dicts)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Read a record back. Keys it does not know are ignored; keys an older state folder
        lacks take the field's default (or None), so earlier layouts stay readable."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                values[f.name] = data[f.name]
            elif f.default is not dataclasses.MISSING:
                values[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                values[f.name] = f.default_factory()
            else:
                values[f.name] = None
        return cls(**values)
