"""Pixel Data to physical values: decoding, Modality LUT, VOI LUT and photometric handling.

Arrays here keep pydicom's order, ``(frames, rows, columns)`` or ``(rows, columns)``; the
transpose to the ``(x, y[, z])`` order of :class:`~oncotriage.datasets.image.ImageVolume`
happens in :mod:`oncotriage.datasets.reader`.

Radiograph presentation follows the grayscale pipeline of DICOM PS3.3 C.11 / PS3.4 N.2:
stored values -> Modality LUT (Rescale Slope/Intercept or Modality LUT Sequence) -> VOI LUT
(VOI LUT Sequence, else Window Center/Width with VOI LUT Function) -> presentation values,
scaled here to ``0..1`` and inverted for MONOCHROME1 (or Presentation LUT Shape INVERSE) so
that a higher value is always brighter.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi, get_decoder
from pydicom.uid import UID

from oncotriage.datasets.image import RefusalCode, UnsupportedImageError

logger = logging.getLogger(__name__)

#: Hounsfield value written where a CT slice holds Pixel Padding Value (outside the
#: reconstruction circle): air, so padding never looks like tissue.
CT_PADDING_HU = -1024.0


def transfer_syntax_of(ds: pydicom.Dataset) -> UID:
    """The dataset's Transfer Syntax UID.

    Raises:
        UnsupportedImageError: ``transfer_syntax`` when the file meta has none.
    """
    file_meta = getattr(ds, "file_meta", None)
    uid = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if not uid:
        raise UnsupportedImageError(
            "the file meta information has no Transfer Syntax UID (0002,0010); "
            "send DICOM Part 10 files as written by the modality or PACS",
            code=RefusalCode.TRANSFER_SYNTAX,
        )
    return UID(str(uid))


def transfer_syntax_label(uid: str) -> str:
    """``"1.2.840.10008.1.2.4.90 (JPEG 2000 Image Compression (Lossless Only))"``."""
    name = UID(uid).name
    return f"{uid} ({name})" if name and name != uid else f"{uid} (unknown)"


def check_decodable(uid: str) -> None:
    """Refuse a transfer syntax the installed decoders cannot read.

    Raises:
        UnsupportedImageError: ``transfer_syntax``, naming the syntax and what to send instead.
    """
    advice = (
        "send uncompressed (Explicit VR Little Endian), JPEG baseline/lossless, JPEG-LS, "
        "JPEG 2000 or RLE"
    )
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise UnsupportedImageError(
            f"transfer syntax {transfer_syntax_label(uid)} not supported; {advice}",
            code=RefusalCode.TRANSFER_SYNTAX,
        ) from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin available"
        raise UnsupportedImageError(
            f"transfer syntax {transfer_syntax_label(uid)} not supported: no decoder is "
            f"installed here ({missing}); {advice}",
            code=RefusalCode.TRANSFER_SYNTAX,
        )


def expected_native_length(ds: pydicom.Dataset) -> int:
    """Bytes an uncompressed Pixel Data element needs (without the trailing pad byte)."""
    rows, columns = int(ds.Rows), int(ds.Columns)
    frames = number_of_frames(ds)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    total_bits = rows * columns * frames * samples * bits
    return (total_bits + 7) // 8


def number_of_frames(ds: pydicom.Dataset) -> int:
    """Number of Frames, ``1`` when absent or empty."""
    value = ds.get("NumberOfFrames")
    try:
        return max(int(value), 1) if value not in (None, "") else 1
    except (TypeError, ValueError):
        raise UnsupportedImageError(
            f"Number of Frames {value!r} is not an integer", code=RefusalCode.CORRUPT
        ) from None


def decode_frames(
    ds: pydicom.Dataset, *, index: int | None = None, decoding_plugin: str = ""
) -> np.ndarray:
    """Decode stored pixel values.

    Args:
        ds: a dataset with Pixel Data; any transfer syntax the installed plugins decode.
        index: decode only this frame (0-based); all frames when ``None``.
        decoding_plugin: force one pydicom decoding plugin (``"pylibjpeg"``, ``"gdcm"``,
            ``"pyjpegls"``, ``"pillow"``, ``"pydicom"``); ``""`` lets pydicom choose.

    Returns:
        Stored values (no rescale), shape ``(frames, rows, columns)``; one frame when
        ``index`` is given.

    Raises:
        UnsupportedImageError: ``transfer_syntax`` when no decoder exists, ``corrupt`` when
            the data cannot be decoded (truncated, inconsistent with its header).
    """
    uid = transfer_syntax_of(ds)
    check_decodable(uid)
    if int(ds.get("SamplesPerPixel") or 1) != 1:
        raise UnsupportedImageError(
            "colour pixel data is not supported; send the original grayscale image",
            code=RefusalCode.PHOTOMETRIC,
        )
    try:
        array = pydicom.pixels.pixel_array(ds, index=index, decoding_plugin=decoding_plugin)
    except UnsupportedImageError:
        raise
    except Exception as error:  # pydicom and its plugins raise many types for bad data
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise UnsupportedImageError(
            f"Pixel Data could not be decoded as {UID(uid).name}: {first_line}",
            code=RefusalCode.CORRUPT,
        ) from error
    return np.asarray(array).reshape(-1, int(ds.Rows), int(ds.Columns))


def padding_mask(stored: np.ndarray, ds: pydicom.Dataset) -> np.ndarray | None:
    """Pixels equal to Pixel Padding Value (or within its range limit); ``None`` if unset."""
    value = ds.get("PixelPaddingValue")
    if value is None or value == "":
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    if limit is None or limit == "":
        return np.asarray(stored == int(value))
    low, high = sorted((int(value), int(limit)))
    return np.asarray((stored >= low) & (stored <= high))


def rescale(stored: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """``stored * slope + intercept`` as float32 (the linear Modality LUT)."""
    return (stored.astype(np.float64) * slope + intercept).astype(np.float32)


def rescale_of(item: Any) -> tuple[float, float]:
    """Rescale Slope and Intercept of a dataset or functional-group item (defaults 1, 0)."""
    slope = item.get("RescaleSlope")
    intercept = item.get("RescaleIntercept")
    return (
        float(slope) if slope not in (None, "") else 1.0,
        float(intercept) if intercept not in (None, "") else 0.0,
    )


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Window Center/Width to ``0..1`` as PS3.3 C.11.2.1.2 defines with ``ymin=0, ymax=1``.

    Args:
        values: Modality LUT output, any shape (not modified).
        center: Window Center.
        width: Window Width (``>= 1`` for LINEAR, ``> 0`` otherwise).
        function: VOI LUT Function: ``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID``.

    Returns:
        float64 array of the shape of ``values``.
    """
    return _window_in_place(values.astype(np.float64), center, width, function)


def _window_in_place(
    values: np.ndarray, center: float, width: float, function: str = "LINEAR"
) -> np.ndarray:
    """:func:`window` on a float64 array the caller owns, overwritten with the result.

    The same operations in the same order as the textbook formulas (bit-identical results),
    without a temporary array per operation: on a radiograph of a few hundred thousand
    pixels each temporary costs more in page faults than in arithmetic.
    """
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        if width <= 0:
            raise UnsupportedImageError(f"Window Width {width} must be > 0", code=RefusalCode.VOI)
        # 1 / (1 + exp(-4 (v - c) / w))
        values -= center
        np.multiply(-4.0, values, out=values)
        values /= width
        np.exp(values, out=values)
        values += 1.0
        return np.divide(1.0, values, out=values)
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise UnsupportedImageError(f"Window Width {width} must be > 0", code=RefusalCode.VOI)
        # clip((v - c) / w + 0.5, 0, 1)
        values -= center
        values /= width
        values += 0.5
        return np.clip(values, 0.0, 1.0, out=values)
    if function != "LINEAR":
        raise UnsupportedImageError(
            f"VOI LUT Function {function!r} is not one of LINEAR, LINEAR_EXACT, SIGMOID",
            code=RefusalCode.VOI,
        )
    if width < 1:
        raise UnsupportedImageError(f"Window Width {width} must be >= 1", code=RefusalCode.VOI)
    if width == 1:
        return np.where(values > center - 0.5, 1.0, 0.0)
    # clip((v - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    values -= center - 0.5
    values /= width - 1
    values += 0.5
    return np.clip(values, 0.0, 1.0, out=values)


def _modality_values(stored: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """The Modality LUT output as a new float64 array (``apply_modality_lut``'s values)."""
    if not ds.get("ModalityLUTSequence") and "RescaleSlope" in ds and "RescaleIntercept" in ds:
        # apply_modality_lut's arithmetic (astype, * slope, + intercept), with one array.
        values = stored.astype(np.float64)
        values *= float(ds.RescaleSlope)
        values += float(ds.RescaleIntercept)
        return values
    return np.array(apply_modality_lut(stored, ds), dtype=np.float64)


def _first(value: Any) -> float:
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        return float(value[0])
    return float(value)


def radiograph_presentation(ds: pydicom.Dataset, stored: np.ndarray) -> np.ndarray:
    """Presentation values of one radiograph frame, ``0..1``, higher is brighter.

    Args:
        ds: the radiograph's dataset (Modality LUT, VOI LUT, Photometric Interpretation,
            Presentation LUT Shape are read from it).
        stored: stored values, shape ``(rows, columns)``.

    Returns:
        float32 array, shape ``(rows, columns)``. The first VOI (index 0, the default view)
        is used; a VOI LUT Sequence is preferred over a window when both are present. With
        no VOI at all (typical of "for processing" images) the image's own range is mapped
        linearly to ``0..1``.
    """
    values = _modality_values(stored, ds)  # float64, ours to overwrite
    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        bits = int(item.LUTDescriptor[2])
        integral = np.rint(values).astype(np.int64)
        presentation = apply_voi(integral, ds, index=0).astype(np.float64) / (2**bits - 1)
    elif ds.get("WindowCenter") not in (None, "") and ds.get("WindowWidth") not in (None, ""):
        presentation = _window_in_place(
            values,
            _first(ds.WindowCenter),
            _first(ds.WindowWidth),
            str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR"),
        )
    else:
        low, high = float(np.min(values)), float(np.max(values))
        span = high - low
        if span > 0:
            values -= low
            values /= span
            presentation = values
        else:
            presentation = np.zeros(values.shape)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    shape = str(ds.get("PresentationLUTShape", "")).strip().upper()
    if photometric == "MONOCHROME1" or shape == "INVERSE":
        np.subtract(1.0, presentation, out=presentation)
    np.clip(presentation, 0.0, 1.0, out=presentation)
    return presentation.astype(np.float32)
