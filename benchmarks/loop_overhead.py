"""Wall time of one monitoring run of a 100k-row batch on the scale-out topology, in-process
executor (the loop's default) against the multiprocess executor (a subprocess per step, each
re-importing Great Expectations, MLflow and scikit-learn).

For each executor: a fresh PostgreSQL database holds the Dagster instance; `dagster
code-server` serves the loop's code location (`MLOPS_LOOP_EXECUTOR` picks the executor) and
`dagster-daemon` runs its sensors and launches its runs. The bootstrap job runs in this process
on the same instance; then one 100k-row demo batch is landed, and the daemon's landing_sensor
requests monitor_job. The figures come from the instance: the run's launch, start and end
times, and each step's start and end. MLflow is the loop's SQLite backend in its state folder.

Needs PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres; or $MLOPS_LOOP_TEST_POSTGRES).
Run with `.venv/bin/python benchmarks/loop_overhead.py` (about 4 minutes on 2 cores).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import write_loop  # noqa: E402
from tests.integration.conftest import PG_DSN, Servers, _connect, free_port  # noqa: E402

from mlops_loop.demo.data import make_frame  # noqa: E402
from mlops_loop.demo.runner import land  # noqa: E402
from mlops_loop.deploy import DAGSTER_PG_ENV, dagster_instance_config, grpc_workspace  # noqa: E402

BATCH_ROWS = 100_000
REFERENCE_ROWS = 5_000
TARGET_S = 30.0
TIMEOUT_S = 420
BIN = Path(sys.executable).parent
LOCATION = "mlops_loop"


def scenario(root: Path, executor: str) -> dict[str, Any]:
    """Run the monitoring of one batch with `executor`; return the instance's figures."""
    import dagster as dg
    from psycopg2.extensions import parse_dsn

    from mlops_loop.defs.factory import build_definitions

    rng = np.random.default_rng(7)
    t0 = pd.Timestamp("2026-01-05")
    reference = make_frame(rng, REFERENCE_ROWS, start=t0, id_offset=1)
    batch = make_frame(
        rng, BATCH_ROWS, start=t0 + pd.Timedelta(days=7), id_offset=REFERENCE_ROWS + 1
    )
    config_path = write_loop(root, reference)
    (root / "incoming").mkdir()
    batch_file = root / "incoming" / "batch_001.parquet"
    batch.to_parquet(batch_file, index=False)

    params = parse_dsn(PG_DSN)
    database = f"mlops_loop_bench_{uuid.uuid4().hex[:10]}"
    admin = _connect(PG_DSN)
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{database}"')
    pg_env = {
        DAGSTER_PG_ENV["username"]: params.get("user", "postgres"),
        DAGSTER_PG_ENV["password"]: params.get("password", ""),
        DAGSTER_PG_ENV["hostname"]: params.get("host", "127.0.0.1"),
        DAGSTER_PG_ENV["port"]: str(params.get("port", 5432)),
        DAGSTER_PG_ENV["db_name"]: database,
    }
    os.environ.update(pg_env)
    home = root / "dagster_home"
    home.mkdir()
    port = free_port()
    (home / "dagster.yaml").write_text(yaml.safe_dump(dagster_instance_config()))
    (home / "workspace.yaml").write_text(yaml.safe_dump(grpc_workspace("127.0.0.1", port)))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MLOPS_LOOP_CONFIG": str(config_path),
        "MLOPS_LOOP_EXECUTOR": executor,
    }
    logs = root / "logs"
    logs.mkdir()
    servers = Servers(logs)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        servers.start(
            "code-server",
            [str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(port)]
            + ["-m", "mlops_loop.definitions", "--location-name", LOCATION]
            + ["--use-python-environment-entry-point"],
            env,
            root,
        )
        servers.start(
            "daemon",
            [str(BIN / "dagster-daemon"), "run", "-w", str(home / "workspace.yaml")],
            env,
            root,
        )
        defs = build_definitions(config_path)
        boot = defs.resolve_job_def("bootstrap_job").execute_in_process(instance=instance)
        assert boot.success
        landed_at = time.time()
        land(batch_file, root / "landing")
        deadline = time.monotonic() + TIMEOUT_S
        run = None
        while time.monotonic() < deadline:
            servers.check_running()
            runs = instance.get_runs(filters=dg.RunsFilter(job_name="monitor_job"))
            if runs and runs[0].is_finished:
                run = runs[0]
                break
            time.sleep(1)
        if run is None:
            raise TimeoutError(
                f"monitor_job did not finish in {TIMEOUT_S} s\n{servers.log_tails()}"
            )
        if run.status != dg.DagsterRunStatus.SUCCESS:
            raise RuntimeError(f"monitor_job ended {run.status.value}\n{servers.log_tails()}")
        record = instance.get_run_record_by_id(run.run_id)
        stats = instance.get_run_stats(run.run_id)
        steps = {
            s.step_key: s.end_time - s.start_time
            for s in instance.get_run_step_stats(run.run_id)
            if s.start_time and s.end_time
        }
        return {
            "executor": executor,
            "sensor_s": record.create_timestamp.timestamp() - landed_at,
            "queued_to_end_s": stats.end_time - record.create_timestamp.timestamp(),
            "launch_to_start_s": stats.start_time - stats.launch_time,
            "run_s": stats.end_time - stats.start_time,
            "steps": steps,
        }
    finally:
        instance.dispose()
        strays = servers.stop_all()
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()
        if strays:
            print(f"  (killed stray processes {strays})")


def main() -> None:
    results = []
    for executor in ("in_process", "multiprocess"):
        with tempfile.TemporaryDirectory(prefix="mlops-loop-bench-") as tmp:
            print(f"== {executor}: {BATCH_ROWS:,}-row batch, monitor_job launched by the daemon")
            r = scenario(Path(tmp), executor)
            results.append(r)
            print(f"  landing -> run requested by landing_sensor: {r['sensor_s']:6.1f} s")
            print(f"  run launched -> started (run worker up):    {r['launch_to_start_s']:6.1f} s")
            print(f"  run start -> success:                        {r['run_s']:6.1f} s")
            print(f"  run queued -> success:                       {r['queued_to_end_s']:6.1f} s")
            for step, seconds in sorted(r["steps"].items(), key=lambda kv: -kv[1]):
                print(f"    {step:<34} {seconds:6.1f} s")
    fast, slow = results
    verdict = "within" if fast["run_s"] <= TARGET_S else "OVER"
    print(
        f"\nin-process run {fast['run_s']:.1f} s ({verdict} the {TARGET_S:.0f} s target), "
        f"multiprocess run {slow['run_s']:.1f} s: {slow['run_s'] / fast['run_s']:.1f}x; "
        f"queued -> success {fast['queued_to_end_s']:.1f} s vs {slow['queued_to_end_s']:.1f} s"
    )


if __name__ == "__main__":
    main()
