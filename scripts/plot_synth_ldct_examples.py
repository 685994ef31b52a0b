"""Plot axial slices through the nodules of a synthetic CT set (docs/images/synth_ldct_v2.png).

    oncotriage datasets synth --kind ldct --n 8 --seed 3 --generator-version 2 --out /tmp/ct2
    python scripts/plot_synth_ldct_examples.py /tmp/ct2 docs/images/synth_ldct_v2.png

One panel per nodule (up to eight; one of each type first), the slice through its box's
centre in a lung window (-1350..150 HU), read back from the files as the service reads them.
Red: nodule boxes, cyan: benign distractors, wherever their boxes cross that slice.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from oncotriage.datasets.image import ImageVolume  # noqa: E402
from oncotriage.datasets.reader import read_image  # noqa: E402
from oncotriage.datasets.synth_ldct_v2 import NODULE_TYPES  # noqa: E402


def _index_box(volume: ImageVolume, box: list[float]) -> np.ndarray:
    """A ``cccwhd`` world box as ``(x0, y0, z0, x1, y1, z1)`` index coordinates."""
    centre, size = np.array(box[:3]), np.array(box[3:])
    corners = volume.world_to_index(np.stack([centre - size / 2, centre + size / 2]))
    return np.concatenate([corners.min(axis=0), corners.max(axis=0)])


def main(root: Path, out: Path, panels: int = 8) -> None:
    data = json.loads((root / "datalist.json").read_text())
    entries = sorted(
        (e for split in ("training", "validation", "test") for e in data[split]),
        key=lambda e: e["case_id"],
    )
    nodules = [(e, k) for e in entries for k in range(len(e["box"]))]
    # every nodule type first (in the generator's order), then the others in case order
    firsts = [
        next(n for n in nodules if n[0]["nodule_type"][n[1]] == kind)
        for kind in NODULE_TYPES
        if any(e["nodule_type"][k] == kind for e, k in nodules)
    ]
    shown = (firsts + [n for n in nodules if n not in firsts])[:panels]
    columns = (panels + 1) // 2
    fig, axes = plt.subplots(2, columns, figsize=(4.2 * columns, 10.5), dpi=60)
    volumes: dict[str, ImageVolume] = {}
    for ax, (entry, k) in zip(axes.flat, shown, strict=False):
        volume = volumes.setdefault(entry["image"], read_image(root / entry["image"]))
        box = _index_box(volume, entry["box"][k])
        z = int(round((box[2] + box[5]) / 2))
        ax.imshow(volume.array[:, :, z].T, cmap="gray", vmin=-1350, vmax=150)
        for boxes, colour in ((entry["box"], "red"), (entry["distractor_box"], "cyan")):
            for other in boxes:
                crossing = _index_box(volume, other)
                if crossing[2] <= z <= crossing[5]:
                    corner, size = crossing[:2], crossing[3:5] - crossing[:2]
                    ax.add_patch(Rectangle(corner, *size, fill=False, ec=colour, lw=1.0))
        params = entry["generator"]
        ax.set_title(
            f"{entry['case_id']} {params['vendor']} {params['kernel']} ({params['kernel_class']})"
            f"\n{params['slice_thickness_mm']} mm, {params['ctdi_vol_mgy']} mGy, "
            f"noise {params['noise_sd_hu']} HU\n{entry['nodule_type'][k]} {entry['margin'][k]} "
            f"{entry['diameter_mm'][k]} mm",
            fontsize=8,
        )
        ax.axis("off")
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
