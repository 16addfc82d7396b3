"""The loop driven through a real Airflow 3: a temporary AIRFLOW_HOME on SQLite, migrated once
per session, and each DAG run in process by `dag.test()`, with MLflow on SQLite as everywhere.

Airflow reads its configuration when it is first imported, so the environment is set here,
before any test imports it. The one-line DAG file in the session's `dags/` folder is what
`dag.test()` registers the DAG from; it reads the loop config from $MLOPS_LOOP_CONFIG, which
each loop fixture sets.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlops_loop.core.config import LoopConfig, load_config
from tests.conftest import write_loop

HOME = Path(tempfile.mkdtemp(prefix="mlops-loop-airflow-"))
atexit.register(shutil.rmtree, HOME, ignore_errors=True)
DAG_FILE = "from mlops_loop.airflow import build_dags; build_dags()\n"
ENV = {
    "AIRFLOW_HOME": str(HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(HOME / "dags"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{HOME / 'airflow.db'}",
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
}
os.environ.update(ENV)


@pytest.fixture(scope="session", autouse=True)
def airflow_db() -> Path:
    """`airflow db migrate` once, on the session's SQLite database."""
    (HOME / "dags").mkdir(exist_ok=True)
    (HOME / "dags" / "mlops_loop_dags.py").write_text(DAG_FILE)
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, f"airflow db migrate failed:\n{out.stdout}\n{out.stderr}"
    return HOME


@dataclass
class AirflowLoop:
    root: Path
    config_path: Path
    config: LoopConfig
    dags: dict[str, Any]
    runs: dict[str, Any] = field(default_factory=dict)

    def dag(self, name: str) -> Any:
        return self.dags[f"churn_demo_{name}"]

    def run(self, name: str, **conf: Any) -> Any:
        """One DAG run in process; the DagRun, whose task instances say what happened.

        The DAG file that `dag.test()` registers the DAG from reads this loop's config."""
        before = os.environ.get("MLOPS_LOOP_CONFIG")
        os.environ["MLOPS_LOOP_CONFIG"] = str(self.config_path)
        try:
            return self.dag(name).test(run_conf=conf or None)
        finally:
            if before is None:
                os.environ.pop("MLOPS_LOOP_CONFIG", None)
            else:
                os.environ["MLOPS_LOOP_CONFIG"] = before

    def edit(self, **overrides: Any) -> None:
        """Change the loop YAML (dotted keys); each task reads it again when it runs."""
        import yaml

        doc = yaml.safe_load(self.config_path.read_text())
        for dotted, value in overrides.items():
            node = doc
            *parents, leaf = dotted.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        self.config_path.write_text(yaml.safe_dump(doc))
        self.config = load_config(self.config_path)


def states(dag_run: Any) -> dict[tuple[str, int], str]:
    """{(task id, map index): state} of a DAG run's task instances."""
    from airflow.utils.session import create_session

    with create_session() as session:
        return {
            (ti.task_id, ti.map_index): str(ti.state)
            for ti in dag_run.get_task_instances(session=session)
        }


def labelled(dag_run: Any) -> dict[tuple[str, str], str]:
    """{(task id, batch key): state} of the mapped task instances (labelled by batch)."""
    from airflow.utils.session import create_session

    with create_session() as session:
        return {
            (ti.task_id, ti.rendered_map_index): str(ti.state)
            for ti in dag_run.get_task_instances(session=session)
            if ti.map_index >= 0
        }


def asset_events(name: str) -> list[Any]:
    """Every event of the Airflow asset `name`, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == name)
            .order_by(AssetEvent.id)
        )
        events = list(session.scalars(query))
        session.expunge_all()
        return events


def new_airflow_loop(root: Path, demo_frames, keys: list[str], **overrides) -> AirflowLoop:
    from mlops_loop.airflow import build_dags

    reference, batches = demo_frames
    config_path = write_loop(root, reference, {k: batches[k] for k in keys}, **overrides)
    return AirflowLoop(root, config_path, load_config(config_path), build_dags(config_path))


@pytest.fixture(scope="session")
def airflow_loop(tmp_path_factory, demo_frames) -> Iterator[AirflowLoop]:
    """The demo stream through Airflow, once per session: bootstrap, then one monitor run over
    batch_001 (stable), batch_003 (broken), batch_004 (covariate drift) and batch_005 (concept
    drift, labelled). Tests add runs of their own (test_monitor.py first; test_retrain.py then
    retrains and rolls back on what it left)."""
    root = tmp_path_factory.mktemp("airflow-loop")
    cwd = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        loop = new_airflow_loop(
            root, demo_frames, ["batch_001", "batch_003", "batch_004", "batch_005"]
        )
        loop.runs["bootstrap"] = loop.run("bootstrap")
        loop.runs["monitor"] = loop.run("monitor")
        yield loop
