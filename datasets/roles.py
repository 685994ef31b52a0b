"""What each object in a study is for: the images to triage, or objects kept for the record.

A PACS or Orthanc forwarding a whole CT study sends, beside the axial series, localizers
(scouts), a dose report (a radiation dose SR or a secondary capture of the dose page),
structured reports, presentation states and key object selections. These are stored with the
study and never refused, but only ``diagnostic`` series are triaged.

The rule (:func:`series_role`), first match wins:

1. SOP class of a structured report (including the radiation dose SR): ``sr``
   (``dose_report`` for the dose SR classes);
2. Secondary Capture: ``dose_report`` when Image Type or the series/image description names
   a dose report or dose info, else ``secondary_capture``;
3. a presentation state: ``presentation_state``; Key Object Selection: ``key_object``;
4. a CT image whose Image Type holds ``LOCALIZER`` (or whose description says scout,
   topogram, scanogram or surview): ``localizer``;
5. a screening image class (CT, CR, DX, MG): ``diagnostic``;
6. anything else is not for this service (refused, as before).
"""

from __future__ import annotations

from enum import StrEnum

import pydicom
from pydicom.uid import (
    BasicTextSRStorage,
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EnhancedSRStorage,
    EnhancedXRayRadiationDoseSRStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    KeyObjectSelectionDocumentStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    PatientRadiationDoseSRStorage,
    SecondaryCaptureImageStorage,
    XRayRadiationDoseSRStorage,
)

from oncotriage.datasets.instance import SCREENING_SOP_CLASSES


class SeriesRole(StrEnum):
    DIAGNOSTIC = "diagnostic"
    LOCALIZER = "localizer"
    DOSE_REPORT = "dose_report"
    SR = "sr"
    SECONDARY_CAPTURE = "secondary_capture"
    PRESENTATION_STATE = "presentation_state"
    KEY_OBJECT = "key_object"


DOSE_SR_CLASSES = frozenset(
    {XRayRadiationDoseSRStorage, EnhancedXRayRadiationDoseSRStorage, PatientRadiationDoseSRStorage}
)
SR_CLASSES = frozenset(
    {BasicTextSRStorage, EnhancedSRStorage, ComprehensiveSRStorage, Comprehensive3DSRStorage}
)
SECONDARY_CAPTURE_CLASSES = frozenset(
    {
        SecondaryCaptureImageStorage,
        MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
        MultiFrameTrueColorSecondaryCaptureImageStorage,
    }
)
#: Presentation State Storage classes all share this prefix (PS3.4 B.5).
PRESENTATION_STATE_PREFIX = "1.2.840.10008.5.1.4.1.1.11."
_LOCALIZER_WORDS = ("LOCALIZER", "SCOUT", "TOPOGRAM", "SCANOGRAM", "SURVIEW")


def _words(ds: pydicom.Dataset) -> str:
    image_type = ds.get("ImageType") or []
    values = [image_type] if isinstance(image_type, str) else list(image_type)
    for keyword in ("SeriesDescription", "ImageComments", "ProtocolName"):
        values.append(str(ds.get(keyword) or ""))
    return " ".join(str(value) for value in values).upper()


def series_role(ds: pydicom.Dataset) -> SeriesRole | None:
    """The role of the series ``ds`` belongs to, or ``None`` when the service does not take
    this kind of object at all (see the module docstring for the rule)."""
    sop_class = str(ds.get("SOPClassUID") or "")
    if sop_class in DOSE_SR_CLASSES:
        return SeriesRole.DOSE_REPORT
    if sop_class in SR_CLASSES:
        return SeriesRole.SR
    if sop_class in SECONDARY_CAPTURE_CLASSES:
        words = _words(ds)
        if "DOSE" in words:
            return SeriesRole.DOSE_REPORT
        return SeriesRole.SECONDARY_CAPTURE
    if sop_class.startswith(PRESENTATION_STATE_PREFIX) or sop_class == str(
        GrayscaleSoftcopyPresentationStateStorage
    ):
        return SeriesRole.PRESENTATION_STATE
    if sop_class == KeyObjectSelectionDocumentStorage:
        return SeriesRole.KEY_OBJECT
    if sop_class in SCREENING_SOP_CLASSES:
        if SCREENING_SOP_CLASSES[sop_class] == "CT" and any(
            word in _words(ds) for word in _LOCALIZER_WORDS
        ):
            return SeriesRole.LOCALIZER
        return SeriesRole.DIAGNOSTIC
    return None
