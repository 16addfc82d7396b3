"""What the registry holds of one model, read in one go: by `MlflowClient`, or straight from the
tables of a local SQLite store.

`mlops-loop status` only reads, and importing MLflow takes longer than the rest of it. For a
tracking URI naming a local SQLite file, `sqlite_view` reads MLflow's registry tables with the
standard library (read-only, one transaction) and returns exactly what the client would; for
anything else (a server, Postgres, a schema it does not know, MLflow workspaces) it returns
None and the caller asks the client.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

#: Tags of the registered model that hold the champion's history (registry.HISTORY_PREFIX).
HISTORY_PREFIX = "mlops_loop.history."
#: MLflow's stage of a version deleted but kept for redaction: the client never shows it.
_DELETED = "Deleted_Internal"
#: The workspace every object of a single-tenant store lives in (MLflow 3.x).
_DEFAULT_WORKSPACE = "default"


@dataclass(frozen=True)
class RegistryView:
    """One registered model as the registry holds it now: aliases, history, and the tags of the
    versions the aliases point at. `exists` is False when no such model is registered."""

    exists: bool
    aliases: dict[str, int] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    version_tags: dict[int, dict[str, Any]] = field(default_factory=dict)  # of aliased versions


def history_of(tags: dict[str, Any]) -> list[dict[str, Any]]:
    """The history entries among a registered model's tags, oldest first."""
    return [json.loads(tags[k]) for k in sorted(tags) if k.startswith(HISTORY_PREFIX)]


def sqlite_file(uri: str) -> Path | None:
    """The existing local file a `sqlite:///` URI names, or None for any other URI (a server,
    a database with query options or escaped characters, which SQLAlchemy reads its own way,
    an in-memory one, a file not there)."""
    if not uri.startswith("sqlite:///") or "?" in uri or "%" in uri:
        return None
    path = uri.removeprefix("sqlite:///")
    if path in ("", ":memory:"):
        return None
    file = Path(path)
    return file if file.is_file() else None


def _workspaces_on() -> bool:
    """Whether MLflow may filter by another workspace than the default one."""
    enabled = os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").strip().lower()
    return enabled in ("1", "true", "yes") or bool(os.environ.get("MLFLOW_WORKSPACE"))


def sqlite_view(uri: str, model: str) -> RegistryView | None:
    """`model` read from the SQLite store `uri` names, or None when this reader cannot stand in
    for the client (not a local SQLite file, workspaces in use, a schema it does not know, the
    store busy, or an alias naming a version the client would not find)."""
    file = sqlite_file(uri)
    if file is None or _workspaces_on():
        return None
    try:
        # mode=ro: a reader never creates, migrates or locks the store for writing.
        db = sqlite3.connect(f"file:{quote(str(file.resolve()))}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        with db:
            db.execute("BEGIN")  # one snapshot of all the tables below
            return _read(db, model)
    except sqlite3.Error:
        return None
    finally:
        db.close()


def _read(db: sqlite3.Connection, model: str) -> RegistryView | None:
    where = (model, _DEFAULT_WORKSPACE)
    found = db.execute(
        "SELECT 1 FROM registered_models WHERE name = ? AND workspace = ?", where
    ).fetchone()
    if found is None:
        return RegistryView(exists=False)
    aliases = dict(
        db.execute(
            "SELECT alias, version FROM registered_model_aliases WHERE name = ? AND workspace = ?",
            where,
        ).fetchall()
    )
    tags = dict(
        db.execute(
            'SELECT "key", value FROM registered_model_tags WHERE name = ? AND workspace = ?',
            where,
        ).fetchall()
    )
    version_tags: dict[int, dict[str, Any]] = {}
    for version in sorted(set(aliases.values())):
        live = db.execute(
            "SELECT 1 FROM model_versions WHERE name = ? AND workspace = ? AND version = ? "
            "AND current_stage != ?",  # as MLflow filters: a NULL stage is not found either
            (*where, version, _DELETED),
        ).fetchone()
        if live is None:
            return None  # the client raises for it: let it say so
        version_tags[int(version)] = dict(
            db.execute(
                'SELECT "key", value FROM model_version_tags '
                "WHERE name = ? AND workspace = ? AND version = ?",
                (*where, version),
            ).fetchall()
        )
    return RegistryView(
        exists=True,
        aliases={str(k): int(v) for k, v in aliases.items()},
        history=history_of(tags),
        version_tags=version_tags,
    )
