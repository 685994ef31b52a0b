"""The model's result for one study as a DICOM Comprehensive 3D SR (TID 1500 Measurement Report).

What a PACS or viewer finds in the document (IHE AI Results style):

- Observation context: the algorithm as a device observer (name, model = name + version,
  manufacturer).
- Procedure reported: "CT unspecified body region" or "XR unspecified body region", from the
  source modality.
- Imaging Measurements:

  - one TID 1501 group for the study: the suspicion score (NUM, no units, ``0..1``) and the
    triage priority (SCT 260870009 "Priority", its value a code of the local scheme
    ``99ONCOTRIAGE``, declared in the Coding Scheme Identification Sequence), with the
    TID 4019 Algorithm Identification (name, version, manufacturer). This group is always
    present, so a negative study still yields a valid TID 1500 report.
  - one TID 1410 planar ROI group per finding: its tracking identifier ("Finding n", numbered by
    descending score across the study), finding category (SCT "Morphologically abnormal
    structure"), finding type (SCT "Nodule", or "Mass" for mammography), the box as a closed
    ``POLYLINE`` SCOORD (5 points, first = last) referencing the image it lies on, its score
    as DCM 111012 "Certainty of Finding" (no units, ``0..1``; the service passes the score
    through the model version's calibration, on the scale of the suspicion score and the
    thresholds, as the case view shows it), and the same Algorithm Identification.

- Current Requested Procedure Evidence: every source instance.

Only findings at or above the model's operating threshold are reported; how many were left
out is a Comment in the study group ("2 findings below the operating threshold ... not
reported"), so a reader knows the list is not everything the detector proposed.

A specialist's decision makes a second version of the document (:class:`Verification`):
CompletionFlag ``COMPLETE``, PreliminaryFlag ``FINAL``, VerificationFlag ``VERIFIED`` with the
specialist as Verifying Observer (name, organization, date-time of the decision), the
Predecessor Documents Sequence naming the AI version, the specialist as a person observer
beside the algorithm, and one more group "Specialist decision" holding the decision (DCM 121075
"Recommendation", its value a ``99ONCOTRIAGE`` code), the note (DCM 121106 "Comment") and
every corrected box as a TID 1410 planar ROI ("Specialist finding n") without an algorithm.

UIDs and dates are whatever the caller passes: :mod:`oncotriage.serving.reports.versions`
derives them from the stored result, so one version of a study's report is one object,
byte for byte, however often it is built.

CT findings are drawn as a 2D SCOORD rectangle on the slice through the box centre rather than
as SCOORD3D in the frame of reference: PACS viewers (OHIF/Cornerstone, most vendor viewers) show
SCOORD regions on the referenced image and mostly ignore SCOORD3D, and an axis-aligned 3D box is
not a planar graphic, so as SCOORD3D it would need a multi-polygon volume surface that viewers
do not draw at all. The full 3D box stays in the JSON result.

Pixel coordinates: a finding's ``box_index`` uses index coordinates whose integers are voxel
centres (see :class:`oncotriage.datasets.image.ImageVolume`, axis 0 = columns, axis 1 = rows),
while SCOORD puts ``(0, 0)`` at the outer corner of the first pixel (PS3.3 C.18.6.1.1). A box
edge at index ``x`` is therefore written as column ``x + 0.5``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid
from pydicom.valuerep import DA, DT, TM

from oncotriage.models.findings import Finding
from oncotriage.serving.enums import Priority

logger = logging.getLogger(__name__)

LOCAL_SCHEME = "99ONCOTRIAGE"
"""Coding Scheme Designator of the few concepts no standard scheme has."""

SUSPICION_SCORE = Code("SUSPICION-SCORE", LOCAL_SCHEME, "Suspicion score")
"""Study-level score: the highest finding score of the study, ``0..1``."""

TRIAGE_PRIORITY = codes.SCT.Priority
FINDING_SCORE = codes.DCM.CertaintyOfFinding
SCORE_UNIT = codes.UCUM.NoUnits
#: DCM 121106 "Comment": why a study carries no suspicion score.
NO_SCORE_COMMENT = codes.DCM.Comment
#: The Comment of a study whose radiograph had no pixel spacing (estimated instead).
SPACING_ESTIMATED_COMMENT = (
    "Spacing estimated: the image has no usable Pixel Spacing; it was estimated from an "
    "assumed field of view, so millimetre figures are approximate."
)
FINDING_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure
GEOMETRIC_PURPOSE = codes.SCT.BoundedBy

PRIORITY_CODES: dict[Priority, Code] = {
    Priority.URGENT: Code("URGENT", LOCAL_SCHEME, "Urgent"),
    Priority.SUSPICIOUS: Code("SUSPICIOUS", LOCAL_SCHEME, "Suspicious"),
    Priority.ROUTINE: Code("ROUTINE", LOCAL_SCHEME, "Routine"),
    Priority.NEEDS_MANUAL_REVIEW: Code("MANUAL-REVIEW", LOCAL_SCHEME, "Needs manual review"),
}

#: DCM 121075 "Recommendation": the specialist's decision in a verified report.
DECISION_CONCEPT = codes.DCM.Recommendation
DECISION_CODES: dict[str, Code] = {
    "refer": Code("REFER", LOCAL_SCHEME, "Refer to the cancer centre"),
    "return": Code("RETURN", LOCAL_SCHEME, "Return to the community hospital"),
    "more_imaging": Code("MORE-IMAGING", LOCAL_SCHEME, "More imaging needed"),
}


@dataclass(frozen=True)
class CorrectedRegion:
    """A box the specialist drew or corrected, in the source image's index space.

    Attributes:
        key: the SeriesInstanceUID (CT) or SOPInstanceUID (radiograph) it lies on.
        label: class index (0: nodule).
        box_index: ``xyxy`` (2D) or ``xyzxyz`` (3D; axis 2 = slice index in the series'
            order along its normal).
    """

    key: str
    label: int
    box_index: tuple[float, ...]


@dataclass(frozen=True)
class Verification:
    """A specialist's decision, which makes the report VERIFIED and FINAL.

    Attributes:
        observer_name: the specialist, as a DICOM person name (``Family^Given``).
        organization: the specialist's organization (the centre).
        verified_at: when the decision was recorded (UTC).
        decision: ``refer``, ``return`` or ``more_imaging``.
        note: the specialist's note (may be empty).
        corrected_boxes: boxes the specialist drew or corrected.
        login_name: the specialist's user name.
    """

    observer_name: str
    organization: str
    verified_at: datetime
    decision: str
    note: str = ""
    corrected_boxes: Sequence[CorrectedRegion] = field(default_factory=tuple)
    login_name: str | None = None


_DEFAULT_FINDING_TYPES: dict[int, Code] = {0: codes.SCT.Nodule}
_MAMMOGRAPHY_FINDING_TYPES: dict[int, Code] = {0: codes.SCT.Mass}

# Type 2 attributes highdicom reads from the first evidence dataset without a default.
_REQUIRED_HEADER_KEYWORDS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
)


def build_sr(
    source_datasets: Sequence[Dataset],
    findings_by_series: Mapping[str, Sequence[Finding]],
    *,
    algorithm_name: str,
    algorithm_version: str,
    suspicion_score: float | None,
    priority: Priority | str,
    no_score_reason: str | None = None,
    spacing_estimated: bool = False,
    series_number: int = 9901,
    institution_name: str | None = None,
    manufacturer: str = "oncotriage",
    finding_types: Mapping[int, Code] | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    content_qualification: str = "RESEARCH",
    content_datetime: datetime | None = None,
    left_out: int = 0,
    verification: Verification | None = None,
    predecessors: Sequence[Dataset] = (),
    series_description: str = "AI triage result",
) -> hd.sr.Comprehensive3DSR:
    """Build the DICOM SR of one study's AI result.

    Args:
        source_datasets: every instance of the study the model looked at (pixel data not
            needed; header-only datasets are enough). They must share one StudyInstanceUID.
        findings_by_series: findings per SeriesInstanceUID (a SOPInstanceUID is accepted too,
            for a series that holds several radiographs). 2D findings (``xyxy``) belong to a
            single radiograph; 3D findings (``xyzxyz``) to a CT series or multi-frame volume.
            Empty or missing entries mean "nothing found".
        algorithm_name: model name, e.g. ``"cxr-nodule-retinanet"``.
        algorithm_version: model version, e.g. ``"3"``.
        suspicion_score: study-level score (highest finding score), ``0..1``; ``None`` when
            no model scored the study (it then carries no score, never a 0.0).
        priority: triage priority (:class:`~oncotriage.serving.enums.Priority` or its string).
        no_score_reason: why there is no score (a Comment in the study group), with
            ``suspicion_score=None``.
        spacing_estimated: a radiograph had no usable pixel spacing and it was estimated:
            a Comment in the study group says its millimetres are approximate.
        series_number: Series Number of the SR series.
        institution_name: institution that produced the report.
        manufacturer: manufacturer of the algorithm and of the SR.
        finding_types: SNOMED code per class index; default Nodule (Mass for mammography).
        series_instance_uid: UID of the SR series; new if ``None``.
        sop_instance_uid: UID of the SR instance; new if ``None``.
        content_qualification: ``PRODUCT``, ``RESEARCH`` or ``SERVICE``.
        content_datetime: when the content was made (the triage, or the decision), UTC: the
            Content, Series and Instance Creation date/time; now if ``None``.
        left_out: findings below the operating threshold, not in ``findings_by_series``;
            stated in a Comment of the study group of a scored study (even when 0).
        verification: the specialist's decision; the report is then VERIFIED and FINAL.
        predecessors: earlier versions of this report (the Predecessor Documents Sequence).
        series_description: Series Description of the SR series.

    Returns:
        The SR document (a :class:`pydicom.Dataset`); write it with :func:`sr_to_bytes`.

    Raises:
        ValueError: no sources, mixed studies, findings of an unknown series, a box of the
            wrong size, or a finding outside the volume.
    """
    if not source_datasets:
        raise ValueError("build_sr needs at least one source dataset of the study")
    priority = _as_priority(priority)
    if suspicion_score is not None and not 0.0 <= float(suspicion_score) <= 1.0:
        raise ValueError(f"suspicion_score must lie in 0..1, got {suspicion_score}")
    evidence = [_header_only(ds) for ds in source_datasets]
    study_uids = {str(ds.StudyInstanceUID) for ds in evidence}
    if len(study_uids) != 1:
        raise ValueError(
            f"source datasets belong to {len(study_uids)} studies; build one SR per study"
        )
    by_series: dict[str, list[Dataset]] = {}
    by_sop: dict[str, Dataset] = {}
    for ds in evidence:
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
        by_sop[str(ds.SOPInstanceUID)] = ds

    sop_instance_uid = sop_instance_uid or generate_uid()
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=algorithm_name, version=algorithm_version, manufacturer=manufacturer
    )
    groups: list[
        hd.sr.MeasurementsAndQualitativeEvaluations
        | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    ] = [
        _study_group(
            suspicion_score=None if suspicion_score is None else float(suspicion_score),
            no_score_reason=no_score_reason,
            priority=priority,
            algorithm_id=algorithm_id,
            tracking_uid=generate_uid(entropy_srcs=[sop_instance_uid, "study"]),
        )
    ]
    if left_out < 0:
        raise ValueError(f"left_out counts findings and cannot be negative, got {left_out}")
    if suspicion_score is not None:  # a scored study states what was left out (maybe 0)
        groups[0][0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=NO_SCORE_COMMENT,
                value=left_out_comment(left_out),
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    if spacing_estimated:
        groups[0][0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=NO_SCORE_COMMENT,
                value=SPACING_ESTIMATED_COMMENT,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    located: list[tuple[Finding, Dataset, int | None, np.ndarray]] = []
    for key, findings in findings_by_series.items():
        if not findings:
            continue
        datasets = _datasets_for_key(key, by_series, by_sop)
        for finding in findings:
            located.append((finding, *_locate(finding, datasets, key)))
    located.sort(key=lambda item: -float(item[0].score))
    for number, (finding, image, frame_number, graphic_data) in enumerate(located, start=1):
        types = finding_types or (
            _MAMMOGRAPHY_FINDING_TYPES
            if str(image.get("Modality", "")) == "MG"
            else _DEFAULT_FINDING_TYPES
        )
        if finding.label not in types:
            raise ValueError(
                f"no finding type code for class {finding.label}; pass finding_types="
                "{label: Code(...)} for every class the model reports"
            )
        groups.append(
            _finding_group(
                finding,
                number=number,
                image=image,
                frame_number=frame_number,
                graphic_data=graphic_data,
                finding_type=types[finding.label],
                algorithm_id=algorithm_id,
                tracking_uid=generate_uid(entropy_srcs=[sop_instance_uid, str(number)]),
            )
        )

    if verification is not None:
        groups.append(_decision_group(verification, sop_instance_uid))
        for number, region in enumerate(verification.corrected_boxes, start=1):
            groups.append(
                _corrected_group(
                    region,
                    number=number,
                    datasets=_datasets_for_key(region.key, by_series, by_sop),
                    finding_types=finding_types,
                    tracking_uid=generate_uid(
                        entropy_srcs=[sop_instance_uid, "corrected", str(number)]
                    ),
                )
            )

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[manufacturer, algorithm_name, algorithm_version]),
            name=algorithm_name,
            manufacturer_name=manufacturer,
            model_name=f"{algorithm_name} {algorithm_version}",
        ),
    )
    person = None
    if verification is not None:
        person = hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name=verification.observer_name,
                login_name=verification.login_name,
                organization_name=verification.organization,
            ),
        )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_person_context=person, observer_device_context=observer
        ),
        procedure_reported=_procedure_reported(evidence),
        imaging_measurements=groups,
    )
    made_at = _local_naive(content_datetime or datetime.now(UTC))
    document = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=manufacturer,
        is_complete=True,
        is_final=verification is not None,  # preliminary until a specialist decides
        is_verified=verification is not None,
        verifying_observer_name=verification.observer_name if verification else None,
        verifying_organization=verification.organization if verification else None,
        previous_versions=list(predecessors) or None,
        institution_name=institution_name,
        series_description=series_description,
        content_date=made_at.date(),
        content_time=made_at.time(),
        series_date=made_at.date(),
        series_time=made_at.time(),
        manufacturer_model_name=algorithm_name,
        software_versions=algorithm_version,
        content_qualification=content_qualification,
        coding_schemes=[
            hd.coding_schemes.CodingSchemeIdentificationItem(
                designator=LOCAL_SCHEME,
                name="oncotriage local concepts",
                responsible_organization=manufacturer,
            )
        ],
    )
    # highdicom stamps these with the clock; one version of a report is one object
    document.InstanceCreationDate = DA(made_at.date())
    document.InstanceCreationTime = TM(made_at.time())
    for item in document.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = DT(made_at)
    if verification is not None:
        verified_at = _local_naive(verification.verified_at)
        document.VerifyingObserverSequence[0].VerificationDateTime = DT(verified_at)
    return document


def left_out_comment(left_out: int) -> str:
    """The study group's statement of the findings left out (below the operating threshold)."""
    if left_out == 0:
        return "All findings at or above the model's operating threshold are reported (0 left out)."
    noun = "finding" if left_out == 1 else "findings"
    return (
        f"{left_out} {noun} below the model's operating threshold not reported "
        f"({left_out} left out)."
    )


def _local_naive(moment: datetime) -> datetime:
    """``moment`` as a naive UTC date-time (DICOM DA/TM carry no zone; the service runs UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def sr_to_bytes(sr: Dataset) -> bytes:
    """Encode an SR document as a DICOM Part 10 file (preamble, file meta, dataset)."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, sr, enforce_file_format=True)
    return buffer.getvalue()


def _as_priority(priority: Priority | str) -> Priority:
    try:
        return Priority(str(priority))
    except ValueError:
        allowed = ", ".join(p.value for p in Priority)
        raise ValueError(f"unknown priority {priority!r}; use one of {allowed}") from None


#: Defined Terms of Specific Character Set (PS3.3 C.12.1.1.2) that highdicom takes.
_KNOWN_CHARSETS = frozenset(term.value for term in hd.enum.SpecificCharacterSetValues)


def _header_only(ds: Dataset) -> Dataset:
    """A shallow copy of ``ds`` without pixel data, with empty type 2 patient/study attributes
    added where the source lacks them (highdicom requires them on the first evidence item)."""
    header = Dataset()
    for element in ds:
        if element.tag.group >= 0x7FE0:  # pixel data and beyond
            continue
        header.add(element)
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if keyword not in header:
            raise ValueError(f"source dataset lacks {keyword}; it cannot be referenced")
    for keyword in _REQUIRED_HEADER_KEYWORDS:
        if keyword not in header:
            setattr(header, keyword, "")
    _known_character_set(header)
    return header


def _known_character_set(header: Dataset) -> None:
    """Give ``header`` a Specific Character Set highdicom accepts.

    Its text values are already decoded (iterating the source decoded them, with pydicom's
    default where a term was unknown); an unknown term (``NOT_A_CHARSET``, seen from real
    senders) is replaced by UTF-8, in which the report then writes those values.
    """
    terms = header.get("SpecificCharacterSet")
    if terms is None:
        return
    values = [terms] if isinstance(terms, str) else list(terms)
    if all(str(term).strip() in _KNOWN_CHARSETS for term in values if str(term).strip()):
        return
    header.SpecificCharacterSet = "ISO_IR 192"


def _datasets_for_key(
    key: str, by_series: Mapping[str, list[Dataset]], by_sop: Mapping[str, Dataset]
) -> list[Dataset]:
    if key in by_series:
        return by_series[key]
    if key in by_sop:
        return [by_sop[key]]
    raise ValueError(
        f"findings are given for {key!r}, which is neither a SeriesInstanceUID nor a "
        "SOPInstanceUID of the source datasets"
    )


def _rectangle(box_xy: Sequence[float]) -> np.ndarray:
    """Closed POLYLINE (5 points) of an index-space ``xyxy`` box, in SCOORD pixel coordinates."""
    x0, y0, x1, y1 = (float(v) + 0.5 for v in box_xy)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=float)


def _locate(
    finding: Finding, datasets: Sequence[Dataset], key: str
) -> tuple[Dataset, int | None, np.ndarray]:
    """The image (and frame) a finding is drawn on, and its SCOORD graphic data."""
    box = tuple(float(v) for v in finding.box_index)
    if len(box) == 4:
        if len(datasets) != 1:
            raise ValueError(
                f"a 2D finding was given for series {key!r}, which holds {len(datasets)} "
                "instances; key radiograph findings by SOPInstanceUID in that case"
            )
        return datasets[0], None, _rectangle(box)
    if len(box) == 6:
        if len(finding.box_world) != 6:
            raise ValueError("a 3D finding needs an xyzxyz box_world to find its slice")
        world = np.asarray(finding.box_world, dtype=float)
        centre = (world[:3] + world[3:]) / 2.0
        image, frame_number = _nearest_plane(datasets, centre, key)
        return image, frame_number, _rectangle((box[0], box[1], box[3], box[4]))
    raise ValueError(f"box_index must have 4 (xyxy) or 6 (xyzxyz) values, got {len(box)}")


def _nearest_plane(
    datasets: Sequence[Dataset], centre: np.ndarray, key: str
) -> tuple[Dataset, int | None]:
    """The slice (instance, 1-based frame number for multi-frame) whose plane is nearest to
    ``centre`` (LPS mm)."""
    planes = [plane for ds in datasets for plane in _planes(ds)]
    if not planes:
        raise ValueError(
            f"series {key!r} has no ImagePositionPatient/ImageOrientationPatient; "
            "a 3D finding cannot be placed on a slice"
        )
    distances = np.array(
        [float(np.dot(centre - position, normal)) for _, _, position, normal in planes]
    )
    best = int(np.argmin(np.abs(distances)))
    # Distance of each plane along the shared normal, to bound "outside the volume".
    normal = planes[0][3]
    heights = np.sort([float(np.dot(position, normal)) for _, _, position, _ in planes])
    tolerance = float(np.max(np.diff(heights))) if len(heights) > 1 else 1.0
    if abs(distances[best]) > max(tolerance, 1e-3):
        raise ValueError(
            f"a finding centred at {centre.round(2).tolist()} mm lies {abs(distances[best]):.1f} "
            f"mm from the nearest slice of series {key!r}; box_world does not match the images"
        )
    dataset, frame_number, _, _ = planes[best]
    return dataset, frame_number


def _planes(ds: Dataset) -> list[tuple[Dataset, int | None, np.ndarray, np.ndarray]]:
    """``(dataset, frame_number, position, normal)`` of every image plane of an instance."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    if per_frame is not None:
        planes = []
        shared_orientation = _orientation_of(shared[0]) if shared else None
        for number, group in enumerate(per_frame, start=1):
            orientation = _orientation_of(group)
            if orientation is None:
                orientation = shared_orientation
            position_seq = group.get("PlanePositionSequence")
            if orientation is None or not position_seq:
                return []
            position = np.asarray(position_seq[0].ImagePositionPatient, dtype=float)
            planes.append((ds, number if frames > 1 else None, position, orientation))
        return planes
    if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
        orientation = _normal(ds.ImageOrientationPatient)
        position = np.asarray(ds.ImagePositionPatient, dtype=float)
        return [(ds, None, position, orientation)]
    return []


def _orientation_of(group: Dataset) -> np.ndarray | None:
    sequence = group.get("PlaneOrientationSequence")
    if not sequence:
        return None
    return _normal(sequence[0].ImageOrientationPatient)


def _normal(image_orientation: Sequence[float]) -> np.ndarray:
    row, column = np.asarray(image_orientation[:3], float), np.asarray(image_orientation[3:], float)
    normal = np.cross(row, column)
    return normal / np.linalg.norm(normal)


def _procedure_reported(evidence: Sequence[Dataset]) -> Code:
    modalities = {str(ds.get("Modality", "")) for ds in evidence}
    if "CT" in modalities:
        return codes.LN.CTUnspecifiedBodyRegion
    if modalities & {"DX", "CR", "MG"}:
        return codes.LN.XRUnspecifiedBodyRegion
    return codes.SCT.ImagingProcedure


def _study_group(
    *,
    suspicion_score: float | None,
    no_score_reason: str | None,
    priority: Priority,
    algorithm_id: hd.sr.AlgorithmIdentification,
    tracking_uid: str,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    measurements = (
        [hd.sr.Measurement(name=SUSPICION_SCORE, value=suspicion_score, unit=SCORE_UNIT)]
        if suspicion_score is not None
        else None
    )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier="Study triage"),
        algorithm_id=algorithm_id,
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=TRIAGE_PRIORITY, value=PRIORITY_CODES[priority])
        ],
    )
    if suspicion_score is None:
        reason = no_score_reason or "no model scored this study"
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=NO_SCORE_COMMENT,
                value=f"No suspicion score: {reason}"[:1024],
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return group


def _finding_group(
    finding: Finding,
    *,
    number: int,
    image: Dataset,
    frame_number: int | None,
    graphic_data: np.ndarray,
    finding_type: Code,
    algorithm_id: hd.sr.AlgorithmIdentification,
    tracking_uid: str,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    source = hd.sr.SourceImageForRegion(
        referenced_sop_class_uid=str(image.SOPClassUID),
        referenced_sop_instance_uid=str(image.SOPInstanceUID),
        referenced_frame_numbers=[frame_number] if frame_number is not None else None,
    )
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=graphic_data,
        source_image=source,
    )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier=f"Finding {number}"
        ),
        referenced_region=region,
        finding_type=finding_type,
        finding_category=FINDING_CATEGORY,
        algorithm_id=algorithm_id,
        geometric_purpose=GEOMETRIC_PURPOSE,
        measurements=[
            hd.sr.Measurement(name=FINDING_SCORE, value=float(finding.score), unit=SCORE_UNIT)
        ],
    )


def _decision_group(
    verification: Verification, sop_instance_uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The specialist's decision and note, as one TID 1501 group."""
    decision = DECISION_CODES.get(verification.decision)
    if decision is None:
        allowed = ", ".join(DECISION_CODES)
        raise ValueError(f"unknown decision {verification.decision!r}; use one of {allowed}")
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(entropy_srcs=[sop_instance_uid, "decision"]),
            identifier="Specialist decision",
        ),
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=DECISION_CONCEPT, value=decision)
        ],
    )
    if verification.note:
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=NO_SCORE_COMMENT,
                value=verification.note[:1024],
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return group


def _corrected_group(
    region: CorrectedRegion,
    *,
    number: int,
    datasets: Sequence[Dataset],
    finding_types: Mapping[int, Code] | None,
    tracking_uid: str,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """A specialist's box as a TID 1410 planar ROI on the image (or slice) it lies on."""
    box = tuple(float(v) for v in region.box_index)
    frame_number: int | None = None
    if len(box) == 4:
        if len(datasets) != 1:
            raise ValueError(
                f"a 2D box was given for series {region.key!r} of {len(datasets)} instances; "
                "name the radiograph by its SOPInstanceUID"
            )
        image = datasets[0]
        xy = box
    elif len(box) == 6:
        image, frame_number = _plane_at_index(datasets, (box[2] + box[5]) / 2.0, region.key)
        xy = (box[0], box[1], box[3], box[4])
    else:
        raise ValueError(f"box_index must have 4 (xyxy) or 6 (xyzxyz) values, got {len(box)}")
    types = finding_types or (
        _MAMMOGRAPHY_FINDING_TYPES
        if str(image.get("Modality", "")) == "MG"
        else _DEFAULT_FINDING_TYPES
    )
    finding_type = types.get(region.label, codes.SCT.MorphologicallyAbnormalStructure)
    source = hd.sr.SourceImageForRegion(
        referenced_sop_class_uid=str(image.SOPClassUID),
        referenced_sop_instance_uid=str(image.SOPInstanceUID),
        referenced_frame_numbers=[frame_number] if frame_number is not None else None,
    )
    region_item = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=_rectangle(xy),
        source_image=source,
    )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier=f"Specialist finding {number}"
        ),
        referenced_region=region_item,
        finding_type=finding_type,
        finding_category=FINDING_CATEGORY,
        geometric_purpose=GEOMETRIC_PURPOSE,
    )


def _plane_at_index(
    datasets: Sequence[Dataset], index: float, key: str
) -> tuple[Dataset, int | None]:
    """The slice at ``index`` of a series' planes sorted along their normal (the volume's
    axis 2, as the reader orders it)."""
    planes = [plane for ds in datasets for plane in _planes(ds)]
    if not planes:
        raise ValueError(f"series {key!r} has no plane geometry; a 3D box cannot be placed")
    normal = planes[0][3]
    ordered = sorted(planes, key=lambda plane: float(np.dot(plane[2], normal)))
    slice_index = int(round(index))
    if not 0 <= slice_index < len(ordered):
        raise ValueError(f"slice {slice_index} is outside series {key!r} ({len(ordered)} slices)")
    dataset, frame_number, _, _ = ordered[slice_index]
    return dataset, frame_number
