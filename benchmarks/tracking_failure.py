"""How long the loop takes to say a tracking server is unusable: an unreachable one (a closed
port) and one answering HTTP 500 (a local stub), each with the URI holding a password.

Times `MlflowRegistry.champion()` until it raises, in one process: first with MLflow's own
HTTP defaults (MLFLOW_HTTP_REQUEST_MAX_RETRIES=7, _BACKOFF_FACTOR=2, _TIMEOUT=120: the
baseline), then with what the loop sets when the user has not (`HTTP_DEFAULTS`). Prints the
seconds of each, their ratio, and whether the message held the password.

    .venv/bin/python benchmarks/tracking_failure.py [--skip-baseline]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.tracking_stub import PASSWORD, failing_tracking_uri  # noqa: E402

from mlops_loop.core.registry import MlflowRegistry  # noqa: E402
from mlops_loop.core.tracking_errors import HTTP_DEFAULTS  # noqa: E402

MLFLOW_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "120",
}


def time_failure(uri: str, settings: dict[str, str]) -> tuple[float, str]:
    os.environ.update(settings)
    started = time.perf_counter()
    try:
        MlflowRegistry(uri, "benchmark-model").champion()
    except Exception as e:  # the point is how long it takes to be told
        return time.perf_counter() - started, f"{type(e).__name__}: {e}"
    raise RuntimeError(f"{uri} answered; expected a failure")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-baseline", action="store_true", help="only the loop's settings")
    args = parser.parse_args()
    for mode in ("unreachable", "500"):
        with failing_tracking_uri(mode) as uri:
            loop_s, loop_msg = time_failure(uri, HTTP_DEFAULTS)
            print(f"{mode:11}  loop settings : {loop_s:7.2f} s  {loop_msg[:110]}")
            print(f"{'':11}  password shown: {PASSWORD in loop_msg}")
            if args.skip_baseline:
                continue
            base_s, base_msg = time_failure(uri, MLFLOW_DEFAULTS)
            print(f"{'':11}  MLflow's own  : {base_s:7.2f} s  {base_msg[:110]}")
            print(f"{'':11}  password shown: {PASSWORD in base_msg}")
            print(f"{'':11}  ratio (MLflow's / loop's): {base_s / loop_s:.1f}x")


if __name__ == "__main__":
    main()
