"""The scripted demo: the whole loop through a real Dagster instance and MLflow on SQLite.

The daemon would tick the sensors on its own; here the demo ticks them itself, in order, with
the daemon's own functions (`demo/daemon.py`), so the scenario is deterministic and finishes in
about a minute. Every run is launched from the code location `make ui` loads: the Dagster UI
shows it under its job, its sensor's or schedule's tick and its partition.
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
    from mlops_loop.core.config import load_config
    from mlops_loop.core.steps.status import loop_status, monitoring_plot
    from mlops_loop.demo.daemon import SteppedDaemon

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
    assert config.sources.labels is not None
    echo(
        "Starting the code location (the package's Dagster definitions); the runs' console "
        f"output goes to {workdir / 'dagster-runs.log'} ..."
    )
    with SteppedDaemon(config_path, dagster_home, workdir / "dagster-runs.log") as daemon:
        echo("Bootstrapping: reference snapshot and first champion (bootstrap_job) ...")
        failed = [r for r in daemon.launch("bootstrap_job") if not r.success]
        if failed:
            raise RuntimeError(
                "bootstrap_job failed; see the Dagster UI for the run's logs: "
                + "; ".join(failed[0].failures)
            )
        store, episodes = LoopStore(config.state_dir), []
        for episode in SCENARIO:
            before = batch_stamps(store, episode.name)
            land(workdir / "incoming" / f"{episode.name}.parquet", config.sources.landing)
            monitor_runs = daemon.tick("landing_sensor")
            # A week later the batch's labels land: its performance is measured again.
            land(workdir / "incoming_labels" / f"{episode.name}_labels.csv", config.sources.labels)
            label_runs = daemon.tick("label_sensor")  # reads the label file
            label_runs += daemon.tick("remeasure_sensor")  # measures the touched batch again
            retrain_runs = daemon.tick("retrain_sensor")
            if episode is SCENARIO[-1]:
                # The weekly retrain schedule fires: a challenger of a stable week is judged too.
                retrain_runs += daemon.schedule("retrain_schedule")
            episodes.append(episode_status(config, episode.name, before))
            echo(
                _episode_line(
                    config, episode, episodes[-1], monitor_runs + label_runs, retrain_runs
                )
            )
        runs = len(daemon.instance.get_runs())
    status = loop_status(config)
    plot = workdir / "monitoring.svg"
    plot.write_text(monitoring_plot(config))
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
    for run in failed:
        for failure in run.failures:
            line += f"\n    {run.job_name} {failure[:2000]}"
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
