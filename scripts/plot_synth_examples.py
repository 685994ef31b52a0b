"""Plot six cases of a synthetic radiograph set with their boxes (docs/images/synth_cxr_v2.png).

    oncotriage datasets synth --kind cxr --n 6 --seed 3 --generator-version 2 --out /tmp/v2
    python scripts/plot_synth_examples.py /tmp/v2 docs/images/synth_cxr_v2.png

Red: nodule boxes; cyan: benign distractors. Images are shown as the reader presents them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from oncotriage.datasets.reader import read_image  # noqa: E402


def main(root: Path, out: Path) -> None:
    data = json.loads((root / "datalist.json").read_text())
    entries = sorted(
        (e for split in ("training", "validation", "test") for e in data[split]),
        key=lambda e: e["case_id"],
    )
    fig, axes = plt.subplots(2, 3, figsize=(15, 10), dpi=70)
    for ax, entry in zip(axes.flat, entries, strict=False):
        image = read_image(root / entry["image"]).array.squeeze()
        ax.imshow(image.T, cmap="gray", vmin=0, vmax=1)
        params = entry["generator"]
        spacing = params["pixel_spacing_mm"]
        for boxes, colour in ((entry["box"], "red"), (entry["distractor_box"], "cyan")):
            for cx, cy, w, h in boxes:
                corner = ((cx - w / 2) / spacing, (cy - h / 2) / spacing)
                ax.add_patch(Rectangle(corner, w / spacing, h / spacing, fill=False, ec=colour))
        nodules = list(zip(entry["nodule_type"], entry["diameter_mm"], strict=True))
        portable = " portable" if params["portable"] else ""
        ax.set_title(
            f"{entry['case_id']} {params['vendor']} {params['photometric']} {params['view']}"
            f"{portable}\nnodules {nodules}\ndistractors {entry['distractor_kind']}",
            fontsize=8,
        )
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
