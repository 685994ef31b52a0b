"""Request and response schemas, one family per resource (``XPublic``, ``XsPublic(data, count)``).

Every route sets ``response_model`` to one of these, so internal columns (token hashes,
webhook secrets, stored paths, lease owners) never reach a client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from oncotriage.datasets.boxes import index_box_problem
from oncotriage.serving.enums import (
    Decision,
    Priority,
    ReviewStatus,
    SeriesStatus,
    StudyStatus,
)


class Message(BaseModel):
    detail: str


class HospitalRef(BaseModel):
    id: int
    name: str


class StudyPublic(BaseModel):
    """A study as its hospital and the centre's specialists see it.

    ``time_to_triage_s`` is from the first instance's arrival to the first triage.
    """

    model_config = ConfigDict(from_attributes=True)

    id: str
    url: str
    study_instance_uid: str
    hospital: HospitalRef
    modality: str
    status: StudyStatus
    priority: Priority | None
    suspicion_score: float | None
    model_name: str | None
    model_version: str | None
    failure_reason: str | None
    review_status: ReviewStatus
    decision: Decision | None
    series_count: int
    instance_count: int
    received_at: datetime
    queued_at: datetime | None
    processing_started_at: datetime | None
    triaged_at: datetime | None
    time_to_triage_s: float | None
    decided_at: datetime | None


class StudiesPublic(BaseModel):
    data: list[StudyPublic]
    count: int


class InstanceResultPublic(BaseModel):
    """One object of a submission: kept or refused, with the reason."""

    sop_instance_uid: str
    sop_class_uid: str
    stored: bool
    duplicate: bool = False
    failure_reason: int | None = Field(
        default=None, description="STOW-RS Failure Reason (e.g. 49152 = 0xC000)."
    )
    message: str = ""
    warning: str | None = Field(
        default=None,
        description="Kept, but with a warning (e.g. a re-sent SOP Instance UID whose bytes "
        "differ: the first copy is kept).",
    )


class SubmissionPublic(BaseModel):
    """Answer to ``POST /v1/studies``: the studies that received instances, and each object."""

    studies: list[StudyPublic]
    instances: list[InstanceResultPublic]
    stored: int
    failed: int


class FindingPublic(BaseModel):
    """A detected box.

    ``box_index``: source-image index space, ``xyxy`` (2D) or ``xyzxyz`` (3D), axis 0 = image
    columns, axis 1 = rows, axis 2 = slices; integers are voxel centres.
    ``box_world``: millimetres; LPS ``xyzxyz`` for volumes, detector-plane ``xyxy`` for
    radiographs.
    """

    id: int
    series_instance_uid: str
    sop_instance_uid: str | None
    label: int
    score: float = Field(description="The detector's confidence for this box (0..1).")
    calibrated_score: float = Field(
        description="score through the model version's score calibration: the scale of the "
        "study's suspicion_score and of the operating and urgent thresholds, the number the "
        "case view shows on each box (equal to score for a model without score calibration "
        "and for results recorded before it was kept)."
    )
    box_mode: str
    box_index: list[float]
    box_world: list[float]
    approximate_mm: bool = Field(
        default=False,
        description="box_world is approximate: the image had no usable pixel spacing and its "
        "spacing was estimated from an assumed field of view.",
    )
    reportable: bool = Field(
        default=True,
        description="At or above the model's operating threshold (its score calibrated like "
        "the study score): the DICOM SR and the case view show these; the other candidates "
        "are kept for evaluation only.",
    )
    model_name: str
    model_version: str


class SeriesResultPublic(BaseModel):
    series_instance_uid: str
    modality: str
    instance_count: int
    is_volume: bool
    role: str = Field(
        default="diagnostic",
        description="diagnostic (triaged), or kept for the record and not triaged: localizer, "
        "dose_report, sr, secondary_capture, presentation_state, key_object.",
    )
    spacing_estimated: bool = Field(
        default=False,
        description="No usable pixel spacing: estimated from an assumed field of view "
        "(estimated_chest_field_of_view_mm), so millimetre figures are approximate.",
    )
    suspicion_score: float | None
    priority: Priority | None
    status: SeriesStatus = Field(
        description="queued, running, done or failed (the latest inference); not_triaged for "
        "series kept for the record."
    )
    error: str | None = None
    model_name: str | None = None
    model_version: str | None = None


class StudyResultPublic(BaseModel):
    study_id: str
    status: StudyStatus
    priority: Priority | None
    suspicion_score: float | None
    model_name: str | None
    model_version: str | None
    failure_reason: str | None
    series: list[SeriesResultPublic]
    findings: list[FindingPublic]


class WorklistItemPublic(StudyPublic):
    """A study on the specialists' worklist, with how long it has waited."""

    waiting_minutes: float
    sla_minutes: float
    overdue: bool = Field(description="Waiting longer than its priority's SLA (moved up).")
    claimed_by: str | None
    claim_expires_at: datetime | None


class WorklistPublic(BaseModel):
    data: list[WorklistItemPublic]
    count: int


class ClaimPublic(BaseModel):
    study_id: str
    claimed_by: str
    claimed_at: datetime
    expires_at: datetime


class CorrectedBox(BaseModel):
    """A box drawn or corrected by the specialist, in the source image's index space.

    ``series_instance_uid`` and (for radiographs) ``sop_instance_uid`` say which image;
    ``box_index`` is ``xyxy`` (2D) or ``xyzxyz`` (3D) like :class:`FindingPublic`.
    """

    series_instance_uid: str = Field(max_length=64)
    sop_instance_uid: str | None = Field(default=None, max_length=64)
    box_index: list[float]
    label: int = Field(default=0, ge=0, le=1000, description="Class index (0: nodule).")

    @field_validator("box_index")
    @classmethod
    def _box(cls, value: list[float]) -> list[float]:
        problem = index_box_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


class ReviewCreate(BaseModel):
    decision: Decision
    note: str = Field(default="", max_length=10_000)
    corrected_boxes: list[CorrectedBox] | None = Field(default=None, max_length=500)


class ReviewPublic(BaseModel):
    id: int
    study_id: str
    decision: Decision
    note: str
    corrected_boxes: list[CorrectedBox] | None
    reviewer: str
    model_name: str | None
    model_version: str | None
    created_at: datetime
    referral_id: int | None


class ReviewsPublic(BaseModel):
    data: list[ReviewPublic]
    count: int


class ValidationErrorItem(BaseModel):
    """One reason a request was refused (the shape of FastAPI's validation errors)."""

    type: str
    loc: list[str | int]
    msg: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationErrorsPublic(BaseModel):
    """Every 422 body, from the request's schema or from the service's own checks."""

    detail: list[ValidationErrorItem]


class HealthPublic(BaseModel):
    status: str


class ReadinessPublic(BaseModel):
    status: str = Field(description="ready or not_ready")
    checks: dict[str, dict[str, Any]]


class ResultsDestinationUpdate(BaseModel):
    """Where a hospital's result SRs are pushed: a STOW-RS URL or a DICOM node."""

    kind: str = Field(pattern="^(stow|dimse)$", description="``stow`` or ``dimse``.")
    url: str | None = Field(default=None, max_length=2000, description="STOW-RS URL.")
    auth: str = Field(default="none", pattern="^(none|bearer|basic)$")
    username: str | None = Field(default=None, max_length=200, description="Basic auth user.")
    secret: str | None = Field(
        default=None, max_length=2000, description="Bearer token or basic password (write-only)."
    )
    ae_title: str | None = Field(default=None, max_length=16, description="Called AE title.")
    host: str | None = Field(default=None, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535)
    calling_ae_title: str = Field(default="ONCOTRIAGE", min_length=1, max_length=16)


class ResultsDestinationPublic(BaseModel):
    """A destination as shown back (never its secret)."""

    kind: str
    description: str
    url: str | None = None
    auth: str = "none"
    username: str | None = None
    ae_title: str | None = None
    host: str | None = None
    port: int | None = None
    calling_ae_title: str | None = None


class LastPushPublic(BaseModel):
    """The hospital's most recent result push: ``delivered``, ``queued`` (not tried yet),
    ``retrying`` (failed, will be retried at ``next_attempt_at``), ``running`` or ``failed``
    (given up, or refused by the destination; ``error`` says why)."""

    state: str
    study_id: str | None
    version: str | None = Field(description="``ai`` (the AI result) or ``verified``.")
    attempts: int
    error: str | None
    at: datetime | None
    delivered_at: datetime | None
    next_attempt_at: datetime | None


class ResultsPushPublic(BaseModel):
    destination: ResultsDestinationPublic | None
    last_push: LastPushPublic | None
    pending: int = Field(description="Pushes queued or being retried.")
    failed: int = Field(description="Pushes given up (see ``last_push.error``).")
