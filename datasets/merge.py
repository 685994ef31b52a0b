"""``oncotriage datasets merge``: one detection datalist from several, for mixed training sets.

A retrained model often learns from more than one synthetic set: the generator's defaults plus
a shifted set (fainter or smaller nodules), or several seeds. ``merge`` writes one datalist
that ``train``, ``calibrate`` and ``evaluate`` read like any other:

- every source must describe its boxes the same way (``spatial_dims``, ``box_mode``,
  ``coordinates``, ``world_frame``, ``labels``); a mismatch is refused, never converted
  silently;
- image paths are rewritten relative to the merged datalist's folder, so the sources' images
  stay where they are;
- each entry keeps its split and gains ``source`` (the source datalist, relative to the merged
  one) and, when its source was shifted, the ``shift`` (``evaluate --by shift`` can then
  break results down by it);
- the same study twice (the same ``study_uid``, or the same image) is refused: a study in the
  training split of one source and the test split of another would leak.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SPLITS = ("training", "validation", "test")
#: the version-2 generators' nodule diameters without a shift (CxrShift's default)
_FULL_DIAMETERS_MM = (4.0, 30.0)
#: top-level keys every source must agree on (when any source has them)
_SHARED_KEYS = ("kind", "spatial_dims", "box_mode", "coordinates", "world_frame", "labels")


def _relative(path: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(path, start)).as_posix()
    except ValueError:  # another drive (Windows): keep it absolute
        return path.as_posix()


def shift_label(shift: dict[str, Any] | None) -> str:
    """A generator shift in words (``contrast x0.6, 4-12 mm``); ``none`` for no shift."""
    if not shift:
        return "none"
    parts = []
    if float(shift.get("nodule_contrast", 1.0)) != 1.0:
        parts.append(f"contrast x{float(shift['nodule_contrast']):g}")
    if float(shift.get("noise_scale", 1.0)) != 1.0:
        parts.append(f"noise x{float(shift['noise_scale']):g}")
    low, high = shift.get("diameter_mm", _FULL_DIAMETERS_MM)
    if (float(low), float(high)) != _FULL_DIAMETERS_MM:
        parts.append(f"{float(low):g}-{float(high):g} mm")
    return ", ".join(parts) or "none"


def merge_datalists(sources: Sequence[Path], out: Path) -> dict[str, Any]:
    """Merge detection datalists into ``out`` (a JSON file); return the merged datalist.

    Raises:
        ValueError: fewer than two sources, a source that is not a datalist, sources that
            describe boxes differently, or a study or image in more than one entry.
    """
    from oncotriage.datasets.synth import dump_datalist_json

    if len(sources) < 2:
        raise ValueError("give at least two datalists to merge")
    out = Path(out)
    out_dir = out.parent.resolve()
    merged: dict[str, Any] = {split: [] for split in SPLITS}
    shared: dict[str, tuple[Any, Path]] = {}
    seen_images: dict[str, Path] = {}
    seen_studies: dict[str, Path] = {}
    described: list[str] = []
    for source in sources:
        source = Path(source)
        try:
            datalist = json.loads(source.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{source}: not a readable datalist ({exc})") from None
        if not isinstance(datalist, dict) or not any(
            isinstance(datalist.get(split), list) for split in SPLITS
        ):
            raise ValueError(f"{source}: no training, validation or test list")
        for key in _SHARED_KEYS:
            if key not in datalist:
                continue
            if key in shared and shared[key][0] != datalist[key]:
                first_value, first_source = shared[key]
                raise ValueError(
                    f"{source} has {key} {datalist[key]!r} but {first_source} has "
                    f"{first_value!r}: datalists that describe boxes differently cannot be merged"
                )
            shared.setdefault(key, (datalist[key], source))
        shift = datalist.get("shift")
        source_dir = source.parent.resolve()
        source_ref = _relative(source.resolve(), out_dir)
        counts = []
        for split in SPLITS:
            entries = datalist.get(split) or []
            counts.append(f"{len(entries)} {split}")
            for entry in entries:
                image = (source_dir / entry["image"]).resolve()
                key = image.as_posix()
                if key in seen_images:
                    raise ValueError(
                        f"{entry['image']} of {source} is already in {seen_images[key]}"
                    )
                seen_images[key] = source
                uid = entry.get("study_uid")
                if uid is not None:
                    if uid in seen_studies:
                        raise ValueError(
                            f"study {uid} ({entry['image']} of {source}) is already in "
                            f"{seen_studies[uid]}: the same study in two entries could put it "
                            "in training and test at once"
                        )
                    seen_studies[uid] = source
                merged_entry = dict(entry)
                merged_entry["image"] = _relative(image, out_dir)
                merged_entry["source"] = source_ref
                if shift:
                    merged_entry["shift"] = shift
                merged[split].append(merged_entry)
        described.append(
            f"{source_ref} ({datalist.get('description', 'no description')}; "
            f"shift {shift_label(shift)}; {', '.join(counts)})"
        )
    header: dict[str, Any] = {
        "name": "merged detection datalist",
        "description": "merged from " + "; ".join(described),
        **{key: value for key, (value, _) in shared.items()},
        "sources": [_relative(Path(s).resolve(), out_dir) for s in sources],
    }
    result = {**header, **merged}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dump_datalist_json(result))
    return result
