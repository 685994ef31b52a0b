"""The hold fallback: a hospital with an active drift alarm set to ``hold`` is not scored.

Its new studies go to the worklist as ``needs_manual_review`` with the reason, in arrival
order (the worklist sorts a priority's studies by waiting time), until an operator clears
the alarm or sets it back to ``warn``; the worklist shows a banner saying so. The worker
asks :meth:`HoldCheck.reason` for every job it claims: one query of the active holds every
``hold_check_interval_s`` (none active, the usual case: no further query).
"""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa
from sqlalchemy.orm import Session

from oncotriage.serving.db.models import DriftAlarm, Study
from oncotriage.serving.enums import AlarmAction

__all__ = ["HoldCheck", "hold_reason"]


def hold_reason(alarm: DriftAlarm) -> str:
    """The reason a held study carries (for the radiographer and the specialist)."""
    where = f" from {alarm.device}" if alarm.device else ""
    return (
        f"held for manual review: the images{where} drifted from what model "
        f"{alarm.model_name} was trained on ({alarm.metric} {alarm.direction}, alarm "
        f"{alarm.id} raised {alarm.raised_at:%Y-%m-%d %H:%M} UTC); this hospital's studies are "
        "read by people in arrival order until an operator clears the alarm"
    )


class HoldCheck:
    """Which hospitals are held, re-read at most every ``interval_s`` seconds."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._held: dict[int, str] = {}
        self._read_at = -1e18

    def _holds(self, session: Session) -> dict[int, str]:
        now = time.monotonic()
        with self._lock:
            if now - self._read_at < self.interval_s:
                return self._held
        alarms = session.scalars(
            sa.select(DriftAlarm)
            .where(DriftAlarm.cleared_at.is_(None), DriftAlarm.action == AlarmAction.HOLD)
            .order_by(DriftAlarm.id)
        ).all()
        held: dict[int, str] = {}
        for alarm in alarms:
            held.setdefault(alarm.hospital_id, hold_reason(alarm))
        with self._lock:
            self._held, self._read_at = held, now
        return held

    def reason(self, session: Session, study_id: str) -> str | None:
        """Why ``study_id`` is not to be scored, or None (in the caller's transaction)."""
        held = self._holds(session)
        if not held:
            return None
        hospital_id = session.scalar(sa.select(Study.hospital_id).where(Study.id == study_id))
        return held.get(hospital_id) if hospital_id is not None else None
