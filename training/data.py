"""Training and evaluation data: datalist entries as network inputs with boxes, and fingerprints.

Every image goes through the model's own numpy preprocessing
(:func:`oncotriage.models.preprocess.preprocess_image`), the one serving uses, so the
network trains on exactly what it will see. Ground-truth boxes are mapped from the
datalist (world millimetres or index space, any MONAI box mode) to the source image's
index space (:func:`oncotriage.datasets.datalist.boxes_to_index`) and then to
network-input index space, box mode ``xyxy``/``xyzxyz``.

numpy only; torch tensors are made in :mod:`oncotriage.training.transforms`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oncotriage.datasets.datalist import DatalistEntry, boxes_to_index, load_entry_image
from oncotriage.models.config import PreprocessingConfig
from oncotriage.models.preprocess import IndexMapping, preprocess_image

logger = logging.getLogger(__name__)

SPLITS = ("training", "validation", "test")
SYNTHETIC_INTENDED_USE = (
    "Trained on synthetic images, not for clinical use. A demonstration of the oncotriage "
    "pipeline only: its scores say nothing about real patients."
)


@dataclass(frozen=True)
class DetectionSample:
    """One image ready for the network, with its ground truth.

    Attributes:
        image: ``(C, *S)`` float32 network input (preprocessed, padded for 2D).
        boxes: ``(N, 2D)`` float32 ground-truth boxes, ``xyxy``/``xyzxyz``, network-input
            index space.
        labels: ``(N,)`` int64 class indices.
        study_id: study the image belongs to (``study_uid`` of the entry, else its path).
        source: the image's path.
        mapping: network <-> source index mapping (to report boxes on the source image).
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    study_id: str
    source: str
    mapping: IndexMapping


def study_id(entry: DatalistEntry) -> str:
    """The study key of a datalist entry: its ``study_uid``, else its image path."""
    return str(entry.meta.get("study_uid") or entry.image)


def load_sample(
    entry: DatalistEntry, preprocessing: PreprocessingConfig, in_channels: int = 1
) -> DetectionSample:
    """Read, preprocess and map the boxes of one datalist entry.

    Raises:
        UnsupportedImageError: if the image cannot be read.
    """
    volume = load_entry_image(entry)
    pre = preprocess_image(volume, preprocessing, in_channels=in_channels)
    index_boxes = boxes_to_index(entry, volume)
    boxes = pre.mapping.source_to_network_boxes(index_boxes) if len(index_boxes) else index_boxes
    dims = entry.spatial_dims
    return DetectionSample(
        image=pre.array,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 2 * dims),
        labels=np.asarray(entry.labels, dtype=np.int64).reshape(-1),
        study_id=study_id(entry),
        source=str(entry.image),
        mapping=pre.mapping,
    )


def load_samples(
    entries: Sequence[DatalistEntry],
    preprocessing: PreprocessingConfig,
    in_channels: int = 1,
    *,
    on_loaded: Callable[[int], None] | None = None,
) -> list[DetectionSample]:
    """:func:`load_sample` for every entry; ``on_loaded(i)`` after each (progress bars)."""
    samples = []
    for index, entry in enumerate(entries):
        samples.append(load_sample(entry, preprocessing, in_channels))
        if on_loaded is not None:
            on_loaded(index)
    return samples


def _hash_path(path: Path, digest: Any) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(b"\0file\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)


def dataset_fingerprint(datalist: Path, splits: Sequence[str] = SPLITS) -> str:
    """``sha256:<hex>`` of a datalist file and the contents of every image it names.

    Two datalists give the same fingerprint exactly when their JSON bytes and their images'
    bytes are identical (file names do not enter, contents do), so a registered model says
    which data trained it.

    Args:
        datalist: the datalist JSON.
        splits: splits whose images are hashed (all present ones by default).

    Raises:
        FileNotFoundError: if the datalist or an image it names is missing.
    """
    datalist = Path(datalist)
    raw = datalist.read_bytes()
    data = json.loads(raw)
    digest = hashlib.sha256()
    digest.update(raw)
    for split in splits:
        for entry in data.get(split, []) if isinstance(data, dict) else []:
            image = Path(entry["image"])
            image = image if image.is_absolute() else datalist.parent / image
            if not image.exists():
                raise FileNotFoundError(f"{datalist} names {image}, which does not exist")
            digest.update(f"\0{split}\0".encode())
            _hash_path(image, digest)
    return f"sha256:{digest.hexdigest()}"


def is_synthetic(datalist: Path) -> bool:
    """Whether a datalist says it holds synthetic images (``oncotriage datasets synth``)."""
    try:
        data = json.loads(Path(datalist).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict):
        return False
    text = " ".join(str(data.get(k, "")) for k in ("name", "description")).lower()
    return "synthetic" in text
