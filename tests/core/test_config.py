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


def test_an_estimator_path_to_any_other_callable_is_refused_before_it_runs(tmp_path):
    """Finding 16: `os.system` with a command as params was accepted, and ran at training."""
    marker = tmp_path / "ran"
    doc = {
        **BASE,
        "model": {"estimator": "os.system", "params": {"command": f"touch {marker}"}},
    }
    with pytest.raises(InvalidConfigError, match=r"'os\.system' is a builtin_function_or_method"):
        parse_config(doc, base=tmp_path)
    for path in ("pathlib.Path", "sklearn.base.clone"):
        with pytest.raises(InvalidConfigError, match="not a scikit-learn estimator"):
            parse_config({**BASE, "model": {"estimator": path}}, base=tmp_path)

    from mlops_loop.core.config import ModelSpec
    from mlops_loop.core.training import build_estimator

    # A spec built without validation is still refused where the estimator is built.
    spec = ModelSpec.model_construct(estimator="os.system", params={"command": f"touch {marker}"})
    with pytest.raises(InvalidConfigError, match="not a scikit-learn estimator"):
        build_estimator(spec, parse_config(BASE).columns)
    assert not marker.exists()


def test_estimator_params_are_validated_by_scikit_learn_at_load():
    bad = {**BASE, "model": {"params": {"max_iter": -5}}}
    with pytest.raises(
        InvalidConfigError,
        match=r"model\.params\.max_iter = -5 is refused by sklearn\.ensemble\."
        r"HistGradientBoostingClassifier: The 'max_iter' parameter .* must be an int in the "
        r"range \[1, inf\)\. Got -5",
    ):
        parse_config(bad)
    unknown = {**BASE, "model": {"params": {"max_iters": 5}}}
    with pytest.raises(
        InvalidConfigError, match=r"model\.params\.max_iters: .* has no parameter 'max_iters'"
    ):
        parse_config(unknown)
    ok = {
        **BASE,
        "model": {
            "estimator": "sklearn.linear_model.LogisticRegression",
            "params": {"C": 0.5, "max_iter": 200},
        },
    }
    assert parse_config(ok).model.params == {"C": 0.5, "max_iter": 200}


@pytest.mark.parametrize(
    ("state_dir", "landing"),
    [("landing/state", "landing"), ("state", "state/landing"), ("same", "same")],
)
def test_state_dir_and_landing_must_not_overlap(tmp_path, state_dir, landing):
    doc = {**BASE, "state_dir": state_dir, "sources": {**BASE["sources"], "landing": landing}}
    with pytest.raises(
        InvalidConfigError,
        match=rf"state_dir \({tmp_path / state_dir}\) and sources\.landing "
        rf"\({tmp_path / landing}\) overlap",
    ):
        parse_config(doc, base=tmp_path)
    labels = {
        **BASE,
        "state_dir": "s",
        "columns": {**BASE["columns"], "id": "i"},
        "sources": {**BASE["sources"], "labels": "s/labels"},
    }
    with pytest.raises(InvalidConfigError, match=r"and sources\.labels .* overlap"):
        parse_config(labels, base=tmp_path)
    assert parse_config({**BASE, "state_dir": "state"}, base=tmp_path)
