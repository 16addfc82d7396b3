"""The ASGI app: MLflow's scoring protocol on `POST /invocations`, scored by the champion the
registry names now, every answer handed to the prediction log before it is sent.

`create_app(config)` builds it; `create_app()` without arguments reads the config file named
by $MLOPS_LOOP_SERVE_CONFIG (the factory `uvicorn --factory` and `--workers N` import).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect

from mlops_loop.core.config import LoopConfig
from mlops_loop.serving.batcher import Batcher
from mlops_loop.serving.metrics import ServingMetrics
from mlops_loop.serving.models import AliasFollower, Served
from mlops_loop.serving.request import RequestError, check_features, parse_payload
from mlops_loop.serving.scoring import answer, logged_payload
from mlops_loop.serving.shadow import ShadowScorer
from mlops_loop.serving.sink import NullSink, PredictionSink, make_sink

logger = logging.getLogger(__name__)
CONFIG_ENV = "MLOPS_LOOP_SERVE_CONFIG"
REQUEST_ID = "X-Request-ID"
_VALID_ID = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,127}")


def request_id(sent: str | None) -> str:
    """The caller's X-Request-ID when it is printable ASCII of at most 128 characters, else
    a new one (uuid4 hex)."""
    if sent is not None and _VALID_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


async def _done(result: Awaitable[None] | None) -> None:
    if result is not None and inspect.isawaitable(result):
        await result


def _json(body: dict[str, Any], status: int, rid: str, **kw: Any) -> Response:
    content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(content, status, headers={REQUEST_ID: rid}, media_type="application/json", **kw)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to exceed `limit` bytes: by its Content-Length
    before reading, and while reading (a wrong or absent Content-Length).

    Raises:
        RequestError: 413 over the limit, 400 for an unreadable Content-Length.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError as e:
            raise RequestError(400, f"Content-Length {declared!r} is not a number") from e
        if size > limit:
            raise RequestError(
                413, f"body of {size} bytes; at most {limit} (serving.max_body_bytes)"
            )
    chunks: list[bytes] = []
    read = 0
    try:
        async for chunk in request.stream():
            read += len(chunk)
            if read > limit:
                raise RequestError(413, f"body over {limit} bytes (serving.max_body_bytes)")
            chunks.append(chunk)
    except ClientDisconnect as e:
        raise RequestError(400, "the client disconnected before the body was read") from e
    return b"".join(chunks)


class Endpoint:
    """What the routes share: the config, the models followed, the sink, the metrics."""

    def __init__(self, config: LoopConfig, sink: PredictionSink) -> None:
        self.config = config
        self.columns = config.columns
        self.sink = sink
        self.sink_masks = bool(getattr(sink, "masks_private", False))
        self.sink_bodies = bool(getattr(sink, "keeps_bodies", False))
        self._arecord = getattr(sink, "arecord", None)
        self.metrics = ServingMetrics(backlog=sink.backlog)
        self.follower = AliasFollower(config, self.metrics)
        self.batcher = Batcher(self.columns)
        self.shadow = ShadowScorer(
            lambda: self.follower.challenger, self.columns, self.metrics, self._shadow_record
        )

    async def _log(self, kind: str, payload: dict[str, Any]) -> None:
        """Hand a record to the sink; returns once it is safe."""
        if self._arecord is not None:
            await self._arecord(kind, payload)
        else:
            await _done(self.sink.record(kind, payload))

    async def _shadow_record(self, payload: dict[str, Any]) -> None:
        await self._log("shadow", payload)

    async def _shadow_submit(self, rid: str, features: Any) -> None:
        # A coroutine, so Starlette runs it on the loop after the answer, not in its threadpool.
        self.shadow.submit(rid, features)

    async def start(self) -> None:
        await _done(self.sink.start())
        # The first load before the first request; later moves are followed in the background.
        await asyncio.to_thread(self.follower.poll)
        self.follower.start()
        if self.config.serving.shadow:
            self.shadow.start(asyncio.get_running_loop())
        # What is loaded by now (MLflow, scikit-learn, the model) lives as long as the server:
        # kept out of the cyclic collector's full passes, which otherwise walk all of it each
        # time requests and log rolls have made enough new objects (pauses of tens of ms).
        gc.freeze()

    async def stop(self) -> None:
        self.follower.stop()
        await asyncio.to_thread(self.shadow.stop)
        await _done(self.sink.close())

    async def invocations(self, request: Request) -> Response:
        started, t = time.perf_counter(), time.time()
        rid = request_id(request.headers.get(REQUEST_ID))
        held: Served | None = self.follower.champion  # once: a swap never reaches this request
        extra = 0
        try:
            if held is None:
                raise RequestError(503, "no champion loaded yet; see GET /ready")
            serving = self.config.serving
            table = parse_payload(
                await read_body(request, serving.max_body_bytes), serving.max_rows
            )
            known = {*self.columns.features, self.columns.id, self.columns.timestamp}
            extra = sum(1 for c in table.columns if c not in known)  # counted if refused too
            features = check_features(table, self.columns)
            extra = len(features.extra)
            scores = await self.batcher.score(held, features)
            body = {
                **answer(scores, self.columns),
                "model_version": held.version,
                "request_id": rid,
            }
            # A sink that keeps nothing is not given rows (1 ms of a 1,000-row request's 10).
            keeps = not isinstance(self.sink, NullSink)
            logged = (
                logged_payload(
                    table, scores, self.columns, mask=not self.sink_masks, body=self.sink_bodies
                )
                if keeps
                else {"columns": {}}
            )
            latency_ms = (time.perf_counter() - started) * 1000
            await self._log(
                "req",
                {
                    "t": t,
                    "id": rid,
                    "status": 200,
                    "latency_ms": latency_ms,
                    "version": held.version,
                    **logged,
                    "shadow": None,
                    "extra_columns": extra,
                },
            )
            response = _json(
                body,
                200,
                rid,
                background=BackgroundTask(self._shadow_submit, rid, features)
                if self.config.serving.shadow
                else None,
            )
            self.metrics.rows.inc(features.rows)
            self.metrics.extra_columns.inc(extra)
        except RequestError as e:
            response = _json({**e.body, "request_id": rid}, e.status, rid)
            await self._error(rid, t, started, e.status, extra)
            self.metrics.extra_columns.inc(extra)
        except Exception:
            logger.exception("request %s failed", rid)
            response = _json({"error": "internal error", "request_id": rid}, 500, rid)
            await self._error(rid, t, started, 500, extra)
        self.metrics.answered(response.status_code, time.perf_counter() - started)
        return response

    async def _error(self, rid: str, t: float, started: float, status: int, extra: int) -> None:
        payload = {
            "t": t,
            "id": rid,
            "status": status,
            "latency_ms": (time.perf_counter() - started) * 1000,
            "extra_columns": extra,
        }
        try:
            await self._log("err", payload)
        except Exception:
            logger.exception("the prediction log refused the error record of %s", rid)

    def version(self) -> dict[str, Any]:
        from mlops_loop import __version__

        held = self.follower.champion
        challenger = self.follower.challenger
        return {
            "package_version": __version__,
            "model_name": self.config.mlflow.registered_model,
            "model_version": held.version if held else None,
            "serving_since": _iso(held.since) if held else None,
            "champion_since": held.champion_since if held else None,
            "challenger_version": challenger.version if challenger else None,
        }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def create_app(config: LoopConfig | None = None, sink: PredictionSink | None = None) -> FastAPI:
    """The endpoint for `config` (by default the file $MLOPS_LOOP_SERVE_CONFIG names), logging
    to `sink` (by default the one `serving.log` asks for, `sink.make_sink`)."""
    if config is None:
        config = _config_from_env()
    endpoint = Endpoint(config, sink if sink is not None else make_sink(config))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await endpoint.start()
        try:
            yield
        finally:
            # After the server stopped accepting and answered what was in flight (SIGTERM).
            await endpoint.stop()

    app = FastAPI(
        title=f"mlops-loop: {config.mlflow.registered_model}",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.endpoint = endpoint

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        return await endpoint.invocations(request)

    @app.get("/health")
    async def health() -> Response:
        return JSONResponse({"status": "alive"})

    @app.get("/ready")
    async def ready() -> Response:
        held = endpoint.follower.champion
        if held is None:
            return JSONResponse({"ready": False, "reason": "no champion loaded"}, 503)
        return JSONResponse({"ready": True, "model_version": held.version})

    @app.get("/version")
    async def version() -> Response:
        return JSONResponse(endpoint.version())

    @app.get("/metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(endpoint.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


def _config_from_env() -> LoopConfig:
    from mlops_loop.core.config import load_config
    from mlops_loop.core.errors import InvalidConfigError
    from mlops_loop.core.tracking import resolve_tracking_uri

    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise InvalidConfigError(
            f"create_app() without a config reads the loop YAML ${CONFIG_ENV} names; it is unset"
        )
    return resolve_tracking_uri(load_config(path, check_estimator=False))
