"""The demo's daemon, stepped: Dagster's own sensor, schedule and backfill code, a tick at a time.

`dagster-daemon` ticks every sensor on its interval and launches what each asks for through the
code location (a gRPC server of the package's definitions) and the instance's run launcher. The
demo does the same with the same Dagster functions, but ticks the sensor it names when the
scenario says so, which keeps the story deterministic. Each launched run executes in this
process (Dagster's in-memory run launcher) rather than in a new one, which keeps the story to
about a minute. Every run is created from the code location, so it carries its origin, its job,
its sensor or schedule tick and its partition, and the Dagster UI shows it where a production
run would be: under the job, the sensor's ticks and the partition.

These are Dagster's daemon functions, not its public API; constraints.txt pins Dagster and
`tests/e2e/test_demo.py` fails if they change (every demo run's origin, tick and backfill).
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_loop.defs.sensors import SENSOR_SECONDS_ENV

#: The code location the demo launches from: workspace.yaml's, so `make ui` shows the same one.
LOCATION_MODULE = "mlops_loop.definitions"
#: How often the demo's sensors may tick. The scenario ticks each sensor at most once an
#: episode, and an episode takes longer than this.
DEMO_SENSOR_SECONDS = 1
#: Runs start as soon as they are submitted and execute in this process. `dagster.yaml` itself
#: is left as it is: `make ui` queues and launches runs the usual way.
INSTANCE_OVERRIDES = {
    "run_coordinator": {
        "module": "dagster._core.run_coordinator",
        "class": "DefaultRunCoordinator",
    },
    "run_launcher": {"module": "mlops_loop.demo.daemon", "class": "InProcessRunLauncher"},
}
#: Where the runs' console output goes (their event logs are in the instance, and the UI).
RUN_OUTPUT_ENV = "MLOPS_LOOP_DEMO_RUN_OUTPUT"
#: A backfill needs an iteration to launch its runs and one to see them done.
BACKFILL_ITERATIONS = 20


def _launcher_base() -> type:
    from dagster._core.launcher.sync_in_memory_run_launcher import SyncInMemoryRunLauncher

    return SyncInMemoryRunLauncher


class InProcessRunLauncher(_launcher_base()):  # type: ignore[misc]
    """Dagster's in-memory launcher, with each run's console output appended to a file (the
    path in $MLOPS_LOOP_DEMO_RUN_OUTPUT) so the demo's terminal tells only the story."""

    def launch_run(self, context: Any) -> None:
        import contextlib

        path = os.environ.get(RUN_OUTPUT_ENV)
        if not path:
            super().launch_run(context)
            return
        with (
            open(path, "a", encoding="utf-8") as out,
            contextlib.redirect_stderr(out),
            contextlib.redirect_stdout(out),
        ):
            super().launch_run(context)


@dataclass(frozen=True)
class RunOutcome:
    """A run the demo launched, once finished."""

    run_id: str
    job_name: str
    partition: str | None
    success: bool
    failures: tuple[str, ...]  # "<step>: <error>" for each failed step


class SteppedDaemon:
    """Ticks named sensors and schedules of the demo's code location on a Dagster instance.

    Use as a context manager: it starts the code location's gRPC server and stops it at exit.
    """

    def __init__(self, config_path: Path, dagster_home: Path, run_output: Path) -> None:
        import dagster as dg
        from dagster._core.instance.ref import InstanceRef

        # Read where the code location loads (the gRPC server inherits this environment) and
        # where each run reconstructs its job, in this process; restored at exit.
        self._env = {
            "MLOPS_LOOP_CONFIG": str(config_path),
            SENSOR_SECONDS_ENV: str(DEMO_SENSOR_SECONDS),
            RUN_OUTPUT_ENV: str(run_output),
        }
        self._saved_env = {name: os.environ.get(name) for name in self._env}
        self.instance = dg.DagsterInstance.from_ref(
            InstanceRef.from_dir(str(dagster_home), overrides=INSTANCE_OVERRIDES)
        )
        self.logger = logging.getLogger("mlops_loop.demo.daemon")
        self._context: Any = None
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> SteppedDaemon:
        from dagster._core.workspace.context import WorkspaceProcessContext
        from dagster._core.workspace.load_target import ModuleTarget

        os.environ.update(self._env)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-daemon")

        target = ModuleTarget(
            module_name=LOCATION_MODULE, attribute=None, working_directory=None, location_name=None
        )
        self._context = WorkspaceProcessContext(
            self.instance, target, code_server_log_level="WARNING"
        ).__enter__()
        location = self._location()
        if location is None:
            errors = [
                e.load_error.to_string()
                for e in self._context.create_request_context().get_code_location_entries().values()
                if e.load_error
            ]
            self.__exit__(None, None, None)
            raise RuntimeError(f"the demo's code location did not load: {' '.join(errors)}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None
        self.instance.dispose()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    # --- what the scenario asks for ---------------------------------------------------------

    def launch(self, job_name: str, tags: dict[str, str] | None = None) -> list[RunOutcome]:
        """Launch a job as the UI's Launchpad or `dagster job launch` would; wait for it."""
        return self._on_daemon_thread(self._launch, job_name, tags)

    def tick(self, sensor_name: str) -> list[RunOutcome]:
        """One tick of a sensor, as the daemon's would be; the runs (and backfills) it asked for."""
        return self._on_daemon_thread(self._tick, sensor_name)

    def schedule(self, schedule_name: str) -> list[RunOutcome]:
        """A tick of a schedule now, as the daemon's at its cron time would be."""
        return self._on_daemon_thread(self._schedule, schedule_name)

    def _on_daemon_thread(self, fn: Any, *args: Any) -> list[RunOutcome]:
        """Run `fn` on a thread of its own, as the daemon runs its loops: Dagster's daemon code
        (the backfill iteration) calls `asyncio.run`, which fails in a thread that already runs
        an event loop (a caller's, a notebook's, a test browser's)."""
        assert self._pool is not None, "use SteppedDaemon as a context manager"
        return self._pool.submit(fn, *args).result()

    def _launch(self, job_name: str, tags: dict[str, str] | None) -> list[RunOutcome]:
        from dagster._cli.job import _create_run

        before = self._run_ids()
        location, repo = self._location(), self._repository()
        run = _create_run(
            instance=self.instance,
            code_location=location,
            remote_repo=repo,
            remote_job=repo.get_full_job(job_name),
            run_config={},
            tags=tags or {},
            op_selection=None,
            run_id=None,
        )
        self.instance.submit_run(run.run_id, self._context.create_request_context())
        return self._outcomes(before)

    def _tick(self, sensor_name: str) -> list[RunOutcome]:
        from dagster._core.definitions.run_request import InstigatorType
        from dagster._core.scheduler.instigation import (
            InstigatorState,
            InstigatorStatus,
            SensorInstigatorData,
        )
        from dagster._daemon.sensor import _process_tick_generator, is_under_min_interval
        from dagster._time import get_current_timestamp

        sensor = self._repository().get_sensor(sensor_name)
        origin_id, selector_id = sensor.get_remote_origin_id(), sensor.selector_id
        state = self.instance.get_instigator_state(origin_id, selector_id)
        if state is None:
            # A sensor running by default has no stored state until its first tick.
            self.instance.add_instigator_state(
                InstigatorState(
                    sensor.get_remote_origin(),
                    InstigatorType.SENSOR,
                    InstigatorStatus.DECLARED_IN_CODE,
                    SensorInstigatorData(
                        min_interval=sensor.min_interval_seconds,
                        last_sensor_start_timestamp=get_current_timestamp(),
                        sensor_type=sensor.sensor_type,
                    ),
                )
            )
        while True:
            state = self.instance.get_instigator_state(origin_id, selector_id)
            assert state is not None
            if not is_under_min_interval(state, sensor):
                break
            time.sleep(0.05)
        before = self._run_ids()
        retention = self.instance.get_tick_retention_settings(InstigatorType.SENSOR)
        results = list(
            _process_tick_generator(
                self._context, self.logger, sensor, state, None, retention, None
            )
        )
        self._raise_errors(f"sensor {sensor_name}", results)
        self._finish_backfills()
        return self._outcomes(before)

    def _schedule(self, schedule_name: str) -> list[RunOutcome]:
        from dagster._core.definitions.run_request import InstigatorType
        from dagster._core.scheduler.instigation import TickData, TickStatus
        from dagster._scheduler.scheduler import _schedule_runs_at_time, _ScheduleLaunchContext
        from dagster._time import get_current_datetime

        schedule = self._repository().get_schedule(schedule_name)
        now = get_current_datetime()
        before = self._run_ids()
        tick = self.instance.create_tick(
            TickData(
                instigator_origin_id=schedule.get_remote_origin_id(),
                instigator_name=schedule_name,
                instigator_type=InstigatorType.SCHEDULE,
                status=TickStatus.STARTED,
                timestamp=now.timestamp(),
                selector_id=schedule.selector_id,
            )
        )
        retention = self.instance.get_tick_retention_settings(InstigatorType.SCHEDULE)
        with _ScheduleLaunchContext(schedule, tick, self.instance, self.logger, retention) as ctx:
            results = list(
                _schedule_runs_at_time(
                    self._context,
                    self.logger,
                    schedule,
                    now,
                    schedule.execution_timezone or "UTC",
                    ctx,
                    None,
                )
            )
        self._raise_errors(f"schedule {schedule_name}", results)
        return self._outcomes(before)

    # --- plumbing ---------------------------------------------------------------------------

    def _location(self) -> Any:
        entries = self._context.create_request_context().get_code_location_entries()
        entry = next(iter(entries.values()), None)
        return entry.code_location if entry is not None else None

    def _repository(self) -> Any:
        return next(iter(self._location().get_repositories().values()))

    def _finish_backfills(self) -> None:
        """Run the backfill daemon's iterations until every requested backfill is done."""
        from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus
        from dagster._daemon.backfill import execute_backfill_iteration

        for _ in range(BACKFILL_ITERATIONS):
            pending = self.instance.get_backfills(
                filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED])
            )
            if not pending:
                return
            self._raise_errors(
                "the backfill daemon", list(execute_backfill_iteration(self._context, self.logger))
            )
        raise RuntimeError(f"backfills still running after {BACKFILL_ITERATIONS} iterations")

    def _run_ids(self) -> set[str]:
        return {r.run_id for r in self.instance.get_runs()}

    def _outcomes(self, before: set[str]) -> list[RunOutcome]:
        import dagster as dg

        # get_runs lists the newest first.
        runs = [r for r in self.instance.get_runs() if r.run_id not in before][::-1]
        outcomes = []
        for run in runs:
            failures = tuple(
                f"{event.step_key}: {error.to_string().strip()}"
                for event in self.instance.all_logs(
                    run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
                )
                if (error := getattr(event.get_dagster_event().event_specific_data, "error", None))
            )
            outcomes.append(
                RunOutcome(
                    run_id=run.run_id,
                    job_name=run.job_name,
                    partition=run.tags.get("dagster/partition"),
                    success=run.status == dg.DagsterRunStatus.SUCCESS,
                    failures=failures,
                )
            )
        return outcomes

    @staticmethod
    def _raise_errors(what: str, results: list[Any]) -> None:
        from dagster._utils.error import SerializableErrorInfo

        errors = [r for r in results if isinstance(r, SerializableErrorInfo)]
        if errors:
            raise RuntimeError(f"{what} failed: {errors[0].to_string().strip()}")
