"""Does combining an axial and a sagittal 2D scan (--combine-runs) beat each scan alone?

From a held-out real ~1 mm T1w (the truth) the script simulates two 2D scans with the
acquisition model (:func:`bids_sr.acquisition.project`, rect slices, thickness = spacing):
an axial one (slice axis 2, ``--factor`` × the voxel size) on the truth's own scanner grid,
and a sagittal one (slice axis 0) of the head moved by a small rigid offset (``--rotation``
degrees about each axis, ``--shift`` mm), as happens between two scans of one session; its
header knows nothing of the motion, so the combination has to register it. Each scan is
super-resolved with the per-run method (data consistency on, as a normal run), then
:func:`bids_sr.combine.combine_scans` combines them on the axial output's grid.

Printed per image and method: brain PSNR (dB; robust-normalised truth, data range 1, brain
mask of the truth) of each single run, of the simple (mask-aware) average and of the
combination, the gain of the combination over the best single run, each run's
DataConsistencyPSNR for the average → the combination, and the combination's time. The
sagittal run's single-run figure is measured after pulling it back with the *exact*
inverse motion (an oracle alignment, which favours the single run).

    OMP_NUM_THREADS=1 python benchmarks/combine_runs.py [--methods bspline selfsr]
        [--images chris openms19] [--factor 4] [--iterations 5] [--data-dir DIR] [--json PATH]

Needs ../shared/data (the folder ``shared/data`` beside the repository root; ``--data-dir``
names another). The record of the figures (:mod:`bids_sr.benchmark_record`) goes to
``benchmarks/results/combine_runs.json`` unless ``--json PATH`` says otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from bids_sr import benchmark_record as bench
from bids_sr.acquisition import Acquisition, project
from bids_sr.combine import DEFAULT_ITERATIONS, Scan, combine_scans
from bids_sr.image import (
    load_volume,
    robust_normalisation,
    upsampled_affine,
    voxel_sizes,
)
from bids_sr.masks import brain_mask
from bids_sr.metrics import psnr
from bids_sr.registration import resample_to_grid, sitk_image_from_array
from bids_sr.superresolve import super_resolve

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
#: the held-out T1w images, relative to the shared data folder
IMAGES = {
    "chris": "real_t1/chris_T1w.nii.gz",
    "openms19": "real_multicontrast/openms_patient19_T1.nii.gz",
}


def motion(rotation_deg: float, shift_mm: float, centre: np.ndarray) -> sitk.Euler3DTransform:
    """A rigid offset about ``centre`` (LPS mm): ``rotation_deg`` about each axis and
    ``shift_mm`` along each axis (signs alternating so that no axis is spared)."""
    transform = sitk.Euler3DTransform()
    transform.SetCenter([float(v) for v in centre])
    angle = np.radians(rotation_deg)
    transform.SetRotation(angle, -angle, angle)
    transform.SetTranslation([shift_mm, -shift_mm, 0.5 * shift_mm])
    return transform


def simulate(truth: np.ndarray, affine: np.ndarray, axis: int, factor: int,
             moved_by: sitk.Transform | None) -> tuple[np.ndarray, np.ndarray, Acquisition]:
    """A 2D scan of ``truth`` with slices along ``axis`` (``factor`` × the voxel size), of
    the head moved by ``moved_by`` (ITK: truth-space points → scanner points) when given."""
    data = truth
    if moved_by is not None:
        image = sitk_image_from_array(truth, affine)
        data = resample_to_grid(image, moved_by, truth.shape, affine, order=3)
    factors = [1, 1, 1]
    factors[axis] = factor
    spacing = tuple(float(z) * f for z, f in zip(voxel_sizes(affine), factors, strict=True))
    acquisition = Acquisition(spacing, axis, spacing[axis])
    lr = project(data, acquisition, [n // f for n, f in zip(truth.shape, factors, strict=True)])
    lr_affine = affine @ np.linalg.inv(upsampled_affine(np.eye(4), factors))
    return lr, lr_affine, acquisition


def super_resolved(lr: np.ndarray, lr_affine: np.ndarray, acquisition: Acquisition,
                   method: str, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The scan super-resolved to its in-plane voxel size with data consistency, as a run of
    the app does it (normalise, method, restore); its affine and the method's time."""
    factors = [s / min(acquisition.spacing) for s in acquisition.spacing]
    norm = robust_normalisation(lr)
    start = time.perf_counter()
    hr, _ = super_resolve(norm.apply(lr), factors, method, acquisition=acquisition,
                          seed=seed, device="cpu")  # fmt: skip
    return norm.restore(hr), upsampled_affine(lr_affine, factors), time.perf_counter() - start


def run_image(path: Path, method: str, args) -> dict:
    volume = load_volume(path)
    f = args.factor
    truth = volume.data[tuple(slice(0, n - n % f) for n in volume.data.shape)]
    affine = volume.affine
    centre_index = (np.asarray(truth.shape) - 1) / 2.0
    centre_ras = affine[:3, :3] @ centre_index + affine[:3, 3]
    centre_lps = centre_ras * np.array([-1.0, -1.0, 1.0])
    moved_by = motion(args.rotation, args.shift, centre_lps)
    scans, times = [], {}
    for name, axis, offset in (("axial", 2, None), ("sagittal", 0, moved_by)):
        lr, lr_affine, acquisition = simulate(truth, affine, axis, f, offset)
        sr, sr_affine, seconds = super_resolved(lr, lr_affine, acquisition, method, args.seed)
        times[name] = seconds
        scans.append(Scan(name, lr, lr_affine, acquisition, sr, sr_affine))
    norm = robust_normalisation(truth)
    mask = brain_mask(truth, voxel_sizes(affine))

    def score(data: np.ndarray) -> float:
        return psnr(norm.apply(data), norm.apply(truth), data_range=1.0, mask=mask)

    # the sagittal output back in the truth's frame with the exact inverse motion (oracle)
    sagittal = resample_to_grid(sitk_image_from_array(scans[1].sr, scans[1].sr_affine),
                                moved_by.GetInverse(), truth.shape, affine, order=3)  # fmt: skip
    result = combine_scans(scans, iterations=args.iterations, seed=args.seed, threads=1)
    row = {
        "image": path.name, "method": method,
        "axial": score(scans[0].sr), "sagittal": score(sagittal),
        "average": score(result.average), "combined": score(result.data),
        "combine_s": result.runtime_s, "sr_s": sum(times.values()),
        "dc": {r["Run"]: (r.get("DataConsistencyPSNRAverage"), r.get("DataConsistencyPSNR"))
               for r in result.runs},
        "registration": next(r for r in result.runs if not r["Reference"]),
    }  # fmt: skip
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="+", choices=sorted(IMAGES), default=sorted(IMAGES))
    parser.add_argument("--methods", nargs="+", default=["bspline"],
                        help="per-run method(s), e.g. bspline selfsr")
    parser.add_argument("--factor", type=int, default=4, help="slice spacing / voxel size")
    parser.add_argument("--rotation", type=float, default=2.0, help="degrees, about each axis")
    parser.add_argument("--shift", type=float, default=1.5, help="mm")
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    bench.add_json_argument(parser, RESULTS / "combine_runs.json")
    args = parser.parse_args(argv)
    paths = {name: args.data_dir / IMAGES[name] for name in args.images}
    missing = [str(path) for path in paths.values() if not path.exists()]
    if missing:
        sys.stderr.write(f"missing shared data: {', '.join(missing)}\n")
        return 66
    print(f"axial 1×1×{args.factor} and sagittal {args.factor}×1×1 slices (×voxel size), "
          f"sagittal moved by {args.rotation:g}° per axis and {args.shift:g} mm; "
          f"{args.iterations} POCS rounds; brain PSNR (dB) vs the truth")  # fmt: skip
    header = ("image", "method", "axial", "sagittal", "average", "combined", "Δ best",
              "DC avg→comb (ax; sag)", "reg °/mm", "combine s")  # fmt: skip
    print(" | ".join(header))
    measured, cells = [], []
    for name in args.images:
        for method in args.methods:
            row = run_image(paths[name], method, args)
            best = max(row["axial"], row["sagittal"])
            dc = "; ".join(f"{b}→{a}" for b, a in row["dc"].values())
            reg = row["registration"]
            cells.append([
                name, method, f"{row['axial']:.2f}", f"{row['sagittal']:.2f}",
                f"{row['average']:.2f}", f"{row['combined']:.2f}",
                f"{row['combined'] - best:+.2f}", dc,
                f"{reg.get('RegistrationRotationDegrees')}/{reg.get('RegistrationTranslationMM')}",
                f"{row['combine_s']:.0f}",
            ])  # fmt: skip
            measured.append(row)
            print(" | ".join(cells[-1]), flush=True)
    description = (
        "`benchmarks/combine_runs.py`: each held-out T1w simulated as an axial "
        f"1×1×{args.factor} and a sagittal {args.factor}×1×1 scan (rect slices), the sagittal "
        f"one moved by {args.rotation:g}° about each axis and {args.shift:g} mm (recovered by "
        "the registration); each run super-resolved with the per-run method and data "
        f"consistency, then combined (`bids_sr.combine.combine_scans`, {args.iterations} POCS "
        "rounds); brain PSNR (dB) against the truth. The sagittal run's single figure is "
        "measured after pulling it back with the exact inverse motion (favouring the single "
        "run); DC: each run's DataConsistencyPSNR (dB) for the average → the combination."
    )
    record = bench.make_record("combine_runs", title="Combining runs",
                         description=description, tables=[bench.table(header, cells)],
                         figures=measured, command=bench.command_line(__file__, argv))  # fmt: skip
    bench.write_record(record, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
