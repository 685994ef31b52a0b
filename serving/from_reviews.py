"""Specialists' decisions as training data: ``oncotriage datasets from-reviews --out DIR``.

Each decided study becomes datalist entries in the layout of the synthetic datalists
(:mod:`oncotriage.datasets.synth`): ``{"image": <relative path>, "box": [...],
"label": [...], ...}`` with world-millimetre boxes (``ccwh`` for radiographs, detector-plane
mm; ``cccwhd`` for CT, LPS mm) split into ``training``/``validation``/``test`` by a hash of
the study id (stable as reviews accumulate). Images are copied under ``DIR/images``.

Labels per study, from its latest review:

- corrected boxes given (an empty list means "nothing there"): they are the truth for
  every image of the study; images without a box are negatives;
- ``return`` without boxes: every image is a negative;
- ``refer`` without boxes: the model's reportable findings (at or above its operating
  threshold: the ones the specialist saw) are taken as confirmed (``label_source`` says so);
  candidates below the threshold never become labels;
- ``more_imaging``: left out (no conclusion yet).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from oncotriage.datasets.boxes import index_box_problem
from oncotriage.serving.db.models import Finding, Instance, Review, Series, Study
from oncotriage.serving.db.session import Database
from oncotriage.serving.enums import Decision
from oncotriage.serving.storage import CHUNK_BYTES, ContentStore

logger = logging.getLogger(__name__)

SPLIT_FRACTIONS = (("training", 0.8), ("validation", 0.1), ("test", 0.1))
BOX_MODE = {2: "ccwh", 3: "cccwhd"}


@dataclass(frozen=True)
class _Image:
    """One datalist image: a radiograph instance, or a CT series."""

    study: Study
    series: Series
    instances: tuple[Instance, ...]


def split_of(study_id: str) -> str:
    """``training`` / ``validation`` / ``test`` from a hash of the study id (80/10/10)."""
    fraction = int(hashlib.sha256(study_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    cumulative = 0.0
    for name, share in SPLIT_FRACTIONS:
        cumulative += share
        if fraction <= cumulative:
            return name
    return SPLIT_FRACTIONS[-1][0]


def _latest_reviews(session: Any) -> list[tuple[Study, Review]]:
    latest = (
        sa.select(Review.study_id, sa.func.max(Review.id).label("review_id"))
        .group_by(Review.study_id)
        .subquery()
    )
    rows = session.execute(
        sa.select(Study, Review)
        .join(latest, latest.c.study_id == Study.id)
        .join(Review, Review.id == latest.c.review_id)
        .order_by(Study.received_at, Study.id)
    ).all()
    return [(study, review) for study, review in rows]


def _images_of(session: Any, study: Study) -> list[_Image]:
    images = []
    for series in session.scalars(
        sa.select(Series).where(Series.study_id == study.id).order_by(Series.id)
    ):
        instances = tuple(
            session.scalars(
                sa.select(Instance).where(Instance.series_id == series.id).order_by(Instance.id)
            )
        )
        if series.is_volume:
            images.append(_Image(study, series, instances))
        else:
            images.extend(_Image(study, series, (instance,)) for instance in instances)
    return images


def _boxes_for(
    image: _Image, review: Review, model_boxes: dict[int | None, list[tuple[list[float], int]]]
) -> tuple[list[tuple[list[float], int]], str] | None:
    """Index-space boxes with labels for one image and where they came from."""
    if review.corrected_boxes is not None:
        sop_uids = {instance.sop_instance_uid for instance in image.instances}
        boxes = [
            (list(box["box_index"]), int(box.get("label", 0)))
            for box in review.corrected_boxes
            if box["series_instance_uid"] == image.series.series_instance_uid
            and (image.series.is_volume or box.get("sop_instance_uid") in (None, *sop_uids))
        ]
        return boxes, "specialist_boxes"
    if review.decision is Decision.RETURN:
        return [], "returned_negative"
    if review.decision is Decision.REFER:
        key = None if image.series.is_volume else image.instances[0].id
        return model_boxes.get(key, []), "model_confirmed_by_referral"
    return None


def export_reviews(
    database_url: str, store: ContentStore | Path, out: Path, *, spatial_dims: int = 2
) -> Path:
    """Write ``out/datalist.json`` (and ``out/images/...``) from the decided studies.

    Args:
        database_url: the service database.
        store: the service's image store (``open_store(settings)``: the folder or the S3
            bucket), or the folder of a local one. Images are streamed out of it, never
            through the S3 store's read cache.
        out: output folder (created).
        spatial_dims: 2 for radiographs, 3 for CT volumes (one datalist per kind, like the
            synthetic ones).

    Returns:
        The datalist path.
    """
    from oncotriage.datasets.datalist import convert_box_mode
    from oncotriage.datasets.reader import read_image

    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    db = Database(database_url)
    if not isinstance(store, ContentStore):
        store = ContentStore(store)
    out.mkdir(parents=True, exist_ok=True)
    datalist: dict[str, Any] = {
        "name": "oncotriage specialist reviews",
        "description": "Decisions and corrected boxes of specialists, exported for retraining",
        "kind": "cxr" if spatial_dims == 2 else "ldct",
        "spatial_dims": spatial_dims,
        "box_mode": BOX_MODE[spatial_dims],
        "coordinates": "world_mm",
        "world_frame": "detector_plane_mm" if spatial_dims == 2 else "LPS",
        "labels": {"0": "nodule"},
        "training": [],
        "validation": [],
        "test": [],
        "left_out": [],
    }
    try:
        with db.sessionmaker() as session:
            for study, review in _latest_reviews(session):
                model_boxes: dict[int | None, list[tuple[list[float], int]]] = defaultdict(list)
                for finding in session.scalars(
                    sa.select(Finding).where(Finding.study_id == study.id, Finding.reportable)
                ):
                    model_boxes[
                        finding.instance_id if len(finding.box_index) == 4 else None
                    ].append((list(finding.box_index), finding.label))
                for image in _images_of(session, study):
                    if (3 if image.series.is_volume else 2) != spatial_dims:
                        continue
                    labelled = _boxes_for(image, review, model_boxes)
                    if labelled is None:
                        continue
                    boxes, source = labelled
                    entry = _entry(
                        image, boxes, source, review, store, out, read_image, convert_box_mode
                    )
                    if "left_out" in entry:
                        datalist["left_out"].append(entry["left_out"])
                        continue
                    datalist[split_of(study.id)].append(entry)
            session.rollback()
    finally:
        db.dispose()
    from oncotriage.datasets.synth import dump_datalist_json

    path = out / "datalist.json"
    path.write_text(dump_datalist_json(datalist))
    total = sum(len(datalist[name]) for name, _ in SPLIT_FRACTIONS)
    logger.info("wrote %d reviewed images to %s", total, path)
    return path


def _entry(
    image: _Image,
    boxes: list[tuple[list[float], int]],
    source: str,
    review: Review,
    store: ContentStore,
    out: Path,
    read_image: Any,
    convert_box_mode: Any,
) -> dict[str, Any]:
    folder = out / "images" / image.study.id
    folder.mkdir(parents=True, exist_ok=True)
    if image.series.is_volume:
        folder = folder / image.series.series_instance_uid
        folder.mkdir(exist_ok=True)
    copied = []
    for instance in image.instances:
        target = folder / f"{instance.sop_instance_uid}.dcm"
        if not target.exists():
            _copy_out(store, instance.stored_path, target)
        copied.append(target)
    volume = read_image(copied)
    dims = volume.spatial_dims
    problems = _box_problems(boxes, volume.array.shape)
    if problems:
        # A specialist drew something here that cannot be read as a box: training on the
        # image without it would teach a false negative, so the image is left out.
        logger.warning("review %d: image left out of the datalist: %s", review.id, problems)
        for path in copied:
            path.unlink(missing_ok=True)
        return {
            "left_out": {
                "review_id": review.id,
                "study_uid": image.study.study_instance_uid,
                "series_uid": image.series.series_instance_uid,
                "reasons": problems,
            }
        }
    world = [volume.box_index_to_world(np.asarray(box, dtype=float)) for box, _ in boxes]
    converted = (
        convert_box_mode(np.asarray(world), "xyxy" if dims == 2 else "xyzxyz", BOX_MODE[dims])
        if world
        else np.zeros((0, 2 * dims))
    )
    image_path = folder if image.series.is_volume else copied[0]
    return {
        "image": str(image_path.relative_to(out)),
        "box": [[round(float(v), 4) for v in row] for row in converted],
        "label": [label for _, label in boxes],
        "study_uid": image.study.study_instance_uid,
        "series_uid": image.series.series_instance_uid,
        "decision": review.decision.value,
        "label_source": source,
        "model_version": review.model_version,
        "review_id": review.id,
    }


def _copy_out(store: ContentStore, relative_path: str, target: Path) -> None:
    """Stream a stored object to ``target`` (a temporary file renamed at the end, so an
    interrupted export never leaves half an image behind)."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".export-")
    try:
        with os.fdopen(fd, "wb") as handle, store.open(relative_path) as body:
            shutil.copyfileobj(body, handle, CHUNK_BYTES)
        os.replace(tmp_name, target)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def _box_problems(boxes: list[tuple[list[float], int]], extent: tuple[int, ...]) -> list[str]:
    """Why stored boxes cannot be used (not finite, no positive size, outside the image):
    boxes stored before the API checked them, or written by hand."""
    found = (index_box_problem(box, extent) for box, _ in boxes)
    return [problem for problem in found if problem is not None]
