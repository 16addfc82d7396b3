"""Wall time of `mlops-loop status` on a loop's state, as a user runs it: a fresh process each
time (imports included), the config named on the command line.

Run the demo first (`make demo`, or `mlops-loop demo --workdir DIR`), then
`.venv/bin/python benchmarks/status_speed.py [DIR/loop.yaml] [--runs N] [--compare]`. Prints
each run's wall time, the median, where the time of one run goes by phase, and the imports (from
`python -X importtime`); `--compare` also times `loop_status` through the MLflow client
against the direct read of a SQLite store's tables, in one process.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def status_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "mlops_loop.cli", "status", "--config", str(config)]


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), out.get("PYTHONPATH", "")])
    return out


def timed(config: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        status_command(config), capture_output=True, text=True, env=env(), check=True
    )
    return time.perf_counter() - started, done.stdout


def import_seconds(config: Path) -> dict[str, float]:
    """Cumulative import time of the top-level packages one status run imports."""
    cmd = [sys.executable, "-X", "importtime", *status_command(config)[1:]]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env(), check=True)
    tops: dict[str, float] = {}
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if m and m.group(2) == "":
            name = m.group(3).split(".")[0]
            tops[name] = tops.get(name, 0.0) + int(m.group(1)) / 1e6
    return dict(sorted(tops.items(), key=lambda kv: -kv[1])[:8])


PHASES = """
import time, sys
t0 = time.perf_counter()
from mlops_loop.cli import _config
from mlops_loop.core.steps.status import loop_status
from mlops_loop.core.task_config import reference_target
t1 = time.perf_counter()
config = _config(sys.argv[1], check_estimator=False)
t2 = time.perf_counter()
reference_target(config)  # again: the one column the config load reads for the task
t3 = time.perf_counter()
loop_status(config)
t4 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {t3 - t2:.3f} {t4 - t3:.3f} {int('mlflow' in sys.modules)}")
"""


def phases(config: Path) -> tuple[dict[str, float], bool]:
    """Seconds of one status run by phase, in a fresh process, and whether MLflow was imported."""
    done = subprocess.run(
        [sys.executable, "-c", PHASES, str(config)],
        capture_output=True,
        text=True,
        env=env(),
        check=True,
    )
    *seconds, mlflow = done.stdout.split()
    names = (
        "import mlops_loop",
        "load config",
        "  read target column",
        "registry and state reads",
    )
    return dict(zip(names, map(float, seconds), strict=True)), mlflow == "1"


COMPARE = """
import time, sys
from mlops_loop.cli import _config
from mlops_loop.core.steps.status import loop_status
config = _config(sys.argv[1], check_estimator=False)
runs = int(sys.argv[2])
def best(direct):
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        status = loop_status(config, direct=direct)
        times.append(time.perf_counter() - started)
    return status, times
t0 = time.perf_counter()
direct, direct_times = best(True)
t1 = time.perf_counter()
client, client_times = best(False)  # the first includes importing MLflow
t2 = time.perf_counter()
print(direct_times[0], min(direct_times), client_times[0], min(client_times), int(direct == client))
"""


def compare(config: Path, runs: int) -> None:
    """`loop_status` read from the SQLite tables against the MLflow client, in one process."""
    done = subprocess.run(
        [sys.executable, "-c", COMPARE, str(config), str(runs)],
        capture_output=True,
        text=True,
        env=env(),
        check=True,
    )
    d_first, d_best, c_first, c_best, same = done.stdout.split()
    print("loop_status in one process (s): first call, best of the rest")
    print(f"  direct (SQLite tables)   {float(d_first):.3f}  {float(d_best):.3f}")
    print(f"  client (MlflowClient)    {float(c_first):.3f}  {float(c_best):.3f}")
    print(
        f"  ratio client/direct: first {float(c_first) / float(d_first):.0f}x, "
        f"warm {float(c_best) / float(d_best):.0f}x; same status: {same == '1'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / ".demo" / "loop.yaml"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also time loop_status through the MLflow client against the SQLite tables",
    )
    args = parser.parse_args()
    config = Path(args.config)
    if not config.exists():
        print(f"no loop config at {config}: run the demo first", file=sys.stderr)
        return 2
    times = []
    for i in range(args.runs):
        seconds, out = timed(config)
        times.append(seconds)
        print(f"run {i + 1}: {seconds:.2f} s")
    print(f"median: {statistics.median(times):.2f} s over {len(times)} runs")
    print(f"'None' in the output: {'None' in out}")
    split, mlflow = phases(config)
    print(f"one run by phase (s; MLflow imported: {mlflow}):")
    for name, seconds in split.items():
        print(f"  {name:24} {seconds:.3f}")
    if args.compare:
        compare(config, args.runs)
    print("imports (cumulative s, top-level packages):")
    for name, seconds in import_seconds(config).items():
        print(f"  {name:24} {seconds:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
