"""Hospitals, users and tokens: what ``oncotriage admin ...`` and tests call."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from oncotriage.serving import audit
from oncotriage.serving.db.models import ApiToken, Hospital, ReferralLicence, User
from oncotriage.serving.enums import AuditAction, HospitalKind, Role
from oncotriage.serving.security import hash_token, new_token

_MIN_WEBHOOK_SECRET = 16


class AccountError(ValueError):
    """A request to create or change an account that cannot be done as asked."""


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued token. ``token`` exists only here; the database keeps its hash."""

    id: int
    token: str
    prefix: str


def create_hospital(
    session: Session,
    name: str,
    kind: HospitalKind | str = HospitalKind.COMMUNITY,
    *,
    centre: str | None = None,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
) -> Hospital:
    """Add a hospital. A community hospital names its centre (an existing centre).

    A webhook URL without a secret gets a random one (read it back with ``show-hospital``).
    """
    kind = HospitalKind(kind)
    if session.scalar(sa.select(Hospital).where(Hospital.name == name)) is not None:
        raise AccountError(f"a hospital named {name!r} already exists")
    centre_row = None
    if centre is not None:
        centre_row = session.scalar(sa.select(Hospital).where(Hospital.name == centre))
        if centre_row is None or centre_row.kind is not HospitalKind.CENTRE:
            raise AccountError(f"no centre named {centre!r}; create it with --kind centre first")
        if kind is HospitalKind.CENTRE:
            raise AccountError("a centre does not belong to another centre")
    if webhook_url is not None:
        if not webhook_url.startswith(("http://", "https://")):
            raise AccountError("webhook URL must start with http:// or https://")
        if webhook_secret is None:
            webhook_secret = secrets.token_urlsafe(32)
        elif len(webhook_secret) < _MIN_WEBHOOK_SECRET:
            raise AccountError(f"webhook secret must be at least {_MIN_WEBHOOK_SECRET} characters")
    hospital = Hospital(
        name=name,
        kind=kind,
        centre_id=centre_row.id if centre_row else None,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
    )
    session.add(hospital)
    session.flush()
    return hospital


def create_user(
    session: Session,
    username: str,
    role: Role | str = Role.SPECIALIST,
    *,
    hospital: str | None = None,
    display_name: str = "",
) -> User:
    """Add a user. A specialist works at a centre, a community doctor at a community
    hospital of a union (``hospital`` names it)."""
    role = Role(role)
    if session.scalar(sa.select(User).where(User.username == username)) is not None:
        raise AccountError(f"a user named {username!r} already exists")
    hospital_row = None
    if hospital is not None:
        hospital_row = session.scalar(sa.select(Hospital).where(Hospital.name == hospital))
        if hospital_row is None:
            raise AccountError(f"no hospital named {hospital!r}")
    if role is Role.SPECIALIST and (
        hospital_row is None or hospital_row.kind is not HospitalKind.CENTRE
    ):
        raise AccountError("a specialist works at a centre: pass --centre NAME of a centre")
    if role is Role.COMMUNITY_DOCTOR and (
        hospital_row is None
        or hospital_row.kind is not HospitalKind.COMMUNITY
        or hospital_row.centre_id is None
    ):
        raise AccountError(
            "a community doctor works at a community hospital of a union: pass --hospital "
            "NAME of a community hospital that names its centre"
        )
    user = User(
        username=username,
        role=role,
        hospital_id=hospital_row.id if hospital_row else None,
        display_name=display_name or username,
    )
    session.add(user)
    session.flush()
    return user


def issue_token(
    session: Session,
    *,
    hospital: str | None = None,
    user: str | None = None,
    label: str = "",
    expires_at: datetime | None = None,
) -> IssuedToken:
    """A new bearer token for a hospital (its systems) or a user. Exactly one must be given."""
    if (hospital is None) == (user is None):
        raise AccountError("issue a token for exactly one of --hospital or --user")
    row = ApiToken(label=label, expires_at=expires_at)
    if hospital is not None:
        hospital_row = session.scalar(sa.select(Hospital).where(Hospital.name == hospital))
        if hospital_row is None:
            raise AccountError(f"no hospital named {hospital!r}")
        row.hospital_id = hospital_row.id
    else:
        user_row = session.scalar(sa.select(User).where(User.username == user))
        if user_row is None:
            raise AccountError(f"no user named {user!r}")
        row.user_id = user_row.id
    token, prefix = new_token()
    row.prefix = prefix
    row.token_hash = hash_token(token)
    session.add(row)
    session.flush()
    return IssuedToken(id=row.id, token=token, prefix=prefix)


def revoke_token(session: Session, prefix: str, *, at: datetime) -> bool:
    """Revoke the token with this prefix; False if there is none."""
    row = session.scalar(sa.select(ApiToken).where(ApiToken.prefix == prefix))
    if row is None:
        return False
    row.revoked_at = at
    return True


def grant_licence(
    session: Session, username: str, valid_until: datetime, *, now: datetime
) -> ReferralLicence:
    """Record that ``username`` may create, accept and return referrals until
    ``valid_until`` (audited)."""
    user = session.scalar(sa.select(User).where(User.username == username))
    if user is None:
        raise AccountError(f"no user named {username!r}")
    if valid_until <= now:
        raise AccountError("a licence must be valid until a date in the future")
    licence = ReferralLicence(user_id=user.id, valid_until=valid_until, granted_at=now)
    session.add(licence)
    audit.record(
        session,
        None,
        AuditAction.LICENCE_GRANTED,
        detail={"user": username, "valid_until": valid_until.isoformat()},
    )
    session.flush()
    return licence
