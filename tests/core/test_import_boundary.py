import subprocess
import sys


def _imports_of(package: str, forbidden: tuple[str, ...]) -> subprocess.CompletedProcess:
    """Import every module of `package` in a fresh interpreter; fail if any `forbidden` top-level
    package was imported along."""
    code = (
        f"import sys, pkgutil, importlib; pkg = importlib.import_module({package!r}); "
        f"[importlib.import_module(m.name) for m in pkgutil.walk_packages(pkg.__path__, "
        f"{package + '.'!r})]; bad = sorted({{m.split('.')[0] for m in sys.modules}} & "
        f"set({list(forbidden)!r})); print(bad); sys.exit(1 if bad else 0)"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_core_imports_neither_orchestrator():
    out = _imports_of("mlops_loop.core", ("dagster", "airflow"))
    assert out.returncode == 0, f"core imported an orchestrator: {out.stdout} {out.stderr}"


def test_the_airflow_binding_never_imports_dagster():
    out = _imports_of("mlops_loop.airflow", ("dagster",))
    assert out.returncode == 0, f"the Airflow binding imported dagster: {out.stdout} {out.stderr}"


def test_the_dagster_binding_never_imports_airflow():
    out = _imports_of("mlops_loop.defs", ("airflow",))
    assert out.returncode == 0, f"the Dagster binding imported airflow: {out.stdout} {out.stderr}"


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


def test_the_serving_endpoint_imports_no_orchestrator():
    out = _imports_of("mlops_loop.serving", ("dagster", "airflow"))
    assert out.returncode == 0, f"serving imported an orchestrator: {out.stdout} {out.stderr}"
