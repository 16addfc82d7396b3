"""The loop's own state on disk: the reference snapshot and every batch with its verdicts.

Layout under `state_dir`::

    snapshot/reference.parquet  snapshot/snapshot.json  snapshot/suite.json
    snapshot/drift_profile/     (the reference sorted and counted once for drift)
    batches/<key>/batch.parquet  ingest.json  quality.json  drift.json  drift.html
                  scored.parquet  performance.json  decision.json  retrain.json
                  challenger.json  promotion.json

Every JSON file is written to a temporary name and renamed, so a crash never leaves one
half-written.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlops_loop.core.errors import DataError

if TYPE_CHECKING:
    from mlops_loop.core.config import LoopConfig
    from mlops_loop.core.drift.profile import ReferenceProfile


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if absent): one process at a time on this
    machine for state that is read, advanced and written."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def batch_key(path: str | Path) -> str:
    """The partition key of a landed file: its name without the suffix."""
    key = Path(path).stem
    if not _KEY.match(key):
        raise DataError(
            f"batch file name {Path(path).name!r} cannot be a key: use letters, digits, "
            "'.', '_' and '-' (at most 128)"
        )
    return key


def write_atomic(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LoopStore:
    """Reads and writes the loop's files under one folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- snapshot -------------------------------------------------------------------------------
    @property
    def snapshot_dir(self) -> Path:
        return self.root / "snapshot"

    def batch_dir(self, key: str) -> Path:
        return self.root / "batches" / key

    def write_json(self, path: Path, payload: Any) -> Path:
        write_atomic(path, json.dumps(payload, indent=2, default=str, sort_keys=False))
        return path

    def read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None

    def write_frame(self, path: Path, frame: pd.DataFrame) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return path

    def read_frame(self, path: Path, what: str) -> pd.DataFrame:
        if not path.exists():
            raise DataError(f"{what} is not there yet ({path}); materialize it first")
        return pd.read_parquet(path)

    def reference(self) -> pd.DataFrame:
        return self.read_frame(self.snapshot_dir / "reference.parquet", "the reference snapshot")

    def snapshot_info(self) -> dict[str, Any] | None:
        return self.read_json(self.snapshot_dir / "snapshot.json")

    @property
    def profile_dir(self) -> Path:
        return self.snapshot_dir / "drift_profile"

    def write_reference_profile(
        self, config: LoopConfig, digest: str | None = None
    ) -> ReferenceProfile:
        """Sort and count the stored reference once for drift, and save that next to it."""
        from mlops_loop.core.drift.profile import ReferenceProfile

        profile = ReferenceProfile.from_frame(self.reference(), config, digest=digest)
        profile.save(self.profile_dir)
        return profile

    def reference_profile(self, config: LoopConfig) -> ReferenceProfile:
        """The reference's drift profile, rebuilt when it is missing (a snapshot taken by an
        older version), unreadable, of another snapshot, or built for other columns."""
        from mlops_loop.core.drift.profile import ReferenceProfile

        digest = (self.snapshot_info() or {}).get("digest")
        try:
            profile = ReferenceProfile.load(self.profile_dir, mmap=True)
        except DataError:  # only a cache of the snapshot: build it again
            return self.write_reference_profile(config, digest)
        if digest is None or profile.digest != digest or profile.missing(config):
            return self.write_reference_profile(config, digest)
        return profile

    # -- batches --------------------------------------------------------------------------------
    def batch(self, key: str) -> pd.DataFrame:
        return self.read_frame(self.batch_dir(key) / "batch.parquet", f"batch {key!r}")

    def batch_json(self, key: str, name: str) -> Any:
        return self.read_json(self.batch_dir(key) / f"{name}.json")

    def write_batch_json(self, key: str, name: str, payload: Any) -> Path:
        return self.write_json(self.batch_dir(key) / f"{name}.json", payload)

    def batch_keys(self) -> list[str]:
        """Keys of every ingested batch, in name order (the order they arrive in)."""
        root = self.root / "batches"
        if not root.exists():
            return []
        return sorted(p.name for p in root.iterdir() if (p / "batch.parquet").exists())

    def redelivered(self, key: str, path: Path) -> bool:
        """Whether the landed file of an ingested batch changed since it was ingested.

        A new size or modification time alone is not a change: the same bytes copied again
        (a retried upload, a re-run export) are the batch already monitored.
        """
        ingest = self.batch_json(key, "ingest")
        if ingest is None or ingest.get("stamp") == file_stamp(path):
            return False
        recorded = ingest.get("sha256")
        return recorded is None or recorded != file_sha256(path)

    def unmonitored(self, files: dict[str, Path]) -> list[str]:
        """The landed batches (`landed_batches`) not monitored yet, in name order: never
        ingested, or delivered again with other bytes since. Any orchestrator asks this, so a
        batch monitored by one is not monitored again by another."""
        return [
            k
            for k in sorted(files)
            if self.batch_json(k, "ingest") is None or self.redelivered(k, files[k])
        ]

    def accepted_keys(self) -> list[str]:
        """Batches whose latest quality verdict passed. Quarantined ones are never listed."""
        return [
            k for k in self.batch_keys() if (self.batch_json(k, "quality") or {}).get("success")
        ]

    def quarantined_keys(self) -> list[str]:
        return [
            k
            for k in self.batch_keys()
            if (q := self.batch_json(k, "quality")) is not None and not q.get("success")
        ]


def file_stamp(path: Path) -> str:
    """Size and modification time of a landed file: a re-delivery changes it."""
    st = path.stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a landed file's bytes."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def landed_batches(landing: Path, patterns: list[str]) -> tuple[dict[str, Path], list[str]]:
    """The batch files in a landing folder, keyed by partition key, and the problems found.

    Files whose names cannot be keys, and two files with the same key, are reported rather than
    raised, so one bad arrival never stops the others.
    """
    found: dict[str, Path] = {}
    problems: list[str] = []
    if not landing.is_dir():
        return found, [f"landing folder {landing} does not exist"]
    paths = sorted({p for pattern in patterns for p in landing.glob(pattern) if p.is_file()})
    for path in paths:
        if path.name.startswith("."):
            continue  # a file still being written under a temporary name
        try:
            key = batch_key(path)
        except DataError as e:
            problems.append(str(e))
            continue
        if key in found:
            problems.append(
                f"{path.name} and {found[key].name} have the same key {key!r}; "
                f"using {found[key].name}"
            )
            continue
        found[key] = path
    return found, problems
