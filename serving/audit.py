"""Audit trail: who read or decided what, when. Details never carry patient identifiers."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from oncotriage.serving.db.base import utcnow
from oncotriage.serving.db.models import AuditEvent
from oncotriage.serving.enums import AuditAction
from oncotriage.serving.security import Principal


def record(
    session: Session,
    principal: Principal | None,
    action: AuditAction,
    *,
    study_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit event to the session (committed with the caller's transaction)."""
    if principal is None:
        kind, actor_id, name = "system", None, "system"
    elif principal.is_hospital:
        kind, actor_id, name = "hospital", principal.hospital_id, principal.name
    else:
        kind, actor_id, name = "user", principal.user_id, principal.name
    event = AuditEvent(
        at=utcnow(),
        actor_kind=kind,
        actor_id=actor_id,
        actor_name=name,
        action=action,
        study_id=study_id,
        detail=detail,
    )
    session.add(event)
    return event
