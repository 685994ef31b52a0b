"""Requests the service refuses for a reason the caller can act on.

Data-access functions raise these; ``create_app`` maps each kind to its HTTP status once
(:func:`error_response`), so routes hold no ``try``/``except`` for them. The request's
session is rolled back on the way out (``get_session``) before the answer is written.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    """Base of the refusals; ``status_code`` is the HTTP answer, ``detail`` its message."""

    status_code: ClassVar[int] = 400

    @property
    def detail(self) -> str:
        return str(self)

    def body(self) -> dict[str, Any]:
        """The JSON body of the answer (``{"detail": ...}``, as FastAPI's own errors)."""
        return {"detail": self.detail}


class NotFoundError(ServiceError, LookupError):
    """No such thing for this caller (also when it is another hospital's: same answer, so
    a caller cannot learn that it exists elsewhere). The detail names only the kind."""

    status_code = 404
    #: what was not found, e.g. ``"study"`` (the argument, e.g. an id, is not echoed)
    kind: ClassVar[str] = "resource"

    @property
    def detail(self) -> str:
        return f"{self.kind} not found"


class ConflictError(ServiceError):
    """The request does not fit the current state (someone else's claim, a decided case)."""

    status_code = 409


class ForbiddenError(ServiceError, PermissionError):
    """The caller may not do this (the message says who may)."""

    status_code = 403


class InputError(ServiceError, ValueError):
    """The request is well formed but cannot be used as it is (422, the message says why)."""

    status_code = 422


class FieldInputError(InputError):
    """An :class:`InputError` about one part of the request, answered in the shape of
    FastAPI's own validation errors (``{"detail": [{"type", "loc", "msg"}]}``)."""

    #: where in the request, as in a validation error's ``loc`` (e.g. ``("query",)``)
    loc: ClassVar[tuple[str | int, ...]] = ("body",)

    def body(self) -> dict[str, Any]:
        return {"detail": [{"type": "value_error", "loc": list(self.loc), "msg": self.detail}]}
