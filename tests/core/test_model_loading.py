"""Models are loaded only from the MLflow registry: one code path, by `models:/` URI."""

import ast
from pathlib import Path

import mlops_loop

SRC = Path(mlops_loop.__file__).parent
#: Calls that turn bytes into a live model object.
LOADERS = {"load_model", "load", "loads", "load_pyfunc", "get_skops_model"}
UNSAFE_MODULES = {"pickle", "cloudpickle", "joblib", "skops", "dill"}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            yield node, ast.unparse(node.func)


def test_the_only_model_loader_is_the_registrys_models_uri():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names]
                module = getattr(node, "module", None) or ""
                bad = {n.split(".")[0] for n in names} | {module.split(".")[0]}
                assert not (bad & UNSAFE_MODULES), f"{path}: imports {bad & UNSAFE_MODULES}"
        for call, name in _calls(tree):
            if name.rsplit(".", 1)[-1] in LOADERS and "mlflow" in name:
                found.append((path.relative_to(SRC).as_posix(), name, ast.unparse(call.args[0])))
    assert found == [
        ("core/registry.py", "mlflow.sklearn.load_model", "self.model_uri(alias_or_version)")
    ]


def test_model_uris_name_the_registered_model(loop_config):
    from mlops_loop.core.registry import MlflowRegistry

    registry = MlflowRegistry.from_config(loop_config)
    name = loop_config.mlflow.registered_model
    assert registry.model_uri("champion") == f"models:/{name}@champion"
    assert registry.model_uri(3) == f"models:/{name}/3"
