import subprocess
import sys


def test_core_never_imports_dagster():
    code = (
        "import sys, pkgutil, importlib, mlops_loop.core, mlops_loop.core.steps; "
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(mlops_loop.core.__path__, "
        "'mlops_loop.core.')]; bad = [m for m in sys.modules if m.split('.')[0] == 'dagster']; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, f"core imported dagster modules: {out.stdout} {out.stderr}"


def test_cli_help_is_fast_and_light():
    code = (
        "import sys, mlops_loop.cli; heavy = [m for m in ('dagster', 'mlflow', "
        "'great_expectations', 'sklearn') if m in sys.modules]; print(heavy); "
        "sys.exit(1 if heavy else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, f"the CLI imports heavy modules up front: {out.stdout}"


def test_great_expectations_is_imported_only_where_validation_runs():
    code = (
        "import sys, mlops_loop, mlops_loop.core.quality, mlops_loop.core.steps.quality, "
        "mlops_loop.defs.factory; "
        "print('great_expectations' in sys.modules); "
        "sys.exit(1 if 'great_expectations' in sys.modules else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, f"great_expectations imported at import time: {out.stderr}"
