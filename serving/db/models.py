"""Tables of the triage service.

No patient identifiers are stored in these tables: the DICOM files in the image store
keep them, the database keeps UIDs, hashes, scores and decisions.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from oncotriage.serving.db.base import Base, JSONType, UTCDateTime, utcnow, wire_enum
from oncotriage.serving.enums import (
    AlarmAction,
    AuditAction,
    Decision,
    HospitalKind,
    JobState,
    LungRads,
    OutcomeKind,
    Priority,
    ReferralStage,
    ReferralStatus,
    ReviewStatus,
    Role,
    StudyStatus,
    WebhookEvent,
)

UID = sa.String(64)  # DICOM UIDs are at most 64 characters


def _new_id() -> str:
    return str(uuid.uuid4())


class Hospital(Base):
    """A community hospital or a cancer centre. Community hospitals belong to one centre."""

    __tablename__ = "hospitals"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    kind: Mapped[HospitalKind] = mapped_column(wire_enum(HospitalKind))
    centre_id: Mapped[int | None] = mapped_column(sa.ForeignKey("hospitals.id"), index=True)
    webhook_url: Mapped[str | None] = mapped_column(sa.String(2000))
    webhook_secret: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    centre: Mapped[Hospital | None] = relationship(remote_side=[id])


class User(Base):
    """A person: a specialist at a centre, or an administrator."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(200), unique=True)
    display_name: Mapped[str] = mapped_column(sa.String(200), default="")
    role: Mapped[Role] = mapped_column(wire_enum(Role))
    hospital_id: Mapped[int | None] = mapped_column(sa.ForeignKey("hospitals.id"), index=True)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    hospital: Mapped[Hospital | None] = relationship()


class ApiToken(Base):
    """A bearer token; only its SHA-256 is kept. ``prefix`` finds the row without the secret."""

    __tablename__ = "api_tokens"
    __table_args__ = (
        sa.CheckConstraint(
            "(hospital_id IS NULL) <> (user_id IS NULL)", name="owned_by_hospital_or_user"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    prefix: Mapped[str] = mapped_column(sa.String(16), unique=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64))
    label: Mapped[str] = mapped_column(sa.String(200), default="")
    hospital_id: Mapped[int | None] = mapped_column(sa.ForeignKey("hospitals.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    hospital: Mapped[Hospital | None] = relationship()
    user: Mapped[User | None] = relationship()


class Study(Base):
    """One imaging study of one hospital, with its triage outcome and review state."""

    __tablename__ = "studies"
    __table_args__ = (sa.UniqueConstraint("hospital_id", "study_instance_uid"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=_new_id)
    hospital_id: Mapped[int] = mapped_column(sa.ForeignKey("hospitals.id"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(UID)
    modality: Mapped[str] = mapped_column(sa.String(16), default="")
    status: Mapped[StudyStatus] = mapped_column(
        wire_enum(StudyStatus), default=StudyStatus.RECEIVED, index=True
    )
    priority: Mapped[Priority | None] = mapped_column(wire_enum(Priority), index=True)
    suspicion_score: Mapped[float | None] = mapped_column(sa.Float)
    model_name: Mapped[str | None] = mapped_column(sa.String(200))
    model_version: Mapped[str | None] = mapped_column(sa.String(64))
    failure_reason: Mapped[str | None] = mapped_column(sa.Text)
    review_status: Mapped[ReviewStatus] = mapped_column(
        wire_enum(ReviewStatus), default=ReviewStatus.PENDING, index=True
    )
    decision: Mapped[Decision | None] = mapped_column(wire_enum(Decision))
    claimed_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    processing_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    triaged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    time_to_triage_s: Mapped[float | None] = mapped_column(sa.Float)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # QIDO-RS matching keys from the study's first instance (NULL: not indexed yet, see
    # oncotriage.serving.dicomweb_index); the hospital's own identifiers, never shown to
    # another hospital.
    patient_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    patient_name: Mapped[str | None] = mapped_column(sa.String(324))
    study_date: Mapped[str | None] = mapped_column(sa.String(8), index=True)
    accession_number: Mapped[str | None] = mapped_column(sa.String(64), index=True)

    hospital: Mapped[Hospital] = relationship()
    claimed_by: Mapped[User | None] = relationship()
    series: Mapped[list[Series]] = relationship(
        back_populates="study", order_by="Series.id", cascade="all, delete-orphan"
    )


class Series(Base):
    __tablename__ = "series"
    __table_args__ = (sa.UniqueConstraint("study_id", "series_instance_uid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[str] = mapped_column(sa.ForeignKey("studies.id", ondelete="CASCADE"))
    series_instance_uid: Mapped[str] = mapped_column(UID)
    modality: Mapped[str] = mapped_column(sa.String(16), default="")
    is_volume: Mapped[bool] = mapped_column(
        default=False, doc="CT-like series read as one volume (one job for the whole series)."
    )
    role: Mapped[str] = mapped_column(
        sa.String(24),
        default="diagnostic",
        server_default="diagnostic",
        doc="datasets.roles.SeriesRole: only diagnostic series are triaged; localizers, dose "
        "reports, SR, secondary captures, presentation states and key objects are kept.",
    )
    spacing_estimated: Mapped[bool] = mapped_column(
        default=False,
        server_default=sa.false(),
        doc="A radiograph without a usable pixel spacing: its millimetres are approximate.",
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(
        back_populates="series", order_by="Instance.id", cascade="all, delete-orphan"
    )


class Instance(Base):
    """One stored DICOM object. ``stored_path`` is relative to the image store."""

    __tablename__ = "instances"
    __table_args__ = (sa.UniqueConstraint("hospital_id", "sop_instance_uid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    hospital_id: Mapped[int] = mapped_column(sa.ForeignKey("hospitals.id"))
    study_id: Mapped[str] = mapped_column(
        sa.ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    series_id: Mapped[int] = mapped_column(
        sa.ForeignKey("series.id", ondelete="CASCADE"), index=True
    )
    sop_instance_uid: Mapped[str] = mapped_column(UID)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    content_hash: Mapped[str] = mapped_column(sa.String(64))
    stored_path: Mapped[str] = mapped_column(sa.String(300))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    rows: Mapped[int] = mapped_column(default=0)
    columns: Mapped[int] = mapped_column(default=0)
    frames: Mapped[int] = mapped_column(default=1)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: The header as DICOM JSON without pixel data (QIDO-RS, WADO-RS metadata); NULL: not
    #: indexed yet.
    header_json: Mapped[str | None] = mapped_column(sa.Text)

    series: Mapped[Series] = relationship(back_populates="instances")


class LeasedWork:
    """Columns of a durable, leased unit of work (inference jobs, webhook deliveries)."""

    state: Mapped[JobState] = mapped_column(wire_enum(JobState), default=JobState.QUEUED)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Job(LeasedWork, Base):
    """One inference: a radiograph instance, or a whole volume series (``instance_id`` NULL)."""

    __tablename__ = "jobs"
    __table_args__ = (sa.Index("ix_jobs_state_next_attempt_at", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[str] = mapped_column(
        sa.ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    series_id: Mapped[int] = mapped_column(
        sa.ForeignKey("series.id", ondelete="CASCADE"), index=True
    )
    instance_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("instances.id", ondelete="CASCADE")
    )
    model_name: Mapped[str | None] = mapped_column(sa.String(200))
    model_version: Mapped[str | None] = mapped_column(sa.String(64))
    suspicion_score: Mapped[float | None] = mapped_column(sa.Float)
    priority: Mapped[Priority | None] = mapped_column(wire_enum(Priority))
    inference_s: Mapped[float | None] = mapped_column(sa.Float)

    study: Mapped[Study] = relationship()
    series: Mapped[Series] = relationship()
    instance: Mapped[Instance | None] = relationship()


class Finding(Base):
    """A detected box. ``box_index`` is in the source image's voxel space (``xyxy``/``xyzxyz``,
    axis 0 = columns), ``box_world`` in millimetres (LPS ``xyzxyz``, or detector-plane ``xyxy``)."""

    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[str] = mapped_column(
        sa.ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[int] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    series_id: Mapped[int] = mapped_column(sa.ForeignKey("series.id", ondelete="CASCADE"))
    instance_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("instances.id", ondelete="CASCADE")
    )
    label: Mapped[int] = mapped_column(default=0)
    score: Mapped[float] = mapped_column(sa.Float)
    calibrated_score: Mapped[float | None] = mapped_column(
        sa.Float,
        nullable=True,
        doc="``score`` through the model version's score calibration: the scale of the "
        "study's suspicion score and the thresholds (NULL before migration 0011).",
    )
    box_index: Mapped[list[float]] = mapped_column(JSONType)
    box_world: Mapped[list[float]] = mapped_column(JSONType)
    model_name: Mapped[str] = mapped_column(sa.String(200))
    model_version: Mapped[str] = mapped_column(sa.String(64))
    reportable: Mapped[bool] = mapped_column(
        default=True,
        server_default=sa.true(),
        doc="At or above the model's operating threshold (calibrated like the study score): "
        "only these go in the DICOM SR, which states how many were left out.",
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    series: Mapped[Series] = relationship()
    instance: Mapped[Instance | None] = relationship()


class Claim(Base):
    """History of worklist leases. The live lease is ``Study.claimed_by_id``/``claim_expires_at``,
    taken with one conditional UPDATE so two specialists can never both hold it."""

    __tablename__ = "claims"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[str] = mapped_column(
        sa.ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(sa.String(32))  # released | decided


class Review(Base):
    """A specialist's decision on a study."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[str] = mapped_column(
        sa.ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    decision: Mapped[Decision] = mapped_column(wire_enum(Decision))
    note: Mapped[str] = mapped_column(sa.Text, default="")
    corrected_boxes: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    model_name: Mapped[str | None] = mapped_column(sa.String(200))
    model_version: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    user: Mapped[User] = relationship()


class Referral(Base):
    """A patient referred from a community hospital up to its centre."""

    __tablename__ = "referrals"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[str] = mapped_column(
        sa.ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    # None for a referral a community doctor requested (no specialist's decision behind it).
    review_id: Mapped[int | None] = mapped_column(sa.ForeignKey("reviews.id", ondelete="CASCADE"))
    from_hospital_id: Mapped[int] = mapped_column(sa.ForeignKey("hospitals.id"), index=True)
    to_centre_id: Mapped[int] = mapped_column(sa.ForeignKey("hospitals.id"), index=True)
    status: Mapped[ReferralStatus] = mapped_column(
        wire_enum(ReferralStatus), default=ReferralStatus.OPEN
    )
    note: Mapped[str] = mapped_column(sa.Text, default="")
    created_by_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The lifecycle (serving/referrals.py): every open stage has an owner and a due date.
    patient_id: Mapped[int | None] = mapped_column(sa.ForeignKey("patients.id"), index=True)
    stage: Mapped[ReferralStage | None] = mapped_column(wire_enum(ReferralStage), index=True)
    owner_hospital_id: Mapped[int | None] = mapped_column(sa.ForeignKey("hospitals.id"))
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    appointment_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    diagnosed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    returned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    return_plan: Mapped[str | None] = mapped_column(sa.Text)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lost_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lost_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))

    study: Mapped[Study] = relationship()
    from_hospital: Mapped[Hospital] = relationship(foreign_keys=[from_hospital_id])
    to_centre: Mapped[Hospital] = relationship(foreign_keys=[to_centre_id])


class AuditEvent(Base):
    """Who did what to which study, when. ``detail`` never holds patient identifiers."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor_kind: Mapped[str] = mapped_column(sa.String(16))  # hospital | user | system
    actor_id: Mapped[int | None] = mapped_column()
    actor_name: Mapped[str] = mapped_column(sa.String(200), default="")
    action: Mapped[AuditAction] = mapped_column(wire_enum(AuditAction), index=True)
    study_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("studies.id", ondelete="SET NULL"), index=True
    )
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class WebhookDelivery(LeasedWork, Base):
    """The outbox: one event to POST to one hospital's webhook, retried until delivered."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (
        sa.Index("ix_webhook_outbox_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    hospital_id: Mapped[int] = mapped_column(sa.ForeignKey("hospitals.id"), index=True)
    study_id: Mapped[str | None] = mapped_column(sa.ForeignKey("studies.id", ondelete="CASCADE"))
    event: Mapped[WebhookEvent] = mapped_column(wire_enum(WebhookEvent))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    response_status: Mapped[int | None] = mapped_column()
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    destination_kind: Mapped[str | None] = mapped_column(
        sa.String(16), doc="For result pushes (event ``result.sr``): ``stow`` or ``dimse``."
    )


class ResultDestination(Base):
    """Where a hospital wants its results (DICOM SR) pushed: a DICOMweb STOW-RS URL (with
    bearer or basic auth) or a DICOM node for C-STORE. One per hospital."""

    __tablename__ = "result_destinations"

    id: Mapped[int] = mapped_column(primary_key=True)
    hospital_id: Mapped[int] = mapped_column(sa.ForeignKey("hospitals.id"), unique=True)
    kind: Mapped[str] = mapped_column(sa.String(16))  # stow | dimse
    url: Mapped[str | None] = mapped_column(sa.String(2000))
    auth: Mapped[str] = mapped_column(sa.String(16), default="none")  # none | bearer | basic
    username: Mapped[str | None] = mapped_column(sa.String(200))
    secret: Mapped[str | None] = mapped_column(sa.String(2000))
    ae_title: Mapped[str | None] = mapped_column(sa.String(16))
    host: Mapped[str | None] = mapped_column(sa.String(255))
    port: Mapped[int | None] = mapped_column()
    calling_ae_title: Mapped[str | None] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Patient(Base):
    """A person within one union (centre), known only by a keyed pseudonym:
    HMAC-SHA256 of Issuer of Patient ID + Patient ID under ``patient_key``."""

    __tablename__ = "patients"
    __table_args__ = (sa.UniqueConstraint("centre_id", "pseudonym"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    centre_id: Mapped[int] = mapped_column(sa.ForeignKey("hospitals.id"))
    pseudonym: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PatientStudy(Base):
    """Which patient a study is of (a study has at most one)."""

    __tablename__ = "patient_studies"

    study_id: Mapped[str] = mapped_column(
        sa.ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True
    )
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id"), index=True)


class FollowUp(Base):
    """Surveillance set by a specialist: a repeat study due at a hospital by ``due_at``;
    closed by the next study of the patient at any hospital of the union."""

    __tablename__ = "followups"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id"), index=True)
    hospital_id: Mapped[int] = mapped_column(sa.ForeignKey("hospitals.id"), index=True)
    referral_id: Mapped[int | None] = mapped_column(sa.ForeignKey("referrals.id"))
    category: Mapped[LungRads] = mapped_column(wire_enum(LungRads))
    months: Mapped[int] = mapped_column()
    modality: Mapped[str] = mapped_column(sa.String(16), default="CT")
    due_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    created_by_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_by_study_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("studies.id", ondelete="SET NULL")
    )


class Outcome(Base):
    """A diagnosis against a patient, linked to the study (and so the AI result) and the
    specialist's decision that led to it: the labels of real-world sensitivity and PPV."""

    __tablename__ = "outcomes"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id"), index=True)
    referral_id: Mapped[int | None] = mapped_column(sa.ForeignKey("referrals.id"), index=True)
    study_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("studies.id", ondelete="SET NULL"), index=True
    )
    review_id: Mapped[int | None] = mapped_column(sa.ForeignKey("reviews.id", ondelete="SET NULL"))
    kind: Mapped[OutcomeKind] = mapped_column(wire_enum(OutcomeKind))
    site: Mapped[str] = mapped_column(sa.String(200), default="")
    histology: Mapped[str] = mapped_column(sa.String(200), default="")
    cancer_stage: Mapped[str] = mapped_column(sa.String(32), default="")
    recorded_by_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ReferralLicence(Base):
    """A user's licence to create, accept or return referrals, until ``valid_until``."""

    __tablename__ = "referral_licences"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime())
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AeTitle(Base):
    """A calling AE title a hospital's modality or PACS uses towards the DICOM listener: the
    listener takes associations only from AE titles listed here, and files what they send
    under that hospital."""

    __tablename__ = "ae_titles"

    id: Mapped[int] = mapped_column(primary_key=True)
    ae_title: Mapped[str] = mapped_column(sa.String(16), unique=True)
    hospital_id: Mapped[int] = mapped_column(sa.ForeignKey("hospitals.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    hospital: Mapped[Hospital] = relationship()


class MonitorRecord(Base):
    """What the monitor saw of one completed job (serving/monitoring/monitor.py): its input
    statistics and device, the champion's result, and the challenger's score, stored apart
    from the triage result (the challenger never changes a priority)."""

    __tablename__ = "monitor_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    study_id: Mapped[str] = mapped_column(
        sa.ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    hospital_id: Mapped[int] = mapped_column(sa.ForeignKey("hospitals.id"), index=True)
    modality: Mapped[str] = mapped_column(sa.String(16), default="")
    manufacturer: Mapped[str] = mapped_column(sa.String(200), default="")
    device_model: Mapped[str] = mapped_column(sa.String(200), default="")
    champion_name: Mapped[str] = mapped_column(sa.String(200))
    champion_version: Mapped[str] = mapped_column(sa.String(64))
    champion_raw_score: Mapped[float] = mapped_column(sa.Float)
    champion_score: Mapped[float] = mapped_column(sa.Float)
    champion_priority: Mapped[Priority] = mapped_column(wire_enum(Priority))
    challenger_name: Mapped[str | None] = mapped_column(sa.String(200))
    challenger_version: Mapped[str | None] = mapped_column(sa.String(64))
    challenger_raw_score: Mapped[float | None] = mapped_column(sa.Float)
    challenger_score: Mapped[float | None] = mapped_column(sa.Float)
    challenger_priority: Mapped[Priority | None] = mapped_column(wire_enum(Priority))
    challenger_s: Mapped[float | None] = mapped_column(sa.Float)
    intensity_mean: Mapped[float | None] = mapped_column(sa.Float)
    histogram_distance: Mapped[float | None] = mapped_column(sa.Float)
    spacing_mm: Mapped[float | None] = mapped_column(sa.Float)
    pixels: Mapped[int | None] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class DriftAlarm(Base):
    """A drift alarm of one hospital (and device, when ``device`` is not empty) on one
    metric; active until cleared. ``action`` hold sends the hospital's new studies to
    people unscored (serving/monitoring/hold.py)."""

    __tablename__ = "drift_alarms"

    id: Mapped[int] = mapped_column(primary_key=True)
    hospital_id: Mapped[int] = mapped_column(sa.ForeignKey("hospitals.id"), index=True)
    device: Mapped[str] = mapped_column(sa.String(400), default="")
    model_name: Mapped[str] = mapped_column(sa.String(200), default="")
    metric: Mapped[str] = mapped_column(sa.String(32))
    direction: Mapped[str] = mapped_column(sa.String(8), default="")
    studies: Mapped[int] = mapped_column(default=0)
    action: Mapped[AlarmAction] = mapped_column(wire_enum(AlarmAction), default=AlarmAction.WARN)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cleared_by: Mapped[str | None] = mapped_column(sa.String(200))
