"""The union's figures, per hospital and month of the studies' arrival.

Counts are grouped in the database; the medians are taken here over the decided and
referred studies only (a small fraction of those screened).
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from oncotriage.serving.db.models import Hospital, Outcome, Referral, Study
from oncotriage.serving.enums import OutcomeKind, Priority, ReferralStage
from oncotriage.serving.referrals import overdue_clause
from oncotriage.serving.security import Principal, visible_hospital_ids

FIGURE_COLUMNS = (
    "hospital",
    "month",
    "screened",
    "flagged",
    "referred_up",
    "returned_down",
    "confirmed_cancers",
    "flags_with_outcome",
    "ppv",
    "median_days_flag_to_decision",
    "median_days_decision_to_seen",
    "median_days_seen_to_diagnosis",
    "overdue_steps",
    "lost_to_follow_up",
)
_FLAGGED = [priority for priority in Priority if priority.flagged]


def _month(session: Session, column: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM")
    return sa.func.strftime("%Y-%m", column)


def _days(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds() / 86400


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def figures(session: Session, principal: Principal, *, now: datetime) -> list[dict[str, Any]]:
    """One row per (hospital, month) the caller may see, ordered by hospital then month."""
    hospitals = visible_hospital_ids(session, principal)
    scope = sa.true() if hospitals is None else Study.hospital_id.in_(hospitals)
    month = _month(session, Study.received_at).label("month")
    flagged = Study.priority.in_(_FLAGGED)
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def row(hospital: str, month_: str) -> dict[str, Any]:
        key = (hospital, month_)
        if key not in rows:
            rows[key] = dict.fromkeys(FIGURE_COLUMNS[2:], 0) | {
                "hospital": hospital,
                "month": month_,
            }
        return rows[key]

    for name, month_, screened, flags in session.execute(
        sa.select(
            Hospital.name,
            month,
            sa.func.count(),
            sa.func.count().filter(flagged),
        )
        .join(Hospital, Hospital.id == Study.hospital_id)
        .where(scope)
        .group_by(Hospital.name, month)
    ):
        target = row(name, month_)
        target["screened"], target["flagged"] = int(screened), int(flags)

    outcome_of = (
        sa.select(
            Outcome.study_id,
            sa.func.max(sa.case((Outcome.kind == OutcomeKind.MALIGNANT, 1), else_=0)).label(
                "malignant"
            ),
        )
        .group_by(Outcome.study_id)
        .subquery()
    )
    for name, month_, with_outcome, cancers in session.execute(
        sa.select(Hospital.name, month, sa.func.count(), sa.func.sum(outcome_of.c.malignant))
        .join(Hospital, Hospital.id == Study.hospital_id)
        .join(outcome_of, outcome_of.c.study_id == Study.id)
        .where(scope, flagged)
        .group_by(Hospital.name, month)
    ):
        target = row(name, month_)
        target["flags_with_outcome"], target["confirmed_cancers"] = (
            int(with_outcome),
            int(cancers or 0),
        )

    to_decision: dict[tuple[str, str], list[float]] = defaultdict(list)
    for name, month_, triaged_at, decided_at in session.execute(
        sa.select(Hospital.name, month, Study.triaged_at, Study.decided_at)
        .join(Hospital, Hospital.id == Study.hospital_id)
        .where(scope, flagged, Study.decided_at.is_not(None))
    ):
        days = _days(triaged_at, decided_at)
        if days is not None:
            to_decision[(name, month_)].append(days)

    to_seen: dict[tuple[str, str], list[float]] = defaultdict(list)
    to_diagnosis: dict[tuple[str, str], list[float]] = defaultdict(list)
    overdue = overdue_clause(now)
    for name, month_, decided_at, referral, is_overdue in session.execute(
        sa.select(Hospital.name, month, Study.decided_at, Referral, sa.case((overdue, 1), else_=0))
        .join(Study, Study.id == Referral.study_id)
        .join(Hospital, Hospital.id == Study.hospital_id)
        .where(scope)
    ):
        key = (name, month_)
        target = row(*key)
        target["referred_up"] += 1
        target["returned_down"] += referral.returned_at is not None
        target["overdue_steps"] += int(is_overdue)
        target["lost_to_follow_up"] += referral.stage is ReferralStage.LOST
        seen = _days(decided_at, referral.seen_at)
        if seen is not None:
            to_seen[key].append(seen)
        diagnosis = _days(referral.seen_at, referral.diagnosed_at)
        if diagnosis is not None:
            to_diagnosis[key].append(diagnosis)

    for key, target in rows.items():
        target["ppv"] = (
            round(target["confirmed_cancers"] / target["flags_with_outcome"], 4)
            if target["flags_with_outcome"]
            else None
        )
        target["median_days_flag_to_decision"] = _median(to_decision[key])
        target["median_days_decision_to_seen"] = _median(to_seen[key])
        target["median_days_seen_to_diagnosis"] = _median(to_diagnosis[key])
    return [rows[key] for key in sorted(rows)]


def figures_csv(rows: list[dict[str, Any]]) -> str:
    """The figures as CSV, one header line then one line per hospital and month."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIGURE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row[key] is None else row[key] for key in FIGURE_COLUMNS})
    return buffer.getvalue()
