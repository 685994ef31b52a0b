"""A study's result: findings as JSON, as a DICOM SR, and drawn on the image as PNG."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import PurePosixPath

import sqlalchemy as sa
from sqlalchemy.orm import Session

from oncotriage.datasets.roles import SeriesRole
from oncotriage.serving.db.models import Finding, Instance, Job, Series, Study
from oncotriage.serving.enums import JobState, Priority, SeriesStatus, StudyStatus
from oncotriage.serving.errors import FieldInputError
from oncotriage.serving.render import SeriesCache
from oncotriage.serving.reports.versions import (
    ReportPlan,
    ResultNotReadyError,
    build_versions,
    plan_report,
)
from oncotriage.serving.storage import ContentStore
from oncotriage.serving.triage import most_urgent

__all__ = [
    "ReportPlan",
    "FindingResult",
    "ResultNotReadyError",
    "SeriesResult",
    "StudyResult",
    "build_report",
    "plan_report",
    "plan_render",
    "render",
    "study_result",
]

#: decoded images for render.png, shared by the requests of this process
SERIES_CACHE = SeriesCache()


class RenderRequestError(FieldInputError):
    """The render request names a series, image or slice the study does not have."""

    loc = ("query",)


def _box_mode(box: list[float]) -> str:
    return "xyzxyz" if len(box) == 6 else "xyxy"


def _series_status(jobs: list[Job]) -> tuple[SeriesStatus, str | None]:
    states = {job.state for job in jobs}
    if JobState.RUNNING in states:
        return SeriesStatus.RUNNING, None
    if JobState.QUEUED in states:
        return SeriesStatus.QUEUED, None
    failed = [job for job in jobs if job.state is JobState.FAILED]
    if failed:
        return SeriesStatus.FAILED, failed[-1].last_error
    return (SeriesStatus.DONE, None) if jobs else (SeriesStatus.RECEIVED, None)


@dataclass(frozen=True)
class SeriesResult:
    """One series of a study's result (the route turns it into ``SeriesResultPublic``)."""

    series_instance_uid: str
    modality: str
    instance_count: int
    is_volume: bool
    role: str
    spacing_estimated: bool
    suspicion_score: float | None
    priority: Priority | None
    status: SeriesStatus
    error: str | None
    model_name: str | None
    model_version: str | None


@dataclass(frozen=True)
class FindingResult:
    """One detected box of a study's result (``FindingPublic`` in the API)."""

    id: int
    series_instance_uid: str
    sop_instance_uid: str | None
    label: int
    score: float
    calibrated_score: float
    box_mode: str
    box_index: list[float]
    box_world: list[float]
    approximate_mm: bool
    reportable: bool
    model_name: str
    model_version: str


@dataclass(frozen=True)
class StudyResult:
    """A study's result: its triage, per-series outcome and findings (``StudyResultPublic``)."""

    study_id: str
    status: StudyStatus
    priority: Priority | None
    suspicion_score: float | None
    model_name: str | None
    model_version: str | None
    failure_reason: str | None
    series: list[SeriesResult]
    findings: list[FindingResult]


def study_result(session: Session, study: Study) -> StudyResult:
    """Findings (index and world boxes), per-series outcome and the study's triage."""
    series_rows = list(
        session.scalars(sa.select(Series).where(Series.study_id == study.id).order_by(Series.id))
    )
    series_uid = {row.id: row.series_instance_uid for row in series_rows}
    estimated = {row.id for row in series_rows if row.spacing_estimated}
    instance_counts = dict(
        session.execute(
            sa.select(Instance.series_id, sa.func.count())
            .where(Instance.study_id == study.id)
            .group_by(Instance.series_id)
        ).all()
    )
    jobs_by_series: dict[int, list[Job]] = defaultdict(list)
    for job in session.scalars(
        sa.select(Job)
        .where(Job.study_id == study.id, Job.state != JobState.SUPERSEDED)
        .order_by(Job.id)
    ):
        jobs_by_series[job.series_id].append(job)
    series = []
    for row in series_rows:
        jobs = jobs_by_series.get(row.id, [])
        status, error = _series_status(jobs)
        if row.role != SeriesRole.DIAGNOSTIC:
            status = SeriesStatus.NOT_TRIAGED
        done = [job for job in jobs if job.state is JobState.DONE]
        best = max(done, key=lambda job: job.suspicion_score or 0.0, default=None)
        series.append(
            SeriesResult(
                series_instance_uid=row.series_instance_uid,
                modality=row.modality,
                instance_count=int(instance_counts.get(row.id, 0)),
                is_volume=row.is_volume,
                role=row.role,
                spacing_estimated=row.spacing_estimated,
                suspicion_score=best.suspicion_score if best else None,
                priority=most_urgent(job.priority for job in done if job.priority is not None),
                status=status,
                error=error,
                model_name=best.model_name if best else None,
                model_version=best.model_version if best else None,
            )
        )
    rows = session.execute(
        sa.select(Finding, Instance.sop_instance_uid)
        .outerjoin(Instance, Instance.id == Finding.instance_id)
        .where(Finding.study_id == study.id)
        .order_by(Finding.score.desc(), Finding.id)
    ).all()
    findings = [
        FindingResult(
            id=finding.id,
            series_instance_uid=series_uid.get(finding.series_id, ""),
            sop_instance_uid=sop_uid,
            label=finding.label,
            score=finding.score,
            calibrated_score=(
                finding.calibrated_score if finding.calibrated_score is not None else finding.score
            ),
            box_mode=_box_mode(finding.box_index),
            box_index=list(finding.box_index),
            box_world=list(finding.box_world),
            approximate_mm=finding.series_id in estimated,
            reportable=finding.reportable,
            model_name=finding.model_name,
            model_version=finding.model_version,
        )
        for finding, sop_uid in rows
    ]
    return StudyResult(
        study_id=study.id,
        status=study.status,
        priority=study.priority,
        suspicion_score=study.suspicion_score,
        model_name=study.model_name,
        model_version=study.model_version,
        failure_reason=study.failure_reason,
        series=series,
        findings=findings,
    )


def _detected(finding: Finding) -> object:
    from oncotriage.models.findings import Finding as DetectedFinding

    return DetectedFinding(
        label=finding.label,
        score=finding.score,
        box_index=tuple(finding.box_index),
        box_world=tuple(finding.box_world),
    )


def build_report(store: ContentStore, plan: ReportPlan) -> bytes:
    """The study's latest result SR (the verified version once a specialist decided, else the
    AI result) as a DICOM Part 10 file; the same bytes every time for one version."""
    from oncotriage.serving.reports.sr import sr_to_bytes

    return sr_to_bytes(build_versions(store, plan)[-1])


@dataclass(frozen=True)
class RenderRequest:
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    slice_index: int | None = None
    window: str | tuple[float, float] | None = None
    show_boxes: bool = True
    max_size: int = 1024


@dataclass(frozen=True)
class RenderPlan:
    stored_paths: tuple[str, ...]
    findings: list[object]
    request: RenderRequest


def plan_render(session: Session, study: Study, request: RenderRequest) -> RenderPlan:
    """Choose the image to draw and its findings.

    Default: the series and image of the highest-scoring finding, else the first series.

    Raises:
        RenderRequestError: unknown series or instance.
    """
    series_rows = list(
        session.scalars(sa.select(Series).where(Series.study_id == study.id).order_by(Series.id))
    )
    if not series_rows:
        raise RenderRequestError("the study has no images yet")
    top = session.scalar(
        sa.select(Finding)
        .where(Finding.study_id == study.id)
        .order_by(Finding.score.desc())
        .limit(1)
    )
    if request.series_instance_uid is not None:
        chosen = next(
            (row for row in series_rows if row.series_instance_uid == request.series_instance_uid),
            None,
        )
        if chosen is None:
            raise RenderRequestError("no such series in this study")
    else:
        chosen = next(
            (row for row in series_rows if top is not None and row.id == top.series_id),
            series_rows[0],
        )
    instances = list(
        session.scalars(
            sa.select(Instance).where(Instance.series_id == chosen.id).order_by(Instance.id)
        )
    )
    if not chosen.is_volume:
        if request.sop_instance_uid is not None:
            instances = [i for i in instances if i.sop_instance_uid == request.sop_instance_uid]
            if not instances:
                raise RenderRequestError("no such instance in this series")
        elif top is not None and top.series_id == chosen.id and top.instance_id is not None:
            instances = [i for i in instances if i.id == top.instance_id] or instances[:1]
        else:
            instances = instances[:1]
    if not instances:
        raise RenderRequestError("the series has no images")
    finding_query = sa.select(Finding).where(Finding.series_id == chosen.id)
    if not chosen.is_volume:
        finding_query = finding_query.where(Finding.instance_id == instances[0].id)
    findings = [_detected(row) for row in session.scalars(finding_query)]
    return RenderPlan(tuple(row.stored_path for row in instances), findings, request)


def render(store: ContentStore, plan: RenderPlan, cache: SeriesCache | None = None) -> bytes:
    """PNG bytes of the planned image with its boxes.

    The decoded image comes from ``cache`` (default: this process's :data:`SERIES_CACHE`),
    keyed by the content hashes of its instances, so scrolling a CT series decodes it once.

    Raises:
        RenderRequestError: a slice or window that does not apply to the image.
    """
    from oncotriage.datasets.image import UnsupportedImageError
    from oncotriage.datasets.instance import DEFAULT_CHEST_FIELD_OF_VIEW_MM
    from oncotriage.datasets.reader import read_image
    from oncotriage.serving.render import render_png

    paths = [store.path(path) for path in plan.stored_paths]
    # stored paths end in the SHA-256 of their bytes; the series is read in any order
    key = tuple(sorted(PurePosixPath(path).stem for path in plan.stored_paths))
    try:
        # Boxes are drawn in pixels: an estimated spacing (any field of view) is as good.
        image = (SERIES_CACHE if cache is None else cache).get(
            key,
            lambda: read_image(paths, field_of_view_mm=DEFAULT_CHEST_FIELD_OF_VIEW_MM),
        )
        return render_png(
            image,
            plan.findings,  # type: ignore[arg-type]
            slice_index=plan.request.slice_index,
            window=plan.request.window,
            max_size=plan.request.max_size,
            show_boxes=plan.request.show_boxes,
        )
    except (UnsupportedImageError, ValueError) as error:
        raise RenderRequestError(str(error)) from error
