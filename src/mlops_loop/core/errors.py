"""The exceptions mlops-loop raises. Expected outcomes (no drift, retrain skipped, challenger
rejected) are values, never exceptions."""


class MlopsLoopError(Exception):
    """Root of every error raised by mlops-loop."""


class InvalidConfigError(MlopsLoopError, ValueError):
    """The loop configuration is malformed; the message names the field."""


class DataError(MlopsLoopError, ValueError):
    """A data file or frame cannot be used (unreadable, missing column, wrong type)."""


class TruncatedFileError(DataError):
    """A data file ends before its end: a CSV cut mid-row, a parquet file without its footer."""


class RegistryError(MlopsLoopError, LookupError):
    """A model version or alias is unknown, or a registry change was refused."""


class ConcurrentPromotionError(RegistryError):
    """The champion moved while a promotion was being decided (compare-and-set failed)."""


class TrackingError(MlopsLoopError, ConnectionError):
    """The MLflow tracking server cannot be reached, refused a request or failed; the message
    names its URI with any credential redacted."""


class LoopStateError(MlopsLoopError, FileNotFoundError):
    """The loop has no state where it was asked to read it (it never ran there)."""


class RelearnError(MlopsLoopError, ValueError):
    """A relearn of the quality suite was refused: no reason, or a batch the loop never saw."""
