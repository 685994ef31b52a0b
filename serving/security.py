"""Bearer tokens and who may see what.

A token is ``otk_<prefix>_<secret>``. Only ``sha256(token)`` is stored; the prefix finds
the row, and the hash is compared in constant time. A hospital's token acts as that
hospital; a user's token acts as that specialist or administrator.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from oncotriage.serving.db.base import utcnow
from oncotriage.serving.db.models import ApiToken, Hospital, Study, User
from oncotriage.serving.enums import HospitalKind, PrincipalKind, Role

TOKEN_PREFIX = "otk"
_TOKEN_RE = re.compile(r"^otk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")


class AuthenticationError(Exception):
    """No valid credentials."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh ``(token, prefix)``; the token is shown once and never stored."""
    prefix = secrets.token_hex(6)
    return f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}", prefix


@dataclass(frozen=True)
class Principal:
    """Who is calling.

    Attributes:
        kind: ``hospital`` (a hospital's system) or ``user`` (a specialist or administrator).
        hospital_id: the hospital the caller acts for (a specialist's centre; None for admins
            without one).
        user_id: the user, for ``kind == "user"``.
        role: the user's role, for ``kind == "user"``.
        name: a display name for audit events (never a patient identifier).
    """

    kind: PrincipalKind
    hospital_id: int | None
    user_id: int | None = None
    role: Role | None = None
    name: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def is_specialist(self) -> bool:
        return self.role is Role.SPECIALIST

    @property
    def is_hospital(self) -> bool:
        return self.kind is PrincipalKind.HOSPITAL

    @property
    def is_community_doctor(self) -> bool:
        return self.role is Role.COMMUNITY_DOCTOR

    @property
    def on_hospital_side(self) -> bool:
        """Acts for one hospital (its system, or a community doctor there), not a centre's
        specialists: sees that hospital's studies and its side of referrals."""
        return self.is_hospital or self.is_community_doctor


def authenticate(session: Session, token: str, *, now: datetime | None = None) -> Principal:
    """The principal a bearer token stands for, or :class:`AuthenticationError`."""
    match = _TOKEN_RE.fullmatch(token.strip())
    if match is None:
        raise AuthenticationError("malformed token")
    row = session.scalar(sa.select(ApiToken).where(ApiToken.prefix == match.group(1)))
    if row is None or not hmac.compare_digest(row.token_hash, hash_token(token.strip())):
        raise AuthenticationError("unknown token")
    now = now or utcnow()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        raise AuthenticationError("token revoked or expired")
    if row.hospital_id is not None:
        hospital = session.get(Hospital, row.hospital_id)
        if hospital is None:
            raise AuthenticationError("token's hospital is gone")
        return Principal(kind=PrincipalKind.HOSPITAL, hospital_id=hospital.id, name=hospital.name)
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        raise AuthenticationError("token's user is gone or inactive")
    return Principal(
        kind=PrincipalKind.USER,
        hospital_id=user.hospital_id,
        user_id=user.id,
        role=user.role,
        name=user.username,
    )


def visible_hospital_ids(session: Session, principal: Principal) -> list[int] | None:
    """Hospitals whose studies ``principal`` may see; ``None`` means all (administrators).

    A hospital (and a community doctor there) sees itself. A specialist sees their centre
    and every community hospital linked to it.
    """
    if principal.is_admin:
        return None
    if principal.hospital_id is None:
        return []
    if principal.on_hospital_side:
        return [principal.hospital_id]
    centre = session.get(Hospital, principal.hospital_id)
    if centre is None:
        return []
    linked = session.scalars(sa.select(Hospital.id).where(Hospital.centre_id == centre.id)).all()
    return [centre.id, *linked]


def study_visibility_clause(session: Session, principal: Principal) -> sa.ColumnElement[bool]:
    """A WHERE clause limiting ``Study`` rows to those ``principal`` may see."""
    ids = visible_hospital_ids(session, principal)
    if ids is None:
        return sa.true()
    return Study.hospital_id.in_(ids)


def centre_of(hospital: Hospital) -> int:
    """The centre a hospital refers to (a centre refers to itself)."""
    if hospital.kind is HospitalKind.CENTRE or hospital.centre_id is None:
        return hospital.id
    return hospital.centre_id
