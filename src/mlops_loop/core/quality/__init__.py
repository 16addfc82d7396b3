"""The data-quality gate: learn a suite from the reference, check batches with Great Expectations.

A suite is a plain JSON-serialisable spec, stored next to the reference snapshot, so a batch can
be judged without the reference. Each entry names the incident kind it guards, its severity and
the GX expectation class that checks it, with that class's keyword arguments. One entry type is
not GX: `DtypeFamily` is checked in pandas, because GX's type expectations compare dtype names and
pandas 3 stores strings as `str`, which they do not expect.

Modules: `spec` (kinds and entries), `suite` (`build_suite`), `ranges` (numeric ranges from
finite values, datetime ranges in time), `bounds` (`resolve_entries`: the learnt bounds made
concrete for a batch's row count), `selfcheck` (`build_checked_suite`: a suite that accepts its
own reference), `result` (`Incident`, `QualityResult`), `docs` (the offline Data Docs page of a
GX result), `incidents` (failed checks in words), `renames` (a missing column found under a new
name), `validate` (`validate_batch`, `assemble_result`), `vectorized` (a wide suite judged in
pandas, all columns at once, as GX would; GX reruns what failed), `chunked` (`validate_parquet`,
the same verdict a slice at a time). docs/quality.md derives the bounds.

Great Expectations is imported inside functions only: the import takes seconds, and most users
of this package (CLI, loading Dagster definitions) never validate.
"""

from mlops_loop.core.quality.bounds import resolve_entries
from mlops_loop.core.quality.chunked import validate_parquet
from mlops_loop.core.quality.result import Incident, QualityResult
from mlops_loop.core.quality.selfcheck import build_checked_suite
from mlops_loop.core.quality.spec import KINDS, SCHEMA_VERSION, TYPE_CHECK
from mlops_loop.core.quality.suite import ID_LIKE_SHARE, RANGE_MOSTLY, build_suite
from mlops_loop.core.quality.validate import assemble_result, validate_batch

__all__ = [
    "ID_LIKE_SHARE",
    "KINDS",
    "RANGE_MOSTLY",
    "SCHEMA_VERSION",
    "TYPE_CHECK",
    "Incident",
    "QualityResult",
    "assemble_result",
    "build_checked_suite",
    "build_suite",
    "resolve_entries",
    "validate_batch",
    "validate_parquet",
]
