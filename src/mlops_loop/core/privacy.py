"""Private columns: what leaves the loop for MLflow carries none of their raw values."""

from __future__ import annotations

import hashlib
import os

import pandas as pd

from mlops_loop.core.config import ColumnsConfig
from mlops_loop.core.errors import InvalidConfigError


def privacy_salt(columns: ColumnsConfig) -> bytes:
    """The salt private columns are hashed with, from `columns.privacy_salt_env`.

    Raises:
        InvalidConfigError: the variable is unset or empty.
    """
    salt = os.environ.get(columns.privacy_salt_env)
    if not salt:
        raise InvalidConfigError(
            f"columns.private {columns.private} are hashed with a salt read from the "
            f"environment variable {columns.privacy_salt_env!r}, which is not set: set it "
            "(columns.privacy_salt_env names it) or choose columns.privacy: drop"
        )
    return salt.encode()


def hash_value(value: object, salt: bytes) -> str:
    """The salted SHA-256 digest (first 16 hex digits) of a value's text."""
    return hashlib.sha256(salt + str(value).encode()).hexdigest()[:16]


def mask_private(frame: pd.DataFrame, columns: ColumnsConfig | None) -> pd.DataFrame:
    """`frame` with its private columns hashed (nulls stay null) or dropped.

    Raises:
        InvalidConfigError: hashing is chosen and the salt's environment variable is unset.
    """
    present = [c for c in (columns.private if columns else []) if c in frame.columns]
    if not present:
        return frame
    assert columns is not None
    if columns.privacy == "drop":
        return frame.drop(columns=present)
    salt = privacy_salt(columns)
    out = frame.copy()
    for c in present:
        out[c] = frame[c].map(lambda v: hash_value(v, salt), na_action="ignore").astype(object)
    return out
