"""Operations: liveness and readiness (no authentication), Prometheus metrics (the metrics
token or an administrator)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from oncotriage.serving.api.deps import (
    DatabaseDep,
    InferenceDep,
    SettingsDep,
    StoreDep,
    require_metrics_reader,
)
from oncotriage.serving.api.schemas import HealthPublic, Message, ReadinessPublic
from oncotriage.serving.metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=HealthPublic)
def healthz() -> HealthPublic:
    """Liveness: the process answers."""
    return HealthPublic(status="ok")


def _check(fn: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = fn()
    except Exception as error:
        return {"ok": False, "error": str(error)[:500]}
    result: dict[str, Any] = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}
    if isinstance(detail, dict):
        result.update(detail)
    return result


@router.get(
    "/readyz",
    response_model=ReadinessPublic,
    responses={503: {"model": ReadinessPublic, "description": "Not ready."}},
)
async def readyz(
    db: DatabaseDep, store: StoreDep, models: InferenceDep, settings: SettingsDep
) -> Response:
    """Readiness: the database answers, the image store takes writes, the model loads.

    Each route names the version it serves, its precision (``fp32``, or an accepted
    ``bf16``/``int8`` variant of the alias's ``base_version``) and why that precision.

    The model check loads the current version when this process runs workers; an
    API-only process (``embedded_workers=0``) checks that the model URI resolves.
    """

    def model_check() -> dict[str, Any]:
        served: dict[str, dict[str, str]] = {}
        for route_name, manager in models.managers.items():
            if settings.embedded_workers > 0:
                loaded = manager.current()
                entry = {"model": loaded.name, "version": loaded.version}
            else:
                resolved = manager.resolve()
                entry = {"model": resolved.name, "version": str(resolved.version)}
            choice = manager.precision_choice
            if choice is not None:
                entry.update(
                    precision=choice.precision,
                    base_version=choice.base_version,
                    precision_reason=choice.reason,
                )
            served[route_name] = entry
        first = next(iter(served.values()))
        return {**first, "routes": served}

    checks = {
        "database": await run_in_threadpool(_check, db.ping),
        "store": await run_in_threadpool(_check, store.check_writable),
        "model": await run_in_threadpool(_check, model_check),
    }
    ready = all(check["ok"] for check in checks.values())
    body = ReadinessPublic(status="ready" if ready else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(require_metrics_reader)],
    responses={
        200: {"content": {CONTENT_TYPE: {}}},
        401: {"model": Message, "description": "No token, or not a valid one."},
        403: {"model": Message, "description": "A token that is not allowed to read metrics."},
    },
)
async def metrics(request: Request) -> Response:
    """Prometheus exposition format. Send ``Authorization: Bearer <ONCOTRIAGE_METRICS_TOKEN>``
    (Prometheus: ``authorization: {credentials: ...}`` in the scrape job) or an
    administrator's API token."""
    payload = await run_in_threadpool(request.app.state.metrics.render)
    return Response(payload, media_type=CONTENT_TYPE)
