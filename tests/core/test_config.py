from pathlib import Path

import pytest

from mlops_loop.core.config import load_config, parse_config
from mlops_loop.core.errors import InvalidConfigError

BASE = {
    "columns": {"numerical": ["x"], "categorical": ["c"], "target": "y"},
    "sources": {"reference": "ref.parquet", "landing": "landing"},
}


def test_minimal_config_has_defaults_and_resolves_paths(tmp_path):
    config = parse_config(BASE, base=tmp_path)
    assert config.columns.features == ["x", "c"]
    assert config.sources.reference == tmp_path / "ref.parquet"
    assert config.tracking_uri == f"sqlite:///{tmp_path / '.mlops_loop' / 'mlflow.db'}"
    assert config.promotion.metric == "roc_auc"


def test_unknown_field_is_named():
    with pytest.raises(InvalidConfigError, match=r"columns\.targte: Extra inputs"):
        parse_config({**BASE, "columns": {**BASE["columns"], "targte": "y"}})


def test_bad_value_names_field_and_value():
    doc = {**BASE, "promotion": {"metric": "specificity"}}
    with pytest.raises(InvalidConfigError, match=r"promotion\.metric.*'specificity'"):
        parse_config(doc)


def test_column_with_two_roles_is_refused():
    doc = {**BASE, "columns": {"numerical": ["x", "y"], "target": "y"}}
    with pytest.raises(InvalidConfigError, match="column 'y' is both numerical and target"):
        parse_config(doc)


def test_estimator_must_be_importable():
    doc = {**BASE, "model": {"estimator": "sklearn.ensemble.NoSuchForest"}}
    with pytest.raises(InvalidConfigError, match=r"model: .*has no callable 'NoSuchForest'"):
        parse_config(doc)


def test_load_config_reports_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(InvalidConfigError, match="cannot read loop config"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("columns: [unclosed\n")
    with pytest.raises(InvalidConfigError, match="not valid YAML"):
        load_config(bad)


def test_demo_config_loads():
    import importlib.resources

    path = Path(str(importlib.resources.files("mlops_loop.demo").joinpath("loop.yaml")))
    config = load_config(path)
    assert config.columns.target == "churned"
    assert config.sources.landing == path.parent / "landing"


def test_sliding_window_needs_a_bound():
    doc = {**BASE, "training": {"window": "sliding"}}
    with pytest.raises(InvalidConfigError, match="needs max_rows or max_age_days"):
        parse_config(doc)
    assert parse_config({**BASE, "training": {"window": "sliding", "max_rows": 5000}})


def test_an_mlflow_server_keeps_its_own_artifact_store_by_default(loop_config):
    assert loop_config.artifact_location == (loop_config.state_dir / "mlartifacts").as_uri()
    remote = loop_config.model_copy(
        update={"mlflow": loop_config.mlflow.model_copy(update={"tracking_uri": "http://m:5000"})}
    )
    assert remote.artifact_location is None
    pinned = remote.model_copy(
        update={"mlflow": remote.mlflow.model_copy(update={"artifact_location": "s3://b/x"})}
    )
    assert pinned.artifact_location == "s3://b/x"
