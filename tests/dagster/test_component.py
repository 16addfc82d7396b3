"""The Dagster Component, loaded from a defs.yaml the way `dg` loads it."""

import shutil

import yaml
from dagster.components.testing import create_defs_folder_sandbox

from mlops_loop.defs.component import MlopsLoopComponent
from tests.conftest import write_loop


def test_component_loads_from_defs_yaml(tmp_path, demo_frames):
    reference, _ = demo_frames
    config_path = write_loop(tmp_path / "loop", reference)
    with create_defs_folder_sandbox() as sandbox:
        defs_path = sandbox.defs_folder_path / "churn_loop"
        defs_path.mkdir(parents=True)
        shutil.copy(config_path, defs_path / "loop.yaml")
        # The copied YAML's relative paths now resolve next to defs.yaml; point them back.
        doc = yaml.safe_load((defs_path / "loop.yaml").read_text())
        doc["state_dir"] = str(tmp_path / "loop" / "state")
        doc["sources"] = {
            "reference": str(tmp_path / "loop" / "data" / "reference.parquet"),
            "landing": str(tmp_path / "loop" / "landing"),
        }
        (defs_path / "loop.yaml").write_text(yaml.safe_dump(doc))
        (defs_path / "defs.yaml").write_text(
            yaml.safe_dump(
                {
                    "type": "mlops_loop.defs.component.MlopsLoopComponent",
                    "attributes": {"config_path": "loop.yaml", "retrain_cron": "0 4 * * 1"},
                }
            )
        )
        with sandbox.load_component_and_build_defs(defs_path=defs_path) as (component, defs):
            assert isinstance(component, MlopsLoopComponent)
            assert defs.resolve_schedule_def("retrain_schedule").cron_schedule == "0 4 * * 1"
            assert {j.name for j in defs.resolve_all_job_defs()} >= {
                "bootstrap_job",
                "monitor_job",
                "retrain_job",
                "rollback_job",
            }
            assert defs.resolve_assets_def("champion_model") is not None
