"""The models in the field: real-world performance, champion against challenger, drift
alarms (centre staff only: specialists see their union's hospitals, administrators all)."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, status

from oncotriage.serving import audit
from oncotriage.serving.api.deps import CurrentSpecialist, InferenceDep, RowId, SessionDep
from oncotriage.serving.api.monitoring_schemas import (
    AlarmPublic,
    AlarmsPublic,
    AlarmUpdate,
    ComparisonPublic,
    MonitorStatusPublic,
    PerformancePublic,
    PerformanceRow,
    UnreadyModel,
)
from oncotriage.serving.db.base import utcnow
from oncotriage.serving.db.models import DriftAlarm, Hospital, Job
from oncotriage.serving.enums import AlarmAction, AuditAction, JobState
from oncotriage.serving.monitoring.compare import compare
from oncotriage.serving.monitoring.monitor import MONITOR_COUNTS
from oncotriage.serving.monitoring.performance import performance
from oncotriage.serving.security import visible_hospital_ids

router = APIRouter(prefix="/v1/monitoring", tags=["monitoring"])


@router.get("/performance", response_model=PerformancePublic)
def read_performance(session: SessionDep, principal: CurrentSpecialist) -> PerformancePublic:
    """Per model version x hospital x device (manufacturer, model) x modality: flag rate,
    manual-review rate, sensitivity and PPV of flags against decisions and outcomes (Wilson
    95 % intervals) and the score distribution."""
    rows = performance(session, visible_hospital_ids(session, principal))
    session.rollback()
    return PerformancePublic(data=[PerformanceRow(**row) for row in rows], count=len(rows))


@router.get("/compare/{name}", response_model=ComparisonPublic)
def read_comparison(
    name: str, session: SessionDep, principal: CurrentSpecialist
) -> ComparisonPublic:
    """Champion against challenger(s) of one model on the same live studies."""
    result = compare(session, name, hospitals=visible_hospital_ids(session, principal))
    session.rollback()
    return ComparisonPublic(**result)


def _alarm_public(alarm: DriftAlarm, hospital: str) -> AlarmPublic:
    return AlarmPublic(
        id=alarm.id,
        hospital_id=alarm.hospital_id,
        hospital=hospital,
        device=alarm.device,
        model=alarm.model_name,
        metric=alarm.metric,
        direction=alarm.direction,
        studies=alarm.studies,
        action=alarm.action,
        raised_at=alarm.raised_at,
        cleared_at=alarm.cleared_at,
        cleared_by=alarm.cleared_by,
        detail=alarm.detail,
    )


@router.get("/alarms", response_model=AlarmsPublic)
def read_alarms(
    session: SessionDep, principal: CurrentSpecialist, active: bool = True
) -> AlarmsPublic:
    """Drift alarms of the hospitals the caller may see (the active ones by default)."""
    hospitals = visible_hospital_ids(session, principal)
    query = sa.select(DriftAlarm, Hospital.name).join(
        Hospital, Hospital.id == DriftAlarm.hospital_id
    )
    if hospitals is not None:
        query = query.where(DriftAlarm.hospital_id.in_(hospitals))
    if active:
        query = query.where(DriftAlarm.cleared_at.is_(None))
    rows = session.execute(query.order_by(DriftAlarm.id.desc()).limit(500)).all()
    session.rollback()
    return AlarmsPublic(data=[_alarm_public(a, name) for a, name in rows], count=len(rows))


@router.post("/alarms/{alarm_id}", response_model=AlarmPublic)
def update_alarm(
    alarm_id: RowId, body: AlarmUpdate, session: SessionDep, principal: CurrentSpecialist
) -> AlarmPublic:
    """Set an active alarm to warn or hold, or clear it (audited)."""
    hospitals = visible_hospital_ids(session, principal)
    alarm = session.get(DriftAlarm, alarm_id)
    if alarm is None or (hospitals is not None and alarm.hospital_id not in hospitals):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such alarm")
    if alarm.cleared_at is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, "this alarm was cleared already")
    if body.action == "clear":
        alarm.cleared_at = utcnow()
        alarm.cleared_by = principal.name
    else:
        alarm.action = AlarmAction(body.action)
    audit.record(
        session,
        principal,
        AuditAction.DRIFT_ALARM_ACTION,
        detail={"alarm_id": alarm.id, "action": body.action, "hospital_id": alarm.hospital_id},
    )
    hospital = session.get(Hospital, alarm.hospital_id)
    session.commit()
    return _alarm_public(alarm, hospital.name if hospital else "")


@router.get("/status", response_model=MonitorStatusPublic)
def read_monitor_status(
    session: SessionDep, models: InferenceDep, principal: CurrentSpecialist
) -> MonitorStatusPublic:
    """This process's monitor (jobs submitted, recorded, dropped with a full backlog,
    waiting), the routes whose model cannot be loaded now, and the jobs queued."""
    counts = MONITOR_COUNTS
    queued = session.scalar(
        sa.select(sa.func.count()).select_from(Job).where(Job.state == JobState.QUEUED)
    )
    session.rollback()
    unready = [
        UnreadyModel(route=route, reason=manager.last_error)
        for route, manager in models.managers.items()
        if manager.last_error
    ]
    return MonitorStatusPublic(
        models_unready=unready,
        queued_jobs=int(queued or 0),
        submitted=counts.submitted,
        recorded=counts.recorded,
        dropped=counts.dropped,
        backlog=counts.backlog,
        challenger_scored=counts.challenger_scored,
        alarms=counts.alarms,
    )
