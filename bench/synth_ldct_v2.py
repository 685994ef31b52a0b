"""Measure version-2 synthetic CT nodules: contrast per type and seconds per case.

    .venv/bin/python bench/synth_ldct_v2.py [cases] [seed]

Each positive case is rendered with and without its nodules (same anatomy, distractors and
noise). Per nodule: the peak HU it adds (read from the stored values, after the scanner's
blur), that peak over the case's noise SD, and the contrast a reader sees in the noisy image:
the mean HU of the nodule's core (where it adds at least half its peak) minus the median of
the lung around its box (a 3-voxel shell, lung voxels of the render without it); and whether
it had to be made denser to reach 4 noise SDs. Prints a Markdown table, then the mean seconds
to render a case and to render and write one as DICOM (first eight cases).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from oncotriage.datasets.synth import render_case, write_case
from oncotriage.datasets.synth_ldct_v2 import NODULE_TYPES, VISIBILITY_FLOOR, CtCaseV2


def _region(box: tuple[float, ...], pad: int, shape: tuple[int, ...]) -> tuple[slice, ...]:
    x0, y0, z0, x1, y1, z1 = (int(v + 0.5) for v in box)
    return tuple(
        slice(max(lo - pad, 0), min(hi + pad, n))
        for lo, hi, n in zip((z0, y0, x0), (z1, y1, x1), shape, strict=True)
    )


def measure(cases: int, seed: int) -> None:
    rows: dict[str, list[tuple[float, float, float, bool]]] = defaultdict(list)
    render_seconds = []
    for index in range(cases):
        start = time.perf_counter()
        case = render_case("ldct", seed, index, positive=True, generator_version=2)
        render_seconds.append(time.perf_counter() - start)
        bare = render_case(
            "ldct", seed, index, positive=True, include_nodules=False, generator_version=2
        )
        assert isinstance(case, CtCaseV2) and isinstance(bare, CtCaseV2)
        image, without = case.hu, bare.hu
        added = image - without
        for nodule in case.nodules:
            box = _region(nodule.box_index, 0, added.shape)
            peak = float(added[box].max())
            core = image[box][added[box] >= 0.5 * peak]
            shell = np.zeros(added.shape, bool)
            shell[_region(nodule.box_index, 3, added.shape)] = True
            shell[box] = False
            lung = without[shell & (without < -500)]
            seen = float(core.mean() - np.median(lung)) if lung.size else float("nan")
            raised = abs(nodule.peak_hu - VISIBILITY_FLOOR * case.noise_sd_hu) < 0.15
            rows[nodule.nodule_type].append((peak, peak / case.noise_sd_hu, seen, raised))
    print(
        "| type | nodules | peak HU (median, min) | peak / noise SD (median, min) "
        "| core - lung HU (median) | raised to the floor |"
    )
    print("|---|---|---|---|---|---|")
    for nodule_type in NODULE_TYPES:
        values = np.array(rows[nodule_type])
        if not values.size:
            continue
        peak, cnr, seen, raised = values.T
        print(
            f"| {nodule_type} | {len(values)} | {np.median(peak):.0f}, {peak.min():.0f} | "
            f"{np.median(cnr):.1f}, {cnr.min():.1f} | {np.nanmedian(seen):.0f} | "
            f"{int(raised.sum())} |"
        )
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        for index in range(min(cases, 8)):
            write_case("ldct", seed, index, positive=True, out=Path(folder), generator_version=2)
        write_seconds = (time.perf_counter() - start) / min(cases, 8)
    print(
        f"\nrender {np.mean(render_seconds):.2f} s per case; render and write "
        f"{write_seconds:.2f} s per case"
    )


if __name__ == "__main__":
    measure(
        int(sys.argv[1]) if len(sys.argv) > 1 else 40, int(sys.argv[2]) if len(sys.argv) > 2 else 0
    )
