"""`mlops-loop serve`: the endpoint under uvicorn, in one process or `workers` of them."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from mlops_loop.core.config import LoopConfig
from mlops_loop.serving.app import CONFIG_ENV, create_app

FACTORY = "mlops_loop.serving.app:create_app"


def serve(
    config: LoopConfig,
    config_path: str | Path,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT: stop accepting, answer what is in flight, close the
    prediction log, return 0. `host`, `port` and `workers` override `config.serving`'s."""
    import uvicorn

    # One OpenMP thread per call (before scikit-learn loads): concurrent requests already keep
    # the cores busy, and a histogram-gradient-boosting predict of one row on a thread pool
    # spends longer waking its threads than scoring (about 3x slower on busy cores). Set
    # OMP_NUM_THREADS to choose otherwise.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    settings = config.serving
    workers = workers or settings.workers
    # Each worker process builds its app from the file (the factory reads it from here).
    os.environ[CONFIG_ENV] = str(Path(config_path).resolve())
    options: dict[str, Any] = {
        "host": host or settings.host,
        "port": settings.port if port is None else port,
        "lifespan": "on",
        # The prediction log is the record of every request; a line per request costs throughput.
        "access_log": False,
        "timeout_graceful_shutdown": None,  # in-flight requests are always answered
    }
    # uvicorn re-raises the signal it shut down on once it has restored the previous handler;
    # with the default one the process would die by SIGTERM instead of exiting 0.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        if workers > 1:
            uvicorn.run(FACTORY, factory=True, workers=workers, **options)
        else:
            uvicorn.run(create_app(config), **options)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
