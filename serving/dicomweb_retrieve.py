"""WADO-RS (PS3.18 10.4): what a study, series or instance retrieve gives back.

Every retrieve starts from :func:`retrievable_instances`: the caller's stored instances that
match the path, then :func:`extra_instances` (objects the service makes itself, such as
result SRs, which are not rows of ``instances``). Instances, their metadata, frames and
rendered pictures are all made from a :class:`RetrievableInstance`.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import sqlalchemy as sa
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy.orm import Session

from oncotriage.serving.db.models import Instance, Series, Study
from oncotriage.serving.dicomweb_index import PIXEL_DATA_TAG, instance_header
from oncotriage.serving.render import apply_window
from oncotriage.serving.storage import ContentStore

#: Most frames one request may name (``/frames/1,2,...``).
MAX_FRAMES_PER_REQUEST = 1000
#: Largest rendered picture (either side), like the worklist's renders.
MAX_VIEWPORT = 4096


class RetrieveError(ValueError):
    """A request this instance cannot answer; the message says why (a 400)."""


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrievableInstance:
    """One object a WADO-RS retrieve can return.

    Attributes:
        study_id: the service's study id (for the audit trail).
        study_instance_uid, series_instance_uid, sop_instance_uid, sop_class_uid: its UIDs.
        load: its DICOM Part 10 bytes.
        header: its header as DICOM JSON without pixel data.
    """

    study_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    load: Callable[[], bytes]
    header: Callable[[], dict[str, Any]]

    def url(self, root: str) -> str:
        return (
            f"{root}/studies/{self.study_instance_uid}/series/{self.series_instance_uid}"
            f"/instances/{self.sop_instance_uid}"
        )


def extra_instances(
    session: Session, store: ContentStore, studies: Sequence[Study]
) -> list[RetrievableInstance]:
    """Objects of ``studies`` that the service made rather than stored: each study's result
    SRs (the AI result, series 9901, and a verified version per decision, series 9902), so
    that a study retrieve, its metadata and instance retrieves by UID include them. None
    (logged) for a study whose SR cannot be built: its stored images are still served."""
    from oncotriage.serving.reports.sr import sr_to_bytes
    from oncotriage.serving.reports.versions import result_instances

    made: list[RetrievableInstance] = []
    for study in studies:
        try:
            reports = result_instances(session, store, study)
        except ValueError as error:
            logger.warning("study %s: result SR not built for WADO-RS: %s", study.id, error)
            continue
        for ds in reports:
            made.append(
                RetrievableInstance(
                    study_id=study.id,
                    study_instance_uid=str(ds.StudyInstanceUID),
                    series_instance_uid=str(ds.SeriesInstanceUID),
                    sop_instance_uid=str(ds.SOPInstanceUID),
                    sop_class_uid=str(ds.SOPClassUID),
                    load=partial(sr_to_bytes, ds),
                    header=partial(_made_header, ds),
                )
            )
    return made


def _made_header(ds: Any) -> dict[str, Any]:
    """DICOM JSON of an object the service made, read back from its encoded bytes (as a
    stored one is: values typed as on the wire, e.g. dates as DA strings)."""
    import io

    import pydicom

    from oncotriage.serving.reports.sr import sr_to_bytes

    header: dict[str, Any] = pydicom.dcmread(io.BytesIO(sr_to_bytes(ds))).to_json_dict()
    return header


def retrievable_instances(
    session: Session,
    store: ContentStore,
    visible: sa.ColumnElement[bool],
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> list[RetrievableInstance]:
    """The visible instances under a WADO-RS path, in series then arrival order (empty:
    404, whether it does not exist or belongs to someone else)."""
    studies = list(
        session.scalars(sa.select(Study).where(visible, Study.study_instance_uid == study_uid))
    )
    if not studies:
        return []
    conditions: list[sa.ColumnElement[bool]] = [
        Instance.study_id.in_([study.id for study in studies])
    ]
    if series_uid is not None:
        conditions.append(Series.series_instance_uid == series_uid)
    if sop_uid is not None:
        conditions.append(Instance.sop_instance_uid == sop_uid)
    rows = session.execute(
        sa.select(Instance, Series.series_instance_uid)
        .join(Series, Series.id == Instance.series_id)
        .where(*conditions)
        .order_by(Series.id, Instance.id)
    )
    found = [_stored(store, instance, study_uid, series) for instance, series in rows]
    if sop_uid is not None and found:
        return found  # a stored instance named by its UID: nothing made needs building
    for extra in extra_instances(session, store, studies):
        if (series_uid is None or extra.series_instance_uid == series_uid) and (
            sop_uid is None or extra.sop_instance_uid == sop_uid
        ):
            found.append(extra)
    return found


def _stored(
    store: ContentStore, instance: Instance, study_uid: str, series_uid: str
) -> RetrievableInstance:
    return RetrievableInstance(
        study_id=instance.study_id,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        sop_instance_uid=instance.sop_instance_uid,
        sop_class_uid=instance.sop_class_uid,
        load=lambda: store.get(instance.stored_path),
        header=lambda: instance_header(store, instance),
    )


def metadata(instance: RetrievableInstance, root: str) -> dict[str, Any]:
    """The instance's metadata (PS3.18 10.4.1.2): its header as DICOM JSON, pixel data as a
    ``BulkDataURI`` naming its frames."""
    header = dict(instance.header())
    frames = _frame_count(header)
    if "00280010" in header:  # an image: Rows is Type 1 wherever there is pixel data
        numbers = ",".join(str(n) for n in range(1, frames + 1))
        header[PIXEL_DATA_TAG] = {
            "vr": "OW",
            "BulkDataURI": f"{instance.url(root)}/frames/{numbers}",
        }
    return header


def _frame_count(header: dict[str, Any]) -> int:
    values = header.get("00280008", {}).get("Value") or [1]
    try:
        return max(1, int(values[0]))
    except (TypeError, ValueError):
        return 1


def parse_frame_list(text: str) -> list[int]:
    """``"1,3"`` -> ``[1, 3]``; frame numbers are 1-based (PS3.18 8.3.3.1)."""
    numbers: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if re.fullmatch(r"[0-9]{1,9}", item) is None or int(item) < 1:
            raise RetrieveError(
                f"frame {item[:12]!r} is not a frame number: frames are numbered from 1, "
                "several separated by commas (e.g. 1,2)"
            )
        numbers.append(int(item))
    if len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise RetrieveError(f"at most {MAX_FRAMES_PER_REQUEST} frames per request")
    return numbers


def _dataset(instance: RetrievableInstance) -> Dataset:
    from oncotriage.datasets.instance import read_dataset

    ds = read_dataset(instance.load())
    if "PixelData" not in ds:
        raise RetrieveError("this instance holds no pixel data (it has no frames)")
    return ds


def _check_frames(ds: Dataset, numbers: Sequence[int]) -> int:
    count = max(1, int(ds.get("NumberOfFrames") or 1))
    for number in numbers:
        if number > count:
            raise RetrieveError(f"frame {number} does not exist: this instance has {count}")
    return count


def frames(instance: RetrievableInstance, numbers: Sequence[int]) -> list[bytes]:
    """The frames as uncompressed little-endian pixel bytes (PS3.18 8.7.3.5.1,
    ``application/octet-stream``; transfer syntax Explicit VR Little Endian)."""
    from pydicom.pixels import pixel_array

    ds = _dataset(instance)
    count = _check_frames(ds, numbers)
    syntax = ds.file_meta.TransferSyntaxUID
    bits = int(ds.get("BitsAllocated") or 16)
    if not syntax.is_compressed and syntax.is_little_endian and bits % 8 == 0:
        pixel_bytes = bytes(ds.PixelData)
        size = len(pixel_bytes) // count
        return [pixel_bytes[(n - 1) * size : n * size] for n in numbers]
    out = []
    for number in numbers:
        array = pixel_array(ds, index=number - 1 if count > 1 else None)
        out.append(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())
    return out


FRAME_TRANSFER_SYNTAX = ExplicitVRLittleEndian


@dataclass(frozen=True)
class RenderOptions:
    """``/rendered`` query parameters (PS3.18 8.3.5.1)."""

    media_type: str = "image/jpeg"
    window: tuple[float, float] | None = None
    viewport: tuple[int, int] | None = None
    quality: int = 90

    @classmethod
    def parse(
        cls, media_type: str, window: str | None, viewport: str | None, quality: int | None
    ) -> RenderOptions:
        parsed_window = None
        if window:
            parts = [part.strip() for part in window.split(",")]
            try:
                centre, width = float(parts[0]), float(parts[1])
            except (IndexError, ValueError):
                raise RetrieveError(
                    "window is centre,width[,function] in the image's units, e.g. "
                    "window=-600,1500,linear"
                ) from None
            function = parts[2].lower() if len(parts) > 2 else "linear"
            if function not in ("linear", "linear-exact", "sigmoid"):
                raise RetrieveError("the window function is linear, linear-exact or sigmoid")
            if not (np.isfinite(centre) and np.isfinite(width)) or width <= 0:
                raise RetrieveError("the window width must be a positive number")
            parsed_window = (centre, width)
        parsed_viewport = None
        if viewport:
            try:
                vw, vh = (int(part) for part in viewport.split(",")[:2])
            except ValueError:
                raise RetrieveError("viewport is width,height in pixels, e.g. 512,512") from None
            if not (1 <= vw <= MAX_VIEWPORT and 1 <= vh <= MAX_VIEWPORT):
                raise RetrieveError(f"viewport sides are 1 to {MAX_VIEWPORT} pixels")
            parsed_viewport = (vw, vh)
        return cls(media_type, parsed_window, parsed_viewport, quality or 90)


def rendered(instance: RetrievableInstance, frame: int, options: RenderOptions) -> bytes:
    """One frame as a picture: the modality LUT, then the window (the ``window`` parameter,
    else the header's first Window Center/Width, else the frame's range), MONOCHROME1
    inverted; PNG or JPEG."""
    from PIL import Image
    from pydicom.pixels import apply_modality_lut, pixel_array

    ds = _dataset(instance)
    count = _check_frames(ds, [frame])
    array = pixel_array(ds, index=frame - 1 if count > 1 else None)
    photometric = str(ds.get("PhotometricInterpretation") or "MONOCHROME2")
    if array.ndim == 3 and array.shape[-1] in (3, 4):  # colour: shown as stored
        grey_or_rgb = np.clip(array, 0, 255).astype(np.uint8)
        picture = Image.fromarray(grey_or_rgb[..., :3])
    else:
        slope, intercept = _rescale(ds, frame)
        if slope is not None and intercept is not None:  # multi-frame: per frame
            values = array.astype(np.float64) * slope + intercept
        else:
            values = apply_modality_lut(array, ds).astype(np.float64)
        centre, width = options.window or _header_window(ds, values, frame)
        grey = apply_window(values, centre, width)
        if photometric == "MONOCHROME1":
            grey = 255 - grey
        picture = Image.fromarray(grey)
    if options.viewport is not None:
        picture.thumbnail(options.viewport, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if options.media_type == "image/png":
        picture.save(buffer, format="PNG")
    else:
        picture.convert("RGB" if picture.mode not in ("L", "RGB") else picture.mode).save(
            buffer, format="JPEG", quality=max(1, min(100, options.quality))
        )
    return buffer.getvalue()


def _functional_group(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """``sequence``'s item for ``frame`` (1-based) from the Per-frame, else the Shared
    Functional Groups of a multi-frame object."""
    for groups, index in (
        ("PerFrameFunctionalGroupsSequence", frame - 1),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        items = ds.get(groups) or []
        if index < len(items) and sequence in items[index] and items[index][sequence].value:
            item: Dataset = items[index][sequence].value[0]
            return item
    return None


def _rescale(ds: Dataset, frame: int) -> tuple[float | None, float | None]:
    if "RescaleSlope" in ds or "PixelValueTransformationSequence" in ds:
        return None, None
    item = _functional_group(ds, frame, "PixelValueTransformationSequence")
    if item is None or "RescaleSlope" not in item:
        return None, None
    return float(item.RescaleSlope), float(item.get("RescaleIntercept") or 0.0)


def _header_window(ds: Dataset, values: np.ndarray, frame: int = 1) -> tuple[float, float]:
    if "WindowCenter" not in ds:
        voi = _functional_group(ds, frame, "FrameVOILUTSequence")
        if voi is not None:
            ds = voi
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    try:
        first_centre = float(centre[0] if _is_multi(centre) else centre)
        first_width = float(width[0] if _is_multi(width) else width)
        if first_width > 0:
            return first_centre, first_width
    except (TypeError, ValueError, IndexError):
        pass
    low, high = float(values.min()), float(values.max())
    return (low + high) / 2.0, max(high - low, 1.0)


def _is_multi(value: Any) -> bool:
    return isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"


def metadata_json(instances: Sequence[RetrievableInstance], root: str) -> bytes:
    return json.dumps([metadata(instance, root) for instance in instances]).encode()
