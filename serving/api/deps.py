"""FastAPI dependencies as ``Annotated`` aliases: the session, the caller, the app's parts."""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from sqlalchemy.orm import Session

from oncotriage.serving.audit import ReadTrail
from oncotriage.serving.db.session import Database
from oncotriage.serving.errors import ServiceError
from oncotriage.serving.modelset import ModelSet
from oncotriage.serving.security import AuthenticationError, Principal, authenticate, hash_token
from oncotriage.serving.settings import Settings
from oncotriage.serving.storage import ContentStore

#: The largest id or offset the API takes: the database's 32-bit integer columns (a larger
#: number was an OverflowError, a 500, before every integer parameter was bounded).
MAX_DB_INT = 2**31 - 1

Skip = Annotated[int, Query(ge=0, le=MAX_DB_INT, description="Rows to skip.")]
Limit = Annotated[int, Query(ge=1, le=500, description="Rows to return (at most 500).")]
#: A row id in a path (a number beyond the database's integers is a 422, not a 500).
RowId = Annotated[int, Path(ge=1, le=MAX_DB_INT)]
HospitalFilter = Annotated[
    int | None, Query(ge=1, le=MAX_DB_INT, description="Only this hospital's studies.")
]

_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer otk_...`")
_basic = HTTPBasic(
    auto_error=False,
    realm="oncotriage DICOMweb",
    description="DICOMweb routes only, for a PACS or viewer that cannot send a bearer token: "
    "any user name, the API token as the password.",
)


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Database:
    return request.app.state.db


def get_store(request: Request) -> ContentStore:
    return request.app.state.store


def get_models(request: Request) -> ModelSet:
    return request.app.state.models


def get_session(db: Annotated[Database, Depends(get_db)]) -> Iterator[Session]:
    """A session per request; handlers commit what they change (data-access functions do).

    It ends when the handler returns, before the answer is sent (``scope="function"``), so a
    slow client never holds a transaction, a row lock or SQLite's write lock. A refusal
    (:class:`~oncotriage.serving.errors.ServiceError`) is rolled back here, before
    ``create_app``'s handler answers it; anything else uncommitted is discarded on close
    (where a lost connection cannot raise again over the original error).
    """
    with db.sessionmaker() as session:
        try:
            yield session
        except ServiceError:
            session.rollback()
            raise


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
DatabaseDep = Annotated[Database, Depends(get_db)]
StoreDep = Annotated[ContentStore, Depends(get_store)]
InferenceDep = Annotated[ModelSet, Depends(get_models)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def unprocessable(message: str, *loc: str | int) -> RequestValidationError:
    """A 422 whose body has the same shape as FastAPI's own validation errors
    (``{"detail": [{"type", "loc", "msg"}]}``), so every 422 matches one schema."""
    return RequestValidationError([{"type": "value_error", "loc": list(loc), "msg": message}])


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def get_trail(request: Request) -> ReadTrail:
    return request.app.state.audit


TrailDep = Annotated[ReadTrail, Depends(get_trail)]


class TokenCache:
    """Principals of recently seen tokens, for ``ttl_s`` seconds (by the token's hash).

    Saves a database round trip on every request of a polling client; a revoked token keeps
    working for at most ``ttl_s``.
    """

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> Principal | None:
        if self.ttl_s <= 0:
            return None
        key = hash_token(token)
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, token: str, principal: Principal) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[hash_token(token)] = (principal, time.monotonic() + self.ttl_s)


def _principal_for(
    request: Request,
    session: Session,
    token: str,
    unauthorized: Callable[[str], HTTPException] = _unauthorized,
) -> Principal:
    cache: TokenCache = request.app.state.token_cache
    cached = cache.get(token)
    if cached is not None:
        return cached
    try:
        principal = authenticate(session, token)
    except AuthenticationError as error:
        raise unauthorized(f"invalid token: {error}") from None
    # End the read transaction now: on SQLite it holds the database's write lock.
    session.commit()
    cache.put(token, principal)
    return principal


def get_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from ``Authorization: Bearer <token>``; 401 without a valid token."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        sent = request.headers.get("authorization", "")
        if sent[:6].lower() == "basic ":
            raise _unauthorized(
                "HTTP Basic is accepted on /dicomweb routes only; send Authorization: "
                "Bearer <token>"
            )
        raise _unauthorized("missing bearer token")
    return _principal_for(request, session, credentials.credentials)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def _dicomweb_unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": 'Bearer, Basic realm="oncotriage DICOMweb"'},
    )


def get_dicomweb_principal(
    request: Request,
    session: SessionDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    basic: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
) -> Principal:
    """The caller of a DICOMweb route: ``Authorization: Bearer <token>``, or HTTP Basic with
    the token as the password (any user name), which is what many PACS and viewers can be
    configured to send. 401 without a valid token."""
    if bearer is not None and bearer.scheme.lower() == "bearer":
        token = bearer.credentials
    elif basic is not None and basic.password:
        token = basic.password
    else:
        raise _dicomweb_unauthorized(
            "missing token: send Authorization: Bearer <token>, or HTTP Basic with the token "
            "as the password"
        )
    return _principal_for(request, session, token, _dicomweb_unauthorized)


DicomwebPrincipal = Annotated[Principal, Depends(get_dicomweb_principal)]


def get_dicomweb_hospital(principal: DicomwebPrincipal) -> Principal:
    """A hospital's system on a DICOMweb route (STOW-RS); 403 for people."""
    return get_hospital(principal)


DicomwebHospital = Annotated[Principal, Depends(get_dicomweb_hospital)]


def get_hospital(principal: CurrentPrincipal) -> Principal:
    """A hospital's system (403 for people: studies are submitted by hospitals)."""
    if not principal.is_hospital or principal.hospital_id is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs a hospital's token")
    return principal


def get_specialist(principal: CurrentPrincipal) -> Principal:
    """A specialist (or an administrator); 403 for hospital tokens."""
    if not (principal.is_specialist or principal.is_admin):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs a specialist's token")
    return principal


def require_metrics_reader(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """``/metrics`` readers: the metrics token (``ONCOTRIAGE_METRICS_TOKEN``), which is what
    a Prometheus scrape job sends, or an administrator's API token. 401 or 403 otherwise:
    the counts by hospital are the union's business, not the public's."""
    settings: Settings = request.app.state.settings
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing bearer token: /metrics needs the metrics token")
    expected = settings.metrics_token
    if expected is not None and hmac.compare_digest(
        credentials.credentials.encode(), expected.get_secret_value().encode()
    ):
        return
    principal = get_principal(request, session, credentials)
    if not principal.is_admin:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "/metrics needs the metrics token or an administrator"
        )


CurrentHospital = Annotated[Principal, Depends(get_hospital)]
CurrentSpecialist = Annotated[Principal, Depends(get_specialist)]
