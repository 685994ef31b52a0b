"""Calling AE titles: which hospital a DICOM association comes from.

A modality or PACS names itself by its AE title when it opens an association with the
DICOM listener (:mod:`oncotriage.serving.listener`). Each AE title the listener accepts is
mapped to exactly one hospital (``oncotriage admin set-ae-title``); what arrives on that
association is that hospital's, exactly as if its API token had sent it by STOW-RS. An AE
title that is not mapped is rejected at association.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from oncotriage.serving.accounts import AccountError
from oncotriage.serving.db.models import AeTitle, Hospital
from oncotriage.serving.enums import PrincipalKind
from oncotriage.serving.security import Principal

#: PS3.5 6.2, VR AE: at most 16 characters of the default repertoire, no backslash or
#: control characters; leading and trailing spaces are not significant.
MAX_AE_TITLE_LENGTH = 16


def normalise_ae_title(value: str) -> str:
    """``value`` without insignificant spaces, checked against the AE value representation.

    Raises:
        AccountError: empty, longer than 16 characters, or with characters an AE title
            cannot hold; the message says which.
    """
    title = value.strip(" ")
    if not title:
        raise AccountError("an AE title cannot be empty")
    if len(title) > MAX_AE_TITLE_LENGTH:
        raise AccountError(
            f"AE title {title!r} is {len(title)} characters; DICOM allows at most "
            f"{MAX_AE_TITLE_LENGTH}"
        )
    bad = sorted({char for char in title if char == "\\" or not (" " <= char <= "~")})
    if bad:
        raise AccountError(
            f"AE title {title!r} holds {', '.join(repr(char) for char in bad)}; use letters, "
            "digits and punctuation of ASCII (no backslash)"
        )
    return title


def set_ae_title(session: Session, hospital: str, ae_title: str) -> AeTitle:
    """Map ``ae_title`` to the hospital named ``hospital`` (again: no change).

    Raises:
        AccountError: no such hospital, an invalid AE title, or one that already belongs to
            another hospital (remove it there first: one AE title, one hospital).
    """
    title = normalise_ae_title(ae_title)
    hospital_row = session.scalar(sa.select(Hospital).where(Hospital.name == hospital))
    if hospital_row is None:
        raise AccountError(f"no hospital named {hospital!r}")
    existing = session.scalar(sa.select(AeTitle).where(AeTitle.ae_title == title))
    if existing is not None:
        if existing.hospital_id == hospital_row.id:
            return existing
        owner = session.get(Hospital, existing.hospital_id)
        raise AccountError(
            f"AE title {title!r} already belongs to {owner.name if owner else 'another hospital'!r}"
            f"; remove it there first (oncotriage admin remove-ae-title {title})"
        )
    row = AeTitle(ae_title=title, hospital_id=hospital_row.id)
    session.add(row)
    session.flush()
    return row


def remove_ae_title(session: Session, ae_title: str) -> bool:
    """Stop accepting ``ae_title``; False when it was not mapped."""
    title = normalise_ae_title(ae_title)
    row = session.scalar(sa.select(AeTitle).where(AeTitle.ae_title == title))
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def list_ae_titles(session: Session) -> list[tuple[str, str]]:
    """``(AE title, hospital name)`` of every mapping, by AE title."""
    rows = session.execute(
        sa.select(AeTitle.ae_title, Hospital.name)
        .join(Hospital, Hospital.id == AeTitle.hospital_id)
        .order_by(AeTitle.ae_title)
    ).all()
    return [(str(title), str(name)) for title, name in rows]


def principal_for_ae_title(session: Session, ae_title: str) -> Principal | None:
    """The hospital principal an association from ``ae_title`` acts as; None when the AE
    title is not mapped (or not a valid AE title at all)."""
    title = ae_title.strip(" ")
    if not title or len(title) > MAX_AE_TITLE_LENGTH:
        return None
    row = session.execute(
        sa.select(Hospital.id, Hospital.name)
        .join(AeTitle, AeTitle.hospital_id == Hospital.id)
        .where(AeTitle.ae_title == title)
    ).first()
    if row is None:
        return None
    return Principal(kind=PrincipalKind.HOSPITAL, hospital_id=int(row[0]), name=str(row[1]))
