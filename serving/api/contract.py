"""The HTTP contract every route keeps, in one place: content negotiation (406), ``OPTIONS``,
and the error answers the OpenAPI description documents for each operation.

A hostile or clumsy client found the description and the service apart: 401/404/406/413 not
documented, ``Accept: application/xml`` answered with JSON, ``OPTIONS`` a 405. Routes declare
what they produce (``response_class`` or the ``content`` of their 200 answer); this module
derives the rest from that, so a new route cannot drift.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.datastructures import DefaultPlaceholder
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from oncotriage.serving.dicomweb import DICOM_JSON, DICOM_XML, parse_media_type

#: Plain names a client may use for the DICOM media types a route produces.
_ALIASES = {"application/json": DICOM_JSON, "application/xml": DICOM_XML}


def produces(route: APIRoute) -> set[str] | None:
    """Media types ``route`` answers with, or ``None`` where the route does not say (it
    negotiates itself, e.g. WADO-RS multipart)."""
    codes: list[int | str] = [200, "200"]
    if route.status_code is not None:
        codes += [route.status_code, str(route.status_code)]
    for code in codes:
        content = (route.responses.get(code) or {}).get("content")
        if content:
            return {str(media) for media in content}
    response_class = route.response_class
    if isinstance(response_class, DefaultPlaceholder):
        response_class = response_class.value
    media = getattr(response_class, "media_type", None)
    return {media} if media else None


def _acceptable(accept: str, offered: set[str]) -> bool:
    for item in accept.split(","):
        media, params = parse_media_type(item)
        if not media or params.get("q", "1").strip() in {"0", "0.0", "0.00", "0.000"}:
            continue
        media = _ALIASES.get(media, media) if _ALIASES.get(media) in offered else media
        if media == "*/*" or media in offered:
            return True
        if media.endswith("/*") and any(o.startswith(media[:-1]) for o in offered):
            return True
    return False


def negotiate(request: Request) -> None:
    """406 when ``Accept`` names nothing this route produces (no ``Accept``: anything)."""
    accept = request.headers.get("accept")
    route = request.scope.get("route")
    if not accept or not isinstance(route, APIRoute):
        return
    offered = produces(route)
    if offered is None or _acceptable(accept, offered):
        return
    raise HTTPException(
        status.HTTP_406_NOT_ACCEPTABLE,
        f"this answers with {' or '.join(sorted(offered))}; the Accept header asked for {accept}",
    )


class DicomwebCorsMiddleware:
    """CORS (Starlette's) for ``/dicomweb`` only, for the origins in
    ``ONCOTRIAGE_DICOMWEB_CORS_ORIGINS``: a web viewer on another origin can query and
    retrieve with its ``Authorization`` header; every other route stays same-origin."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        from starlette.middleware.cors import CORSMiddleware

        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Accept", "Content-Type"],
            expose_headers=["Content-Type", "Content-Length", "Warning", "Location"],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith("/dicomweb"):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class OptionsMiddleware:
    """``OPTIONS`` on a documented path answers 204 with the methods it takes in ``Allow``
    (was a 405 whose ``Allow`` named one method). The methods come from the OpenAPI
    description, so the two cannot disagree."""

    def __init__(self, app: ASGIApp, router_app: FastAPI) -> None:
        self.app = app
        self.router_app = router_app
        self._paths: list[tuple[re.Pattern[str], str]] | None = None

    def _allowed(self, path: str) -> set[str]:
        if self._paths is None:
            self._paths = [
                (
                    re.compile("^" + re.sub(r"\\{[^/}]+\\}", "[^/]+", re.escape(template)) + "$"),
                    method.upper(),
                )
                for template, operations in self.router_app.openapi()["paths"].items()
                for method in operations
            ]
        return {method for pattern, method in self._paths if pattern.match(path)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "OPTIONS":
            await self.app(scope, receive, send)
            return
        methods = self._allowed(scope["path"])
        if not methods:
            await self.app(scope, receive, send)
            return
        allow = ", ".join(sorted(methods | {"OPTIONS"}))
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [(b"allow", allow.encode())],
            }
        )
        await send({"type": "http.response.body", "body": b""})


_MESSAGE = {"$ref": "#/components/schemas/Message"}
_ERRORS = {
    "400": "The body could not be read: malformed JSON or multipart.",
    "401": "No token, or not a valid one (`Authorization: Bearer <token>`).",
    "403": "The token's role may not do this (a hospital's token on a specialist's route, or "
    "the reverse).",
    "404": "No such resource, or not yours (the service does not say which).",
    "406": "The `Accept` header names nothing this operation answers with.",
    "413": "The request body is over the service's limit.",
    "503": "The database is unavailable for a moment (restart, failover); nothing of the "
    "request was kept: retry after Retry-After seconds.",
}


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the error answers every operation can give to the OpenAPI ``schema`` (in place),
    and make every 422 match the one validation-error shape."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault(
        "Message",
        {
            "title": "Message",
            "type": "object",
            "properties": {"detail": {"title": "Detail", "type": "string"}},
            "required": ["detail"],
        },
    )
    validation = {"$ref": "#/components/schemas/ValidationErrorsPublic"}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            wanted = ["406", "503"]
            if operation.get("security"):
                wanted += ["401", "403"]
            if "{" in path:
                wanted.append("404")
            if "requestBody" in operation:
                wanted += ["400", "413"]
            for code in wanted:
                responses.setdefault(
                    code,
                    {
                        "description": _ERRORS[code],
                        "content": {"application/json": {"schema": _MESSAGE}},
                    },
                )
            invalid = responses.get("422")
            if invalid is None:
                continue
            if "ValidationErrorsPublic" in components:
                json_schema = invalid.setdefault("content", {}).setdefault(
                    "application/json", {"schema": validation}
                )
                own = json_schema.get("schema")
                if (
                    own
                    and own != validation
                    and own.get("$ref", "").split("/")[-1] in ("HTTPValidationError",)
                ):
                    json_schema["schema"] = validation
                elif own and own != validation and "anyOf" not in own:
                    json_schema["schema"] = {"anyOf": [own, validation]}
    return schema


def install_openapi(app: FastAPI) -> None:
    """The app's ``/openapi.json`` with :func:`document_errors` applied (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                    tags=app.openapi_tags,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
