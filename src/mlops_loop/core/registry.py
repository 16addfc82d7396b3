"""The model registry: MLflow model versions moved between aliases, with an audit trail.

MLflow aliases keep no history, so every change of `champion` is also appended to the
registered model as a tag `mlops_loop.history.NNNNNN` (JSON) and stamped on the version it
moved to. Stages are never used.
"""

from __future__ import annotations

import getpass
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_loop.core.errors import ConcurrentPromotionError, RegistryError
from mlops_loop.core.registry_sqlite import HISTORY_PREFIX, RegistryView, history_of, sqlite_view

CHAMPION = "champion"
CHALLENGER = "challenger"
#: Tags of a version's metrics on its hold-out: a version without them was never validated.
METRIC_TAG = "mlops_loop.metric."
MOVED_TAG = "mlops_loop.alias_moved_at"
#: History entries that record something other than a move of the alias: a change that never
#: happened, and a relearnt quality suite (the loop's other audited change).
NOT_MOVES = frozenset({"aborted", "relearn"})


@dataclass(frozen=True)
class AliasChange:
    """One move of the champion alias, or an audited change that moves none (`NOT_MOVES`)."""

    action: str  # bootstrap | promotion | rollback | external | aborted | relearn
    from_version: int | None
    to_version: int
    reason: str
    triggered_by: str
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    user: str = field(default_factory=lambda: _user())
    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # of an entry that moves no alias

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


class MlflowRegistry:
    """Aliases and history of one registered model, through an explicit `MlflowClient`."""

    def __init__(self, tracking_uri: str, model_name: str, lock_path: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.lock_path = lock_path
        self._client: Any = None

    @classmethod
    def from_config(cls, config: Any) -> MlflowRegistry:
        lock = Path(config.state_dir) / f"registry-{config.mlflow.registered_model}.lock"
        return cls(config.tracking_uri, config.mlflow.registered_model, lock)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Serialize changes of the champion across threads and processes on this machine.

        Without it, two promotions can both read the same champion before either moves it
        (check-then-act), and both win. Across machines, the Dagster concurrency pool on
        `champion_model` serializes the promotion steps.
        """
        if self.lock_path is None:
            yield
            return
        import fcntl

        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlops_loop.core.tracking_errors import mlflow_client

            # Its failures are TrackingErrors naming the URI redacted; "not found" stays MLflow's.
            self._client = mlflow_client(self.tracking_uri)
        return self._client

    # -- reading ---------------------------------------------------------------------------------
    def _registered(self) -> Any | None:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(self.model_name)
        except MlflowException as e:
            if (
                "RESOURCE_DOES_NOT_EXIST" in str(getattr(e, "error_code", ""))
                or "not found" in str(e).lower()
            ):
                return None
            raise

    def versions(self) -> list[int]:
        found = self.client.search_model_versions(f"name = '{self.model_name}'")
        return sorted(int(v.version) for v in found)

    def version(self, version: int) -> Any:
        """The MLflow `ModelVersion`.

        Raises:
            RegistryError: the version does not exist.
        """
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(self.model_name, str(int(version)))
        except (MlflowException, ValueError, TypeError) as e:
            known = self.versions() if self._registered() is not None else []
            raise RegistryError(
                f"model {self.model_name!r} has no version {version!r}; known "
                f"versions: {known or 'none'}"
            ) from e

    def alias(self, alias: str) -> int | None:
        """The version an alias points at, or None."""
        registered = self._registered()
        if registered is None:
            return None
        target = (registered.aliases or {}).get(alias)
        return int(target) if target is not None else None

    def aliases_and_history(self) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """Every alias with its version, and the recorded history: one registry round-trip."""
        registered = self._registered()
        if registered is None:
            return {}, []
        aliases = {k: int(v) for k, v in (registered.aliases or {}).items()}
        return aliases, history_of(registered.tags or {})

    def view(self, direct: bool = True) -> RegistryView:
        """Aliases, history and the tags of every aliased version, read at once. With `direct`,
        a local SQLite store is read from its tables without MLflow (the same answer, without
        MLflow's import); any other store, or with `direct=False`, through the client.

        Raises:
            RegistryError: an alias names a version the registry does not hold.
        """
        if direct:
            found = sqlite_view(self.tracking_uri, self.model_name)
            if found is not None:
                return found
        registered = self._registered()
        if registered is None:
            return RegistryView(exists=False)
        aliases = {k: int(v) for k, v in (registered.aliases or {}).items()}
        return RegistryView(
            exists=True,
            aliases=aliases,
            history=history_of(registered.tags or {}),
            version_tags={
                v: dict(self.version(v).tags or {}) for v in sorted(set(aliases.values()))
            },
        )

    def champion(self) -> int | None:
        return self.alias(CHAMPION)

    def challenger(self) -> int | None:
        return self.alias(CHALLENGER)

    def model_uri(self, alias_or_version: str | int = CHAMPION) -> str:
        if isinstance(alias_or_version, int):
            return f"models:/{self.model_name}/{alias_or_version}"
        if re.fullmatch(r"models:/m-[0-9a-f]+", alias_or_version):
            return alias_or_version  # a logged, unregistered model of this store (a validation fit)
        return f"models:/{self.model_name}@{alias_or_version}"

    def load(self, alias_or_version: str | int = CHAMPION) -> Any:
        """Load a version (or the alias' target at this moment, or a logged model of this
        tracking store by its `models:/m-<id>` URI) as a scikit-learn model."""
        import mlflow.sklearn

        from mlops_loop.core.tracking import mlflow_uri

        with mlflow_uri(self.tracking_uri):
            return mlflow.sklearn.load_model(self.model_uri(alias_or_version))

    def history_table(self, last: int = 20) -> str:
        """The latest changes of the champion as a markdown table, newest first."""
        return self._table(self.history(), last)

    @staticmethod
    def _table(history: list[dict[str, Any]], last: int) -> str:
        """Newest first, narrow enough to read: the change in one column, who and why last."""
        rows = ["| when (UTC) | change | by, why |", "|---|---|---|"]
        for e in reversed(history[-last:]):
            start = e.get("from_version")
            change = f"{e['action']} " + (
                f"v{e['to_version']}" if start is None else f"v{start} → v{e['to_version']}"
            )
            reason = " ".join(str(e.get("reason", "")).replace("|", "/").split())
            if len(reason) > 160:
                reason = reason[:160].rsplit(" ", 1)[0] + " ..."
            when = str(e.get("at", "")).replace("T", " ").removesuffix("+00:00")
            who = f"{e['triggered_by']} ({e.get('user') or 'unknown'})"
            rows.append(f"| {when} | {change} | {who}: {reason} |")
        return "\n".join(rows)

    def history(self) -> list[dict[str, Any]]:
        """Every recorded change of the champion, oldest first."""
        registered = self._registered()
        if registered is None:
            return []
        return history_of(registered.tags or {})

    # -- writing ---------------------------------------------------------------------------------
    def set_challenger(self, version: int) -> None:
        self.version(version)
        self.client.set_registered_model_alias(self.model_name, CHALLENGER, str(version))
        # The model page names the latest challenger: a rejected one moves no champion, so
        # nothing else would rewrite the description.
        self.describe()

    def tag_version(self, version: int, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.model_name, str(version), key, str(value))

    def _append_history(self, change: AliasChange) -> None:
        n = len(self.history()) + 1
        self.client.set_registered_model_tag(
            self.model_name, f"{HISTORY_PREFIX}{n:06d}", json.dumps(change.to_dict(), default=str)
        )

    def _move_champion(self, change: AliasChange) -> AliasChange:
        # The alias moves last: a crash before it leaves the old champion serving, and the next
        # `reconcile` records the mismatch instead of trusting the history blindly.
        self.tag_version(
            change.to_version,
            {
                "mlops_loop.champion_since": change.at,
                "mlops_loop.champion_action": change.action,
                "mlops_loop.champion_reason": change.reason[:4000],
                "mlops_loop.champion_triggered_by": change.triggered_by,
            },
        )
        self._append_history(change)
        self.client.set_registered_model_alias(self.model_name, CHAMPION, str(change.to_version))
        # Proof that this change took effect: reconcile tells a change that never happened
        # from one undone later by hand.
        self.tag_version(change.to_version, {MOVED_TAG: change.at})
        self.describe()
        return change

    def describe(self) -> None:
        """Write the champion and its history as the registered model's markdown description,
        so the MLflow model page says who serves and why after every change."""
        aliases, history = self.aliases_and_history()
        champion = aliases.get(CHAMPION)
        last = next((e for e in reversed(history) if e.get("to_version") == champion), None)
        lines = [
            f"**Champion: v{champion}**" if champion is not None else "**No champion yet**",
        ]
        if last is not None:
            reason = str(last.get("reason", "")).replace("\n", " ")[:300]
            lines[0] += (
                f" since {last['at']} ({last['action']} by {last['triggered_by']}): {reason}"
            )
        if CHALLENGER in aliases:
            lines.append(f"\nLatest challenger: v{aliases[CHALLENGER]}")
        lines += ["", "Champion history, newest first:", "", self._table(history, 20)]
        self.client.update_registered_model(self.model_name, description="\n".join(lines))

    def promote(
        self,
        version: int,
        *,
        expected_champion: int | None,
        reason: str,
        triggered_by: str,
        metrics: dict[str, Any] | None = None,
        action: str = "promotion",
        user: str | None = None,
    ) -> AliasChange:
        """Make `version` the champion if the champion is still `expected_champion`.

        Raises:
            RegistryError: the version does not exist.
            ConcurrentPromotionError: the champion moved since the comparison was made.
        """
        self.version(version)
        with self._exclusive():
            # A change interrupted earlier (recorded, alias never moved) is recorded as aborted
            # first, so this one follows the champion that really served.
            self._reconcile(triggered_by)
            current = self.champion()
            if current != expected_champion:
                raise ConcurrentPromotionError(
                    f"champion of {self.model_name!r} is version {current}, but this promotion was "
                    f"decided against version {expected_champion}; decide again"
                )
            change = AliasChange(
                action,
                current,
                int(version),
                reason,
                triggered_by,
                user=user or _user(),
                metrics=metrics or {},
            )
            return self._move_champion(change)

    def record(self, change: AliasChange) -> AliasChange:
        """Append an entry that moves no alias (a relearnt quality suite) to the history, once
        the history is in line with the alias (so an interrupted change is recorded first).

        Raises:
            RegistryError: `change.action` would move the alias.
        """
        if change.action not in NOT_MOVES:
            raise RegistryError(
                f"history entry {change.action!r} moves the alias; expected one of "
                f"{sorted(NOT_MOVES)}"
            )
        with self._exclusive():
            self._reconcile(change.triggered_by)
            self._append_history(change)
        return change

    def previous_champion(self) -> int | None:
        """The champion before the current one, from the recorded history."""
        current = self.champion()
        for event in reversed(self.history()):
            if event["action"] in NOT_MOVES:
                continue  # a change that never happened, or one of the quality suite
            if event["to_version"] == current and event.get("from_version") is not None:
                return int(event["from_version"])
        return None

    def rollback_target(self, to: int | str, current: int | None = None) -> int:
        """The version `to` names: "previous" (the champion before `current`, the champion
        when not given) or a version number.

        Raises:
            RegistryError: no previous champion, or `to` is neither.
        """
        if isinstance(to, str) and to.strip().lower() == "previous":
            target = self.previous_champion()
            if target is None:
                current = self.champion() if current is None else current
                raise RegistryError(
                    f"model {self.model_name!r} has no previous champion to roll "
                    f"back to (champion: {current}); name a version"
                )
            return target
        try:
            return int(to)
        except (TypeError, ValueError) as e:
            raise RegistryError(
                f"rollback target {to!r} is neither a version number nor 'previous'"
            ) from e

    def rollback(
        self,
        to: int | str,
        *,
        reason: str,
        triggered_by: str,
        force: bool = False,
        user: str | None = None,
    ) -> AliasChange:
        """Move the champion back to version `to`, or to the "previous" champion.

        A version that was never champion (a rejected challenger, say) is refused unless
        `force`: the refusal says why its promotion was rejected.

        Raises:
            RegistryError: unknown version, no previous champion, `to` is already champion, or
                `to` was never champion and `force` is not set.
        """
        with self._exclusive():
            return self._rollback(
                to, reason=reason, triggered_by=triggered_by, force=force, user=user
            )

    def was_champion(self, version: int, tags: dict[str, Any] | None = None) -> bool:
        """Whether `version` ever served as champion: the loop moved the alias to it, or the
        history records it moved there outside the loop."""
        tags = (self.version(version).tags or {}) if tags is None else tags
        if MOVED_TAG in tags:
            return True
        return any(e["action"] == "external" and e["to_version"] == version for e in self.history())

    @staticmethod
    def _never_champion_why(tags: dict[str, Any]) -> str:
        decision = tags.get("mlops_loop.decision")
        if decision == "rejected":
            reason = tags.get("mlops_loop.rejected_reason") or "no reason recorded"
            return f"its promotion was rejected: {reason}"
        if decision:
            return f"its promotion decision is {decision!r}, yet the alias never moved to it"
        return "no promotion was decided for it"

    def _rollback(
        self,
        to: int | str,
        *,
        reason: str,
        triggered_by: str,
        force: bool = False,
        user: str | None = None,
    ) -> AliasChange:
        """The body of `rollback`, under the lock."""
        if not reason or not reason.strip():
            raise RegistryError("a rollback needs a reason (who asked and why)")
        current = self.champion()
        target = self.rollback_target(to, current)
        tags = self.version(target).tags or {}
        if not any(k.startswith(METRIC_TAG) for k in tags):
            raise RegistryError(
                f"version {target} of {self.model_name!r} was never validated by the loop (it "
                f"has no {METRIC_TAG}* tags): it cannot become champion by rollback"
            )
        if target == current:
            raise RegistryError(f"version {target} is already the champion of {self.model_name!r}")
        reason = reason.strip()
        if not self.was_champion(target, tags):
            why = self._never_champion_why(tags)
            if not force:
                raise RegistryError(
                    f"version {target} of {self.model_name!r} was never champion ({why}); a "
                    "rollback returns to a version that served. To make it champion anyway, "
                    "roll back with force (--force, or force: true in rollback_job's config)"
                )
            reason = f"{reason} (forced: v{target} was never champion; {why})"
        # The target's metrics when it was validated: what the loop knew of it at this moment.
        metrics = {
            k.removeprefix(METRIC_TAG): v for k, v in tags.items() if k.startswith(METRIC_TAG)
        }
        change = AliasChange(
            "rollback", current, target, reason, triggered_by, user=user or _user(), metrics=metrics
        )
        return self._move_champion(change)

    def reconcile(self, triggered_by: str) -> AliasChange | None:
        """Bring the history in line with the alias, so its last entry names the champion.

        Two things leave them apart: a change recorded whose alias move never happened (the
        process died in between: recorded as "aborted"), and an alias moved outside the loop,
        e.g. in the MLflow UI (recorded as "external"). Returns the recorded change, or None if
        the history already agrees with the alias.
        """
        with self._exclusive():
            return self._reconcile(triggered_by)

    def _reconcile(self, triggered_by: str) -> AliasChange | None:
        """The body of `reconcile`, under the lock."""
        current = self.champion()
        history = self.history()
        if current is None or (history and history[-1]["to_version"] == current):
            return None
        last = history[-1] if history else None
        took_effect = last is not None and (
            (self.version(last["to_version"]).tags or {}).get(MOVED_TAG) == last["at"]
        )
        if last is not None and not took_effect and last.get("from_version") == current:
            change = AliasChange(
                "aborted",
                last["to_version"],
                current,
                f"the {last['action']} to v{last['to_version']} recorded at {last['at']} never "
                f"moved the alias (interrupted); v{current} stayed champion",
                triggered_by,
            )
        else:
            change = AliasChange(
                "external",
                last["to_version"] if last else None,
                current,
                "champion alias changed outside the loop (e.g. in the MLflow UI)",
                triggered_by,
            )
        self._append_history(change)
        self.describe()
        return change
