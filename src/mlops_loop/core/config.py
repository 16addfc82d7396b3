"""Typed loop configuration, validated at the edge and loadable from YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from mlops_loop.core.alerts import AlertsConfig
from mlops_loop.core.errors import InvalidConfigError
from mlops_loop.core.estimators import estimator_class, validate_estimator_params
from mlops_loop.core.policy_config import (
    LOWER_IS_BETTER,
    METRICS,
    Metric,
    PromotionPolicy,
    RetrainPolicy,
    TrainingPolicy,
)
from mlops_loop.core.quality_policy import CustomExpectation, QualityPolicy  # noqa: F401
from mlops_loop.core.serving_config import ServingConfig
from mlops_loop.core.task_config import with_task
from mlops_loop.core.tasks import Task

__all__ = [
    "LOWER_IS_BETTER",
    "METRICS",
    "Metric",
    "PromotionPolicy",
    "RetrainPolicy",
    "TrainingPolicy",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ColumnsConfig(_Model):
    """The data schema: which columns are features and which play a role."""

    numerical: list[str] = Field(default_factory=list, description="Numerical feature columns.")
    categorical: list[str] = Field(default_factory=list, description="Categorical feature columns.")
    target: str = Field(
        description="The label column: two labels (binary), three or more (multiclass) or a "
        "quantity (regression); labels may be numbers, text or booleans."
    )
    task: Task | None = Field(
        default=None,
        description="binary, multiclass or regression; inferred from the reference's target "
        "when absent (two labels: binary; text, booleans or up to 10 integers: multiclass; "
        "floats with more than 10 distinct values: regression).",
    )
    classes: list[StrictBool | StrictInt | StrictFloat | str] | None = Field(
        default=None,
        description="A classifier's labels, in order; by default the reference's, sorted. For "
        "a binary task the last one is the positive class. A batch label outside them is a "
        "quality incident on the target.",
    )
    prediction: str = Field(default="prediction", description="Column the scorer writes.")
    id: str | None = Field(default=None, description="Row identifier column.")
    timestamp: str | None = Field(default=None, description="Event time column.")
    segments: list[str] = Field(default_factory=list, description="Columns to slice reports by.")
    label_time: str | None = Field(
        default=None,
        description="Column of a late-label file holding when each label became known; "
        "without it, the label file's modification time.",
    )
    private: list[str] = Field(
        default_factory=list,
        description="Columns (e.g. a customer id) whose values never reach MLflow: they are "
        "hashed or dropped in every logged dataset, and reports show no sample values of them. "
        "They may not be features, the target, the prediction or segments.",
    )
    privacy: Literal["hash", "drop"] = Field(
        default="hash",
        description="'hash': private values are replaced by a salted SHA-256 digest (joins "
        "across runs still work); 'drop': private columns are removed from logged data.",
    )
    privacy_salt_env: str = Field(
        default="MLOPS_LOOP_PRIVACY_SALT",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the salt of 'hash'; it must be set when "
        "there are private columns to hash.",
    )

    @property
    def features(self) -> list[str]:
        return [*self.numerical, *self.categorical]

    @property
    def label_classes(self) -> list[Any] | None:
        """The classes labels are encoded by: `classes`, or 0/1 for a binary task whose
        reference could not be read when the config loaded; None for a regression."""
        if self.task == "regression":
            return None
        return self.classes or ([0, 1] if self.task in (None, "binary") else None)

    @model_validator(mode="after")
    def _classes_fit_the_task(self) -> ColumnsConfig:
        if self.classes is None:
            return self
        if self.task == "regression":
            raise ValueError("columns.classes is given but columns.task is regression")
        if len(self.classes) < 2 or len(set(map(str, self.classes))) != len(self.classes):
            raise ValueError(
                f"columns.classes {self.classes} must hold at least two distinct labels"
            )
        if self.task == "binary" and len(self.classes) != 2:
            raise ValueError(
                f"columns.classes {self.classes} holds {len(self.classes)} labels but "
                "columns.task is binary: expected two (the positive class last)"
            )
        return self

    @model_validator(mode="after")
    def _roles_are_distinct(self) -> ColumnsConfig:
        if not self.features:
            raise ValueError("at least one feature is required in 'numerical' or 'categorical'")
        seen: dict[str, str] = {}
        roles = [(c, "numerical") for c in self.numerical]
        roles += [(c, "categorical") for c in self.categorical]
        roles += [
            (c, r)
            for r, c in (
                ("target", self.target),
                ("prediction", self.prediction),
                ("id", self.id),
                ("timestamp", self.timestamp),
            )
            if c
        ]
        for column, role in roles:
            if column in seen:
                raise ValueError(f"column {column!r} is both {seen[column]} and {role}")
            seen[column] = role
        exposed = {c: "a segment" for c in self.segments}
        named = {"numerical": "a numerical feature", "categorical": "a categorical feature"}
        exposed.update(
            {c: named.get(r, f"the {r}") for c, r in seen.items() if r not in ("id", "timestamp")}
        )
        for column in self.private:
            if column in exposed:
                raise ValueError(
                    f"private column {column!r} is also {exposed[column]}: reports name the "
                    "values of features, targets, predictions and segments; keep private "
                    "columns to ids, timestamps and columns no role uses"
                )
        return self


class SourcesConfig(_Model):
    """Where the reference snapshot and the monitored batches come from."""

    reference: Path = Field(description="Reference data file (parquet or CSV), labelled.")
    landing: Path = Field(description="Folder where batch files (parquet or CSV) arrive.")
    patterns: list[str] = Field(
        default_factory=lambda: ["*.parquet", "*.csv"],
        description="Glob patterns of batch files in the landing folder.",
    )
    labels: Path | None = Field(
        default=None,
        description="Folder where late label files (id and target columns, parquet or CSV) "
        "arrive apart from their batches; needs columns.id.",
    )


class ModelSpec(_Model):
    """The estimator to train: an import path and its parameters."""

    estimator: str = Field(
        default="sklearn.ensemble.HistGradientBoostingClassifier",
        description="Import path of a scikit-learn classifier (binary, multiclass) or regressor "
        "(regression), or a pipeline factory; by default HistGradientBoostingClassifier, or "
        "HistGradientBoostingRegressor for a regression.",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Estimator parameters.")
    preprocess: bool = Field(
        default=True,
        description="Wrap the estimator in a pipeline that imputes numbers and one-hot encodes "
        "categories. Turn off when the estimator is already a full pipeline.",
    )

    @model_validator(mode="after")
    def _estimator_is_a_valid_sklearn_estimator(self, info: ValidationInfo) -> ModelSpec:
        # Checked at load and before anything is called: a path to any other callable
        # (`os.system`) would run it with the params as arguments at training time. A reader
        # that never trains (`mlops-loop status`) skips it: importing scikit-learn takes
        # seconds, and nothing is called.
        if (info.context or {}).get("check_estimator") is False:
            return self
        cls = estimator_class(self.estimator)
        validate_estimator_params(cls, self.estimator, self.params)
        return self


class DriftPolicy(_Model):
    """When a feature, and the dataset, count as drifted."""

    fdr: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="False-discovery rate across features (Benjamini-Hochberg). When nothing "
        "changed it also bounds the chance that any feature is flagged in small batches, where "
        "the effect thresholds do not bind (docs/drift.md).",
    )
    numerical_effect: float = Field(
        default=0.1, gt=0, le=1, description="Smallest Kolmogorov-Smirnov distance that counts."
    )
    categorical_effect: float = Field(
        default=0.1, gt=0, le=1, description="Smallest total-variation distance that counts."
    )
    min_drifted_features: int = Field(
        default=1, ge=1, description="Drifted features that make dataset drift."
    )
    methods: dict[
        str,
        Literal["ks", "chi_square", "cramer_von_mises", "psi", "jensen_shannon", "wasserstein"],
    ] = Field(
        default_factory=dict,
        description="Per-column decision method (column name -> method), replacing the "
        "automatic choice (ks for numbers, chi_square for categories). ks, cramer_von_mises "
        "and wasserstein apply to numerical columns, chi_square to categorical ones, psi and "
        "jensen_shannon to both. Methods with a p-value join the Benjamini-Hochberg family and "
        "need the effect threshold too; psi, jensen_shannon and wasserstein decide alone, by "
        "their own threshold, and stay out of the FDR family.",
    )
    psi_threshold: float = Field(
        default=0.2,
        gt=0,
        description="Population stability index at which a column decided by psi drifts.",
    )
    jensen_shannon_threshold: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Jensen-Shannon distance (base 2) at which a column decided by "
        "jensen_shannon drifts.",
    )
    wasserstein_threshold: float = Field(
        default=0.1,
        gt=0,
        description="Wasserstein-1 distance over the reference's standard deviation at which "
        "a column decided by wasserstein drifts.",
    )
    multivariate: bool = Field(
        default=True,
        description="Also test the features jointly with a domain classifier (held-out AUC of "
        "telling reference rows from current rows); its drift makes dataset drift too.",
    )
    multivariate_alpha: float = Field(
        default=0.005,
        gt=0,
        lt=1,
        description="False-alarm level of the domain classifier's Mann-Whitney test.",
    )
    multivariate_min_auc: float = Field(
        default=0.55,
        gt=0.5,
        lt=1,
        description="Smallest held-out AUC that counts as multivariate drift, even when "
        "the test is significant.",
    )
    multivariate_max_rows: int = Field(
        default=5000,
        ge=40,
        description="Rows sampled from each side for the domain classifier (half train it, "
        "half test it), so large batches stay cheap.",
    )


class MlflowConfig(_Model):
    """Where runs, artifacts and model versions are recorded."""

    tracking_uri: str | None = Field(
        default=None,
        description="Tracking URI; default: SQLite database `mlflow.db` in the state folder.",
    )
    artifact_location: str | None = Field(
        default=None,
        description="Artifact root for the experiment; default: `mlartifacts/` in the state "
        "folder, or the tracking server's own artifact store when tracking_uri is an "
        "http(s) MLflow server.",
    )
    experiment: str = Field(default="mlops-loop", description="Experiment name.")
    registered_model: str = Field(default="mlops-loop-model", description="Registered model.")


class OperationsPolicy(_Model):
    """How scoring is timed."""

    chunk_rows: int = Field(
        default=10_000, ge=1, description="Rows scored per call; each call's latency is timed."
    )
    single_row_samples: int = Field(
        default=50,
        ge=0,
        description="Rows also scored one at a time, spread over the batch, to time the latency "
        "an online caller would see (0: skip).",
    )
    in_memory_max_rows: int = Field(
        default=2_000_000,
        ge=1,
        description="Batches with more rows are validated, drift-tested and scored from their "
        "parquet file a slice at a time instead of being read whole.",
    )
    read_chunk_rows: int = Field(
        default=500_000,
        ge=1,
        description="Rows read at a time from a batch larger than `in_memory_max_rows`. Peak "
        "memory grows with this and, less, with the batch: a 10M-row x 20-column batch "
        "peaked at about 3 GB with 500,000 and 4 GB with 1,000,000 (benchmarks/big_batch.py).",
    )


class LoopConfig(_Model):
    """Everything a loop needs: data schema, sources, model, policies, MLflow settings."""

    name: str = Field(default="mlops-loop", description="Name of this loop.")
    state_dir: Path = Field(
        default=Path(".mlops_loop"),
        description="Folder for snapshots, accepted and quarantined batches.",
    )
    columns: ColumnsConfig
    sources: SourcesConfig
    model: ModelSpec = Field(default_factory=ModelSpec)
    quality: QualityPolicy = Field(default_factory=QualityPolicy)
    drift: DriftPolicy = Field(default_factory=DriftPolicy)
    retrain: RetrainPolicy = Field(default_factory=RetrainPolicy)
    training: TrainingPolicy = Field(default_factory=TrainingPolicy)
    promotion: PromotionPolicy = Field(default_factory=PromotionPolicy)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    operations: OperationsPolicy = Field(default_factory=OperationsPolicy)
    alerts: AlertsConfig = Field(
        default_factory=AlertsConfig,
        description="Alert rules on the per-batch metrics and the channels that receive them.",
    )
    serving: ServingConfig = Field(default_factory=ServingConfig)

    @model_validator(mode="after")
    def _late_labels_need_an_id(self) -> LoopConfig:
        if self.sources.labels is not None and self.columns.id is None:
            raise ValueError(
                "sources.labels is set but columns.id is not: late labels are joined to "
                "their batches by the id column"
            )
        return self

    @property
    def task(self) -> Task:
        """The loop's task; binary for a config built without a known task (before any task
        but binary existed, every loop was one)."""
        return self.columns.task or "binary"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{self.state_dir.resolve() / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str | None:
        if self.mlflow.artifact_location:
            return self.mlflow.artifact_location
        if self.tracking_uri.startswith(("http://", "https://")):
            return None  # the server decides (--artifacts-destination / --default-artifact-root)
        return (self.state_dir.resolve() / "mlartifacts").as_uri()

    def resolve_paths(self, base: Path) -> LoopConfig:
        """Return a copy whose relative paths are taken from `base` (the YAML file's folder)."""

        def rel(p: Path) -> Path:
            return p if p.is_absolute() else (base / p).resolve()

        sources = self.sources.model_copy(
            update={
                "reference": rel(self.sources.reference),
                "landing": rel(self.sources.landing),
                "labels": None if self.sources.labels is None else rel(self.sources.labels),
            }
        )
        return self.model_copy(update={"state_dir": rel(self.state_dir), "sources": sources})


def _describe(error: ValidationError) -> str:
    lines = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {where}: {err['msg']}{shown}")
    return "\n".join(lines)


def parse_config(
    data: dict[str, Any],
    base: Path | None = None,
    source: str = "config",
    check_estimator: bool = True,
) -> LoopConfig:
    """Validate a mapping into a `LoopConfig`.

    `check_estimator=False` skips importing and checking `model.estimator`, for readers of the
    loop's state that never train; anything that trains loads the config with the check.

    Raises:
        InvalidConfigError: naming each bad field, its value and what was expected.
    """
    if not isinstance(data, dict):
        raise InvalidConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        config = LoopConfig.model_validate(data, context={"check_estimator": check_estimator})
    except ValidationError as e:
        raise InvalidConfigError(f"{source} is invalid:\n{_describe(e)}") from e
    config = config.resolve_paths(base or Path.cwd())
    _folders_apart(config, source)
    return with_task(config, source, check_estimator)


def _folders_apart(config: LoopConfig, source: str) -> None:
    """Refuse a state folder inside a watched folder (or one inside it): the loop would
    read its own state files as batches, or write its state among the user's files."""
    state = config.state_dir.resolve()
    watched = {"sources.landing": config.sources.landing, "sources.labels": config.sources.labels}
    for field_name, folder in watched.items():
        if folder is None:
            continue
        folder = folder.resolve()
        if state == folder or state.is_relative_to(folder) or folder.is_relative_to(state):
            raise InvalidConfigError(
                f"{source} is invalid:\n  state_dir ({state}) and {field_name} ({folder}) "
                "overlap: the loop would read its own state files as batches; expected two "
                "folders neither of which is inside the other"
            )


def load_config(path: str | Path, check_estimator: bool = True) -> LoopConfig:
    """Load a loop configuration from a YAML file; relative paths are taken from its folder.

    `check_estimator=False`: see `parse_config`.

    Raises:
        InvalidConfigError: the file is missing, not YAML, or a field is invalid.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise InvalidConfigError(f"cannot read loop config {str(path)!r}: {e.strerror}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InvalidConfigError(f"{path} is not valid YAML: {e}") from e
    return parse_config(
        data, base=path.resolve().parent, source=str(path), check_estimator=check_estimator
    )
