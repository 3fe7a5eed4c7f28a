#!/usr/bin/env python
"""How much fine detail each validation image holds along each axis (is it a fair truth?).

A slice-degradation benchmark compares a super-resolved image with the HR image along the
simulated slice axis; that comparison measures super-resolution only where the HR image
itself holds detail along that axis. An image resampled from a thick-slice acquisition
(openms_patient19: an MS patient's clinical scans registered to MNI space) is blurred along
its acquired slice axis, and a method that restores sharp edges there is scored *down*.

For each image and axis this prints the mean absolute first and second differences inside
the head (robust-normalised intensities) and the second-difference ratio to the image's
sharpest axis. A ratio well below 1 marks an axis without fine detail: simulate slices
along the other axes of that image (``bids_sr-train validate ... --scale 3 1 1``).

    python experiments/truth_sharpness.py [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bids_sr.image import load_volume, robust_normalisation

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

IMAGES = {
    "chris": "real_t1/chris_T1w.nii.gz",
    "openms19 T1": "real_multicontrast/openms_patient19_T1.nii.gz",
    "openms19 T2": "real_multicontrast/openms_patient19_T2.nii.gz",
    "openms19 FLAIR": "real_multicontrast/openms_patient19_FLAIR.nii.gz",
    "mni152 T1": "real_multicontrast/mni152_T1_1mm_brain.nii.gz",
    "colin27": "real_t1/colin27_ch2_T1w.nii.gz",
    "brainchop": "real_t1/brainchop_t1_crop_T1w.nii.gz",
    "openms07 T1": "real_multicontrast/openms_patient07_T1.nii.gz",
}
#: Head voxels: normalised intensity above this.
HEAD = 0.1


def axis_detail(data: np.ndarray) -> list[tuple[float, float]]:
    """Per axis: mean |first difference| and mean |second difference| inside the head."""
    norm = robust_normalisation(data).apply(data)
    head = norm > HEAD
    rows = []
    for axis in range(3):
        first = np.abs(np.diff(norm, n=1, axis=axis))
        second = np.abs(np.diff(norm, n=2, axis=axis))
        inside1 = np.take(head, np.arange(norm.shape[axis] - 1), axis=axis)
        inside2 = np.take(head, np.arange(norm.shape[axis] - 2), axis=axis)
        rows.append((float(first[inside1].mean()), float(second[inside2].mean())))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED)
    args = parser.parse_args(argv)
    print("| image | voxel (mm) | axis | mean abs 1st diff | mean abs 2nd diff "
          "| 2nd diff / sharpest |")
    print("|---|---|---|---|---|---|")
    for name, relative in IMAGES.items():
        path = args.shared / relative
        if not path.exists():
            print(f"{path}: missing, skipped", file=sys.stderr)
            continue
        volume = load_volume(path)
        rows = axis_detail(volume.data)
        sharpest = max(second for _, second in rows)
        zooms = "×".join(f"{z:g}" for z in volume.zooms)
        for axis, (first, second) in enumerate(rows):
            print(f"| {name} | {zooms} | {axis} | {first:.4f} | {second:.4f} | "
                  f"{second / sharpest:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
