"""Wall time and quality (NMI) of the T2w → T1w rigid registration on real pairs.

For each real same-subject pair it registers the second contrast to the T1w at native
resolution (timed), then reports the NMI quality number of that registration, of the same
result spoiled by a 40° rotation or a 30 mm shift, and of a T2w of a different subject
registered to the same T1w. These figures are what ``RegistrationQC.min_nmi`` in
``bids_sr/recipes.py`` was chosen from.

    python benchmarks/registration_quality.py [--threads N] [--pairs chris openms19 ...]

Needs ../shared/data (the folder ``shared/data`` beside the repository root).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bids_sr.image import load_volume  # noqa: E402
from bids_sr.recipes import REGISTRATION_QC  # noqa: E402
from bids_sr.registration import (  # noqa: E402
    register_rigid,
    registration_quality,
    sitk_image_from_array,
)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CLIN = DATA / "clinical_thick_slice"

# name: (T1w, same-subject second contrast, different-subject T2w, initialisation)
PAIRS = {
    "chris": (
        DATA / "real_t1/chris_T1w.nii.gz",
        DATA / "real_t1/chris_PD.nii.gz",
        DATA / "real_t1/niivue_register_T2w.nii.gz",
        "header",
    ),
    "openms19": (
        DATA / "real_multicontrast/openms_patient19_T1.nii.gz",
        DATA / "real_multicontrast/openms_patient19_T2.nii.gz",
        DATA / "real_multicontrast/openms_patient07_T2.nii.gz",
        "moments",
    ),
    "clinical01": (
        CLIN / "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz",
        CLIN / "sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz",
        CLIN / "sub-12/ses-1/anat/sub-12_ses-1_T2w.nii.gz",
        "header",
    ),
    "clinical12": (
        CLIN / "sub-12/ses-1/anat/sub-12_ses-1_T1w.nii.gz",
        CLIN / "sub-12/ses-1/anat/sub-12_ses-1_T2w.nii.gz",
        CLIN / "sub-04/ses-1/anat/sub-04_ses-1_T2w.nii.gz",
        "header",
    ),
}


def _spoiled(transform: sitk.Euler3DTransform, degrees: float, shift: float) -> sitk.Transform:
    """The registration result followed by an extra rotation about x and a shift along x."""
    extra = sitk.Euler3DTransform()
    extra.SetCenter(transform.GetCenter())
    extra.SetRotation(np.deg2rad(degrees), 0.0, 0.0)
    extra.SetTranslation((shift, 0.0, 0.0))
    return sitk.CompositeTransform([transform, extra])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", nargs="*", default=list(PAIRS))
    parser.add_argument("--sampling-fraction", type=float, default=0.15)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"shared data not found at {DATA}")
        return 1
    print(f"RegistrationQC.min_nmi = {REGISTRATION_QC.min_nmi}; threads = {args.threads}")
    for name in args.pairs:
        t1w, second, other, init = PAIRS[name]
        volume = load_volume(t1w)
        fixed = sitk_image_from_array(volume.data, volume.affine)
        start = time.perf_counter()
        result = register_rigid(
            fixed,
            second,
            initialisation=init,
            seed=0,
            threads=args.threads,
            sampling_fraction=args.sampling_fraction,
        )
        seconds = time.perf_counter() - start
        moving = sitk_image_from_array(*_loaded(second))
        rot = registration_quality(fixed, moving, _spoiled(result.transform, 40.0, 0.0))[0]
        shift = registration_quality(fixed, moving, _spoiled(result.transform, 0.0, 30.0))[0]
        start = time.perf_counter()
        wrong = register_rigid(fixed, other, initialisation=init, seed=0, threads=args.threads)
        other_seconds = time.perf_counter() - start
        print(
            f"{name:11s} {volume.data.shape} {tuple(round(z, 2) for z in volume.zooms)} "
            f"init={init}: {seconds:6.1f} s, NMI {result.quality:.4f} "
            f"(overlap {result.overlap:.2f}, {result.rotation_degrees:.2f} deg, "
            f"{result.translation_mm:.2f} mm); +40 deg {rot:.4f}; +30 mm {shift:.4f}; "
            f"other subject {wrong.quality:.4f} ({other_seconds:.1f} s)",
            flush=True,
        )
    return 0


def _loaded(path: Path) -> tuple[np.ndarray, np.ndarray]:
    volume = load_volume(path)
    return volume.data, volume.affine


if __name__ == "__main__":
    raise SystemExit(main())
