"""The models the endpoint serves, following the registry's aliases.

Each alias' model is held in an immutable `Served` swapped by one reference assignment: a
request reads the holder once when it starts and scores with that, so a swap never changes a
model under a request in flight, and none fails during one. A moved alias is loaded fully, in
the follower's own thread, before the swap; a load that fails keeps the old model serving,
and is logged and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.registry import CHALLENGER, CHAMPION, MlflowRegistry
from mlops_loop.serving.metrics import ServingMetrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """One loaded version of the registered model."""

    model: Any
    version: int
    alias: str
    since: float  # epoch seconds: when this process started serving it
    champion_since: str | None = None  # when the registry made it champion (its tag)
    poll: int = 0  # the follower's check that loaded it (0: the one at start)


class AliasFollower:
    """Loads what `@champion` (and, with shadow, `@challenger`) point at, and follows them."""

    def __init__(self, config: LoopConfig, metrics: ServingMetrics) -> None:
        self.registry = MlflowRegistry.from_config(config)
        self.metrics = metrics
        self.poll_seconds = config.serving.poll_seconds
        self.aliases = (CHAMPION, CHALLENGER) if config.serving.shadow else (CHAMPION,)
        self.champion: Served | None = None
        self.challenger: Served | None = None
        self.polls = 0  # checks completed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        """Check the aliases once; load and swap in any version they moved to. Never raises:
        an unreachable registry or a failed load is logged and counted, and what serves stays."""
        try:
            self._poll()
        finally:
            self.polls += 1

    def _poll(self) -> None:
        try:
            view = self.registry.view(direct=True)
        except Exception:
            logger.exception("cannot read the aliases of %r", self.registry.model_name)
            self.metrics.load_failed("registry")
            return
        for alias in self.aliases:
            target = view.aliases.get(alias)
            current: Served | None = getattr(self, alias)
            if target is None:
                if alias == CHALLENGER and current is not None:
                    self.challenger = None  # no challenger now: nothing to shadow
                    self.metrics.served(alias, None)
                elif alias == CHAMPION and current is not None:
                    logger.warning(
                        "the champion alias of %r is gone; still serving v%d",
                        self.registry.model_name,
                        current.version,
                    )
                continue
            if current is not None and current.version == target:
                continue
            since = (view.version_tags.get(target) or {}).get("mlops_loop.champion_since")
            self._load(alias, target, since if alias == CHAMPION else None)

    def _load(self, alias: str, version: int, champion_since: str | None) -> None:
        try:
            # By number, not by alias: the alias may move again while this loads.
            model = self.registry.load(version)
        except Exception:
            logger.exception(
                "loading v%d of %r (@%s) failed; keeping what serves",
                version,
                self.registry.model_name,
                alias,
            )
            self.metrics.load_failed(alias)
            return
        served = Served(model, version, alias, time.time(), champion_since, self.polls)
        setattr(self, alias, served)  # the swap: one reference assignment
        self.metrics.served(alias, version)
        logger.info("serving v%d of %r as @%s", version, self.registry.model_name, alias)

    def start(self) -> None:
        """Poll every `poll_seconds` in a daemon thread until `stop`."""
        self._thread = threading.Thread(target=self._run, name="alias-follower", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.poll()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
