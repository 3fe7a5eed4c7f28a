"""Wall time and quality (NMI) of the T2w → T1w rigid registration on real pairs.

For each real same-subject pair it registers the second contrast to the T1w at native
resolution (timed), then reports the NMI quality number of that registration, of the same
result spoiled by a 40° rotation or a 30 mm shift, and of a T2w of a different subject
registered to the same T1w. These figures are what ``RegistrationQC.min_nmi`` in
``bids_sr/recipes.py`` was chosen from.

    python benchmarks/registration_quality.py [--threads N] [--pairs chris openms19 ...]
        [--data-dir DIR] [--json PATH]

Needs ../shared/data (the folder ``shared/data`` beside the repository root; ``--data-dir``
names another). The record of the figures (:mod:`bids_sr.benchmark_record`) goes to
``benchmarks/results/registration_quality.json`` unless ``--json PATH`` says otherwise.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from bids_sr import benchmark_record as bench
from bids_sr.image import load_volume
from bids_sr.recipes import REGISTRATION_QC
from bids_sr.registration import (
    register_rigid,
    registration_quality,
    sitk_image_from_array,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
CLIN = "clinical_thick_slice"

# name: (T1w, same-subject second contrast, different-subject T2w, initialisation), relative
# to the shared data folder
PAIRS = {
    "chris": (
        "real_t1/chris_T1w.nii.gz",
        "real_t1/chris_PD.nii.gz",
        "real_t1/niivue_register_T2w.nii.gz",
        "header",
    ),
    "openms19": (
        "real_multicontrast/openms_patient19_T1.nii.gz",
        "real_multicontrast/openms_patient19_T2.nii.gz",
        "real_multicontrast/openms_patient07_T2.nii.gz",
        "moments",
    ),
    "clinical01": (
        f"{CLIN}/sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz",
        f"{CLIN}/sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz",
        f"{CLIN}/sub-12/ses-1/anat/sub-12_ses-1_T2w.nii.gz",
        "header",
    ),
    "clinical12": (
        f"{CLIN}/sub-12/ses-1/anat/sub-12_ses-1_T1w.nii.gz",
        f"{CLIN}/sub-12/ses-1/anat/sub-12_ses-1_T2w.nii.gz",
        f"{CLIN}/sub-04/ses-1/anat/sub-04_ses-1_T2w.nii.gz",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", nargs="*", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--sampling-fraction", type=float, default=0.15)
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    bench.add_json_argument(parser, RESULTS / "registration_quality.json")
    args = parser.parse_args(argv)
    if not args.data_dir.is_dir():
        print(f"shared data not found at {args.data_dir}")
        return 1
    print(f"RegistrationQC.min_nmi = {REGISTRATION_QC.min_nmi}; threads = {args.threads}")
    measured = []
    for name in args.pairs:
        t1w, second, other = (args.data_dir / p for p in PAIRS[name][:3])
        init = PAIRS[name][3]
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
        measured.append({
            "pair": name, "shape": list(volume.data.shape),
            "zooms": [round(float(z), 2) for z in volume.zooms], "init": init,
            "seconds": seconds, "nmi": result.quality, "overlap": result.overlap,
            "rotation_degrees": result.rotation_degrees,
            "translation_mm": result.translation_mm, "nmi_rotated_40deg": rot,
            "nmi_shifted_30mm": shift, "nmi_other_subject": wrong.quality,
            "other_subject_seconds": other_seconds,
        })  # fmt: skip
    bench.write_record(_record(args, measured, bench.command_line(__file__, argv)), args.json)
    return 0


def _record(args: argparse.Namespace, measured: list[dict], command: str) -> dict:
    rows = [[m["pair"], "×".join(map(str, m["shape"])), m["init"], f"{m['seconds']:.1f}",
             f"{m['nmi']:.4f}", f"{m['nmi_rotated_40deg']:.4f}", f"{m['nmi_shifted_30mm']:.4f}",
             f"{m['nmi_other_subject']:.4f}"] for m in measured]  # fmt: skip
    description = (
        "`benchmarks/registration_quality.py`: each real same-subject pair's second "
        "contrast registered rigidly to its T1w at native resolution "
        f"(`bids_sr.registration.register_rigid`, {args.threads} thread(s), sampling "
        f"fraction {args.sampling_fraction:g}), timed; the NMI quality of that result, of "
        "the same result spoiled by a 40° rotation or a 30 mm shift, and of another "
        "subject's T2w registered to the same T1w. `RegistrationQC.min_nmi` "
        f"({REGISTRATION_QC.min_nmi}) in `bids_sr/recipes.py` was chosen from these figures."
    )
    columns = ["pair", "T1w grid", "initialisation", "time (s)", "NMI", "NMI +40°",
               "NMI +30 mm", "NMI other subject"]  # fmt: skip
    return bench.make_record("registration_quality", title="Reference registration quality",
                       description=description, tables=[bench.table(columns, rows)],
                       figures=measured, command=command)  # fmt: skip


def _loaded(path: Path) -> tuple[np.ndarray, np.ndarray]:
    volume = load_volume(path)
    return volume.data, volume.affine


if __name__ == "__main__":
    raise SystemExit(main())
