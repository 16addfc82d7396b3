"""Wall time of `mlops-loop status` on a loop's state, as a user runs it: a fresh process each
time (imports included), the config named on the command line.

Run the demo first (`make demo`, or `mlops-loop demo --workdir DIR`), then
`.venv/bin/python benchmarks/status_speed.py [DIR/loop.yaml] [--runs N]`. Prints each run's
wall time, the median, where the time of one run goes by phase, and the imports (from
`python -X importtime`).
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
t1 = time.perf_counter()
config = _config(sys.argv[1], check_estimator=False)
t2 = time.perf_counter()
import mlflow  # noqa: F401  (imported by the registry client on first use)
t3 = time.perf_counter()
loop_status(config)
t4 = time.perf_counter()
print(f"{t1 - t0:.2f} {t2 - t1:.2f} {t3 - t2:.2f} {t4 - t3:.2f}")
"""


def phases(config: Path) -> dict[str, float]:
    """Seconds of one status run by phase, in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", PHASES, str(config)],
        capture_output=True,
        text=True,
        env=env(),
        check=True,
    )
    names = ("import mlops_loop", "load config", "import mlflow", "registry and state reads")
    return dict(zip(names, map(float, done.stdout.split()), strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / ".demo" / "loop.yaml"))
    parser.add_argument("--runs", type=int, default=5)
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
    print("one run by phase (s):")
    for name, seconds in phases(config).items():
        print(f"  {name:24} {seconds:.2f}")
    print("imports (cumulative s, top-level packages):")
    for name, seconds in import_seconds(config).items():
        print(f"  {name:24} {seconds:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
