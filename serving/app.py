"""The app factory: ``create_app(settings) -> FastAPI``.

On startup (FastAPI lifespan) the schema is migrated to the latest revision, the image
store folder is created, and, with ``embedded_workers > 0``, the model is loaded, the
registry alias is followed and worker threads start. With ``embedded_workers = 0`` the
process only serves the API and separate ``oncotriage worker`` processes do the work. With
``dicom_listener_port`` set, the DICOM listener (C-ECHO, C-STORE) runs in the process too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy import exc as sa_exc
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oncotriage import __version__
from oncotriage.serving.api.contract import (
    DicomwebCorsMiddleware,
    OptionsMiddleware,
    install_openapi,
    negotiate,
)
from oncotriage.serving.api.deps import TokenCache
from oncotriage.serving.api.routes import API_ROUTERS
from oncotriage.serving.audit import ReadTrail
from oncotriage.serving.db.migrate import upgrade
from oncotriage.serving.db.session import Database
from oncotriage.serving.delivery import WebhookSender
from oncotriage.serving.errors import ServiceError
from oncotriage.serving.inference import ModelUnavailableError, RunnerFactory
from oncotriage.serving.metrics import ServiceMetrics
from oncotriage.serving.modelset import ModelSet
from oncotriage.serving.pool import WorkerPool
from oncotriage.serving.settings import Settings, get_settings
from oncotriage.serving.storage import open_store
from oncotriage.serving.thread_priority import run_behind_model

if TYPE_CHECKING:
    from oncotriage.serving.listener import DicomListener

logger = logging.getLogger(__name__)

DESCRIPTION = """\
AI-assisted early cancer screening for a medical union. Community hospitals submit DICOM
studies (DICOMweb STOW-RS or `POST /v1/studies`); a detector scores each one; flagged
studies wait on the centre's worklist, where specialists claim and decide them.

Authenticate with `Authorization: Bearer <token>` (`oncotriage admin issue-token`).
Models here are trained on synthetic images: **not for clinical use**.
"""


class RequestTooLargeError(Exception):
    """The request body passed ``max_request_bytes``."""


class BodySizeLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413, by ``Content-Length`` or while streaming
    (chunked uploads have no length up front)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._too_large(send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestTooLargeError()
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except RequestTooLargeError:
            if started:
                raise
            await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body over {self.max_bytes} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class ObservabilityMiddleware:
    """Counts, times and logs every request under its route template (never the raw path,
    which may hold a Study Instance UID)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope.get("method", "")
            self.metrics.observe(method, route, status, elapsed)
            logger.info(
                "%s %s %d",
                method,
                route,
                status,
                extra={
                    "fields": {
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 1),
                    }
                },
            )


def create_app(
    settings: Settings | None = None,
    *,
    runner_factory: RunnerFactory | None = None,
    webhook_sender: WebhookSender | None = None,
    migrate: bool = True,
) -> FastAPI:
    """Build the service.

    Args:
        settings: default :func:`get_settings` (the environment).
        runner_factory: network runner per model version (default from the settings).
        webhook_sender: overrides how the embedded workers POST webhooks.
        migrate: run Alembic migrations on startup.
    """
    settings = settings or get_settings()
    db = Database(settings.database_url)
    store = open_store(settings)
    models = ModelSet.from_settings(settings, runner_factory)
    metrics = ServiceMetrics(db, models)
    trail = ReadTrail(db, nice=settings.service_thread_nice)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Start-up work runs on the event loop's own executor, not the request thread pool,
        # so that every request thread is created after the loop thread lowers its priority
        # below (serving/thread_priority.py); the model is loaded at the base priority (ONNX
        # Runtime's intra-op threads inherit the loading thread's).
        if migrate:
            await asyncio.to_thread(upgrade, settings.database_url)
        store.root.mkdir(parents=True, exist_ok=True)
        trail.start()
        pool: WorkerPool | None = None
        if settings.embedded_workers > 0:
            try:
                await asyncio.to_thread(models.refresh)
            except ModelUnavailableError as error:
                logger.error("no model yet (jobs wait for one; /readyz says why): %s", error)
            models.start_polling()
            pool = WorkerPool(
                settings,
                db,
                store,
                models,
                settings.embedded_workers,
                webhook_sender=webhook_sender,
            )
            pool.start()
        # The model threads exist now; the event loop (HTTP) and the request threads it
        # creates from here on run behind them.
        run_behind_model(settings.service_thread_nice, "ot-http")
        listener = _start_dicom_listener(app, settings, db, store)
        logger.info(
            "oncotriage %s serving (database %s, %d embedded workers)",
            __version__,
            db.engine.dialect.name,
            settings.embedded_workers,
        )
        try:
            yield
        finally:
            if listener is not None:
                await run_in_threadpool(listener.stop)
            if pool is not None:
                await run_in_threadpool(pool.stop)
            models.stop()
            await run_in_threadpool(trail.stop)
            db.dispose()

    app = FastAPI(
        title="oncotriage",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(negotiate)],
        openapi_tags=[
            {
                "name": "dicomweb",
                "description": "DICOMweb: STOW-RS intake, QIDO-RS search, WADO-RS retrieval "
                "(Bearer, or HTTP Basic with the token as the password).",
            },
            {"name": "studies", "description": "Submitted studies, results and reports."},
            {"name": "worklist", "description": "The specialists' flagged queue and claims."},
            {"name": "reviews", "description": "Specialists' decisions."},
            {"name": "referrals", "description": "Referrals from hospitals to their centre."},
            {"name": "operations", "description": "Health, readiness, metrics."},
        ],
    )
    app.state.settings = settings
    app.state.db = db
    app.state.store = store
    app.state.models = models
    app.state.metrics = metrics
    app.state.audit = trail
    app.state.token_cache = TokenCache(settings.auth_cache_s)

    @app.exception_handler(RequestTooLargeError)
    async def _too_large(request: Request, exc: RequestTooLargeError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"request body over {settings.max_request_bytes} bytes"}, status_code=413
        )

    @app.exception_handler(sa_exc.OperationalError)
    @app.exception_handler(sa_exc.InterfaceError)
    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        # The database went away (restart, failover, network): nothing of this request was
        # kept, and the pool reconnects by itself; the sender retries.
        logger.warning("database unavailable: %s", str(exc).splitlines()[0][:300])
        return JSONResponse(
            {"detail": "the database is unavailable for a moment; nothing was kept, retry"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(ServiceError)
    async def _refused(request: Request, exc: ServiceError) -> JSONResponse:
        # Not found, conflict, forbidden, unusable input: the status and message the data
        # access layer chose (serving/errors.py). The session was rolled back on the way here
        # (get_session), so nothing of the refused request is kept.
        return JSONResponse(exc.body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input, and a NaN or infinite number in it cannot
        # be written as JSON (a 500 instead of the 422): echo such numbers as text.
        return JSONResponse(
            {"detail": _finite_json(jsonable_encoder(exc.errors()))}, status_code=422
        )

    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(OptionsMiddleware, router_app=app)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
    if settings.dicomweb_cors_origin_list:
        # outermost: a browser's preflight is answered before OPTIONS reaches the API
        app.add_middleware(DicomwebCorsMiddleware, origins=settings.dicomweb_cors_origin_list)

    for router in API_ROUTERS:
        app.include_router(router)
    web_router = _web_router()
    if web_router is not None:
        app.include_router(web_router)

    @app.get("/", include_in_schema=False)
    def _root() -> RedirectResponse:
        return RedirectResponse("/ui" if web_router is not None else "/docs")

    install_openapi(app)
    return app


def _start_dicom_listener(
    app: FastAPI, settings: Settings, db: Database, store: Any
) -> DicomListener | None:
    """The DICOM listener inside ``serve`` when ``dicom_listener_port`` is set (0: a free
    port); its address is ``app.state.dicom_listener_address``."""
    app.state.dicom_listener_address = None
    if settings.dicom_listener_port is None:
        return None
    from oncotriage.serving.listener import DicomListener

    listener = DicomListener(settings, db, store, ae_title=settings.dicom_listener_ae_title)
    app.state.dicom_listener_address = listener.start(
        settings.dicom_listener_host, settings.dicom_listener_port
    )
    return listener


def _finite_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by its text (``"nan"``, ``"inf"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_finite_json(item) for item in value]
    if isinstance(value, dict):
        return {key: _finite_json(item) for key, item in value.items()}
    return value


def _web_router() -> Any:
    """The browser pages' router (``serving/web``), when that package is present."""
    try:
        from oncotriage.serving.web.routes import router
    except ModuleNotFoundError as error:
        if error.name and error.name.startswith("oncotriage.serving.web"):
            return None
        raise
    return router
