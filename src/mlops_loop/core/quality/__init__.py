"""The data-quality gate: learn a suite from the reference, check batches with Great Expectations.

A suite is a plain JSON-serialisable spec, stored next to the reference snapshot, so a batch can
be judged without the reference. Each entry names the incident kind it guards, its severity and
the GX expectation class that checks it, with that class's keyword arguments. One entry type is
not GX: `DtypeFamily` is checked in pandas, because GX's type expectations compare dtype names and
pandas 3 stores strings as `str`, which they do not expect.

Modules: `spec` (kinds and entries), `suite` (`build_suite`), `result` (`Incident`,
`QualityResult`), `incidents` (failed checks in words), `validate` (`validate_batch`,
`assemble_result`), `chunked` (`validate_parquet`, the same verdict a slice at a time).

Great Expectations is imported inside functions only: the import takes seconds, and most users
of this package (CLI, loading Dagster definitions) never validate.
"""

from mlops_loop.core.quality.chunked import validate_parquet
from mlops_loop.core.quality.result import Incident, QualityResult
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
    "build_suite",
    "validate_batch",
    "validate_parquet",
]
