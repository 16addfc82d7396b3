"""The scripted demo: the whole loop through a real Dagster instance and MLflow on SQLite.

The daemon would tick the sensors on its own; here the demo ticks them itself, in order, so
the scenario is deterministic and finishes in a couple of minutes. Every run it launches is a
real Dagster run recorded in the instance, visible afterwards in the Dagster UI.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from mlops_loop.core.store import LoopStore
from mlops_loop.demo.data import SCENARIO, generate

if TYPE_CHECKING:
    from mlops_loop.core.steps.status import BatchStatus, LoopStatus

# The demo data's label, id and event-time columns (see loop.yaml).
TARGET, ID, TIME = "churned", "customer_id", "event_time"

#: What `dagster_home/dagster.yaml` holds: SQLite storage (the default), no telemetry, and one
#: promotion at a time (the `champion_model` step runs in a concurrency pool).
DAGSTER_YAML = {"telemetry": {"enabled": False}, "concurrency": {"pools": {"default_limit": 1}}}


def reset_dagster_home(dagster_home: Path) -> None:
    """Delete run storage under `dagster_home`, keeping its `dagster.yaml`."""
    if not dagster_home.exists():
        return
    for child in dagster_home.iterdir():
        if child.name == "dagster.yaml":
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def prepare_workdir(workdir: Path, seed: int = 7) -> Path:
    """Write the demo config, the reference and the scenario's batch files (not yet landed)."""
    workdir.mkdir(parents=True, exist_ok=True)
    template = resources.files("mlops_loop.demo").joinpath("loop.yaml").read_text()
    config_path = workdir / "loop.yaml"
    config_path.write_text(template)
    reference, batches = generate(seed=seed)
    (workdir / "data").mkdir(exist_ok=True)
    (workdir / "incoming").mkdir(exist_ok=True)
    (workdir / "landing").mkdir(exist_ok=True)
    (workdir / "incoming_labels").mkdir(exist_ok=True)
    (workdir / "labels").mkdir(exist_ok=True)
    (workdir / "history").mkdir(exist_ok=True)
    reference.to_parquet(workdir / "data" / "reference.parquet", index=False)
    for name, frame in batches.items():
        # Predictions are made on unlabelled rows; whether a customer churned is known a week
        # later, in a file of its own.
        frame.drop(columns=[TARGET]).to_parquet(
            workdir / "incoming" / f"{name}.parquet", index=False
        )
        labels = frame[[ID, TARGET]].assign(
            labelled_at=(frame[TIME].max() + pd.Timedelta(days=7)).isoformat()
        )
        labels.to_csv(workdir / "incoming_labels" / f"{name}_labels.csv", index=False)
        # The same stream as history, labels joined: what `mlops-loop backtest` replays.
        frame.to_parquet(workdir / "history" / f"{name}.parquet", index=False)
    return config_path


def land(src: Path, landing: Path) -> Path:
    """Move a file into the landing folder the way producers should: write, then rename."""
    tmp = landing / f".{src.name}.part"
    shutil.copyfile(src, tmp)
    dest = landing / src.name
    os.replace(tmp, dest)
    return dest


class DemoDriver:
    """Ticks the loop's sensors and executes what they request on a Dagster instance."""

    def __init__(self, config_path: Path, instance: Any, log_level: str = "CRITICAL") -> None:
        from mlops_loop.defs.factory import build_definitions

        self.log_level = log_level
        self.defs = build_definitions(config_path)
        self.instance = instance
        self.cursors: dict[str, str | None] = {}

    def run_job(
        self,
        name: str,
        partition_key: str | None = None,
        run_config: dict | None = None,
        tags: dict | None = None,
    ) -> Any:
        job = self.defs.resolve_job_def(name)
        # The runs' full event logs are in the instance (and the UI); the terminal gets warnings.
        config = {
            **(run_config or {}),
            "loggers": {"console": {"config": {"log_level": self.log_level}}},
        }
        return job.execute_in_process(
            instance=self.instance,
            partition_key=partition_key,
            run_config=config,
            tags=tags,
            raise_on_error=False,
        )

    def schedule(self, schedule_name: str) -> list[Any]:
        """Evaluate a schedule once, as its tick would now, and run what it requests."""
        import dagster as dg

        schedule = self.defs.resolve_schedule_def(schedule_name)
        with dg.build_schedule_context(
            instance=self.instance, resources=self.defs.resources
        ) as context:
            data: Any = schedule(context)
        requests = data if isinstance(data, list) else [data]
        results = []
        for request in requests:
            if not isinstance(request, dg.RunRequest):
                continue  # a SkipReason: nothing to run
            tags = {**(request.tags or {}), "dagster/schedule_name": schedule_name}
            job_name = request.job_name or str(schedule.job_name)
            run_config = dict(request.run_config or {})
            results.append(self.run_job(job_name, request.partition_key, run_config, tags))
        return results

    def tick(self, sensor_name: str) -> list[Any]:
        """Evaluate a sensor once, apply its partition requests, run what it requests."""
        import dagster as dg

        from mlops_loop.defs.jobs import remeasure_job
        from mlops_loop.defs.sensors import backfill_partitions

        sensor = self.defs.resolve_sensor_def(sensor_name)
        with dg.build_sensor_context(
            instance=self.instance,
            definitions=self.defs,
            resources=self.defs.resources,
            cursor=self.cursors.get(sensor_name),
        ) as context:
            # Calling the sensor returns its SensorResult as the daemon receives it; the
            # partitions it adds are applied before its runs are launched, as the daemon does.
            data: Any = sensor(context)
        if data.cursor is not None:
            self.cursors[sensor_name] = data.cursor
        for request in data.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(
                request.partitions_def_name, list(request.partition_keys)
            )
        results = []
        for request in data.run_requests or []:
            tags = {**(request.tags or {}), "dagster/sensor_name": sensor_name}
            backfill = backfill_partitions(request)
            if backfill:
                # The daemon would start a backfill (a run per batch); in process, the same runs.
                for key in backfill:
                    results.append(self.run_job(remeasure_job.name, key, None, tags))
                continue
            job_name = request.job_name or str(sensor.job_name)
            results.append(self.run_job(job_name, request.partition_key, request.run_config, tags))
        return results


@dataclass(frozen=True)
class DemoRun:
    """What `run_demo` did: the loop's status after the scenario, and where things are."""

    status: LoopStatus
    plot: str  # the monitoring timeline (SVG)
    dagster_runs: int
    config_path: str
    backtest: str | None  # the backtest's JSON report; None with backtest=False
    seconds: float
    #: Each episode's verdicts as this run produced them (with `reset=False`, what earlier
    #: runs left in the state folder is not counted).
    episodes: list[BatchStatus] = field(default_factory=list)


#: A batch's JSON files as they are before an episode: {file name: (inode, mtime in ns)}.
Stamps = dict[str, tuple[int, int]]


def batch_stamps(store: LoopStore, key: str) -> Stamps:
    """What the state folder holds for batch `key` now (`episode_status` compares with it)."""
    folder = store.batch_dir(key)
    if not folder.is_dir():
        return {}
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*.json")}


class _WrittenSince(LoopStore):
    """The state folder with the batch files that were there before, unchanged, left out:
    every write replaces a file (a new inode), so what is left is what this run wrote."""

    def __init__(self, root: Path, before: Stamps) -> None:
        super().__init__(root)
        self.before = before

    def batch_json(self, key: str, name: str) -> Any:
        path = self.batch_dir(key) / f"{name}.json"
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        if self.before.get(path.name) == (stat.st_ino, stat.st_mtime_ns):
            return None
        return super().batch_json(key, name)


def episode_status(config: Any, key: str, before: Stamps) -> BatchStatus:
    """Batch `key`'s verdicts from the files written since `before` (`batch_stamps`)."""
    from mlops_loop.core.steps.status import batch_status

    return batch_status(config, key, _WrittenSince(config.state_dir, before))


def run_demo(
    workdir: Path,
    dagster_home: Path,
    *,
    reset: bool = True,
    backtest: bool = True,
    echo: Callable[[str], None] = print,
) -> DemoRun:
    """Run the whole scenario, then (with `backtest`) replay it; the loop's status after it.

    The backtest replays the same stream, labels joined, through the core steps in a state
    folder of its own (`<workdir>/backtest`), and writes its JSON report to
    `<workdir>/backtest.json`: what the policy would have done, batch by batch.
    """
    from dagster import DagsterInstance

    from mlops_loop.core.config import load_config
    from mlops_loop.core.steps.status import loop_status, monitoring_plot

    workdir, dagster_home = workdir.resolve(), dagster_home.resolve()
    if reset:
        shutil.rmtree(workdir, ignore_errors=True)
        reset_dagster_home(dagster_home)
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(DAGSTER_YAML))
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    _quiet_libraries()
    started = time.monotonic()
    echo(f"Generating the demo stream in {workdir} ...")
    config_path = prepare_workdir(workdir)
    config = load_config(config_path)
    instance = DagsterInstance.get()
    driver = DemoDriver(config_path, instance)
    echo("Bootstrapping: reference snapshot and first champion (bootstrap_job) ...")
    result = driver.run_job("bootstrap_job")
    if not result.success:
        raise RuntimeError("bootstrap_job failed; see the Dagster UI for the run's logs")
    assert config.sources.labels is not None
    store, episodes = LoopStore(config.state_dir), []
    for episode in SCENARIO:
        before = batch_stamps(store, episode.name)
        land(workdir / "incoming" / f"{episode.name}.parquet", config.sources.landing)
        monitor_runs = driver.tick("landing_sensor")
        # A week later the batch's labels land: its performance is measured again.
        land(workdir / "incoming_labels" / f"{episode.name}_labels.csv", config.sources.labels)
        label_runs = driver.tick("label_sensor")  # reads the label file
        label_runs += driver.tick("remeasure_sensor")  # measures the touched batch again
        retrain_runs = driver.tick("retrain_sensor")
        if episode is SCENARIO[-1]:
            # The weekly retrain schedule fires: a challenger of a stable week is judged too.
            retrain_runs += driver.schedule("retrain_schedule")
        episodes.append(episode_status(config, episode.name, before))
        echo(_episode_line(config, episode, episodes[-1], monitor_runs + label_runs, retrain_runs))
    status = loop_status(config)
    plot = workdir / "monitoring.svg"
    plot.write_text(monitoring_plot(config))
    runs = len(instance.get_runs())
    report = str(run_backtest(workdir, config, echo)) if backtest else None
    return DemoRun(
        status=status,
        plot=str(plot),
        dagster_runs=runs,
        config_path=str(config_path),
        backtest=report,
        seconds=round(time.monotonic() - started, 1),
        episodes=episodes,
    )


def run_backtest(workdir: Path, config: Any, echo: Callable[[str], None] = print) -> Path:
    """Replay the demo's labelled history (`mlops-loop backtest`); print it, save its JSON."""
    import json

    from mlops_loop.core.backtest import backtest

    echo(
        "\nBacktest: the same stream replayed through the core steps, each batch judged "
        "before its labels are used (mlops-loop backtest) ..."
    )
    state = workdir / "backtest"
    shutil.rmtree(state, ignore_errors=True)
    result = backtest(
        config,
        workdir / "history",
        workdir / "data" / "reference.parquet",
        state_dir=state,
        progress=lambda done, total, key: echo(f"  replayed {key} ({done}/{total})"),
    )
    report = workdir / "backtest.json"
    report.write_text(json.dumps(result.to_dict(), indent=2))
    echo(result.to_text())
    return report


def _quiet_libraries() -> None:
    """Keep the demo's terminal readable: library chatter goes, warnings of ours stay."""
    import logging
    import warnings

    import mlflow  # noqa: F401  (its import configures its loggers; quiet them afterwards)

    for name in ("mlflow", "alembic", "great_expectations"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"mlflow\..*")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"great_expectations\..*")


def _episode_line(
    config: Any, episode: Any, b: BatchStatus, monitor_runs: list, retrain_runs: list
) -> str:
    """One episode as this run saw it: `b` holds only the verdicts this run wrote."""
    parts = [f"{episode.name} [{episode.kind:9}]"]
    if b.quality_success is None:
        parts.append("not monitored by this run (see `mlops-loop status` for earlier runs)")
    elif not b.quality_success:
        parts.append(f"QUARANTINED ({', '.join(b.incident_kinds)})")
    else:
        parts.append(f"drift {'YES' if b.dataset_drift else 'no '}")
        parts.append(
            f"{config.promotion.metric} {b.metric:.3f} once labels landed"
            if b.metric is not None
            else "no labels"
        )
        if b.alerts_fired:
            parts.append(f"ALERT {', '.join(b.alerts_fired)}")
        if b.promoted is not None:
            verdict = "PROMOTED" if b.promoted else "rejected"
            parts.append(f"challenger v{b.challenger_version} {verdict}")
        elif retrain_runs:
            parts.append("retrain run failed")
    runs = monitor_runs + retrain_runs
    failed = [r for r in runs if not r.success]
    parts.append(f"({len(runs)} run(s){', ' + str(len(failed)) + ' failed' if failed else ''})")
    line = "  " + " | ".join(parts)
    # A quarantine ends its run successfully: any failed run is a real error, shown in full.
    for result in failed:
        for event in result.get_step_failure_events():
            error = event.event_specific_data.error
            if error:
                line += f"\n    {event.step_key} failed: {error.to_string().strip()[:2000]}"
    return line


def format_summary(run: DemoRun, dagster_home: Path) -> str:
    """What this run did (its episodes), then where the loop stands (the champion)."""
    status = run.status
    batches = run.episodes
    promotions = [b for b in batches if b.promoted]
    rejections = [b for b in batches if b.promoted is False]
    quarantined = [b.batch for b in batches if b.quality_success is False]
    lines = [
        "",
        "Summary",
        f"  batches monitored : {sum(b.quality_success is not None for b in batches)}",
        f"  quality incidents : {len(quarantined)} batch(es) quarantined "
        f"{quarantined} (kept out of training)",
        f"  drift detected    : {sum(bool(b.dataset_drift) for b in batches)} batch(es)",
        f"  retrains          : {sum(b.challenger_version is not None for b in batches)}",
        f"  promotions        : {len(promotions)} "
        + ", ".join(f"v{b.challenger_version} at {b.batch}" for b in promotions),
        f"  rejections        : {len(rejections)} "
        + ", ".join(f"v{b.challenger_version} at {b.batch}" for b in rejections),
        f"  champion          : {status.model}@champion = "
        + (
            f"v{status.champion} ({status.metric_name} {status.champion_metric:.3f})"
            if status.champion is not None and status.champion_metric is not None
            else f"v{status.champion}"
            if status.champion is not None
            else "none"
        ),
        f"  Dagster runs      : {run.dagster_runs} in {dagster_home}",
        f"  took              : {run.seconds} s",
        f"  monitoring plot   : {run.plot}",
        f"  backtest report   : {run.backtest or 'not run (--no-backtest)'}",
        "",
        "Look at it:",
        "  make ui        # Dagster UI on http://127.0.0.1:3000 (asset graph, runs, checks, plots)",
        "  make mlflow-ui # MLflow UI on http://127.0.0.1:5000 (runs, reports, model versions)",
        "  .venv/bin/mlops-loop status            # the loop's state in the terminal",
        "  .venv/bin/mlops-loop rollback --to previous --reason 'why'",
    ]
    return "\n".join(lines)
