"""Combine several 2D scans of one contrast into one image by a joint reconstruction.

Part of the numerical core (never imports nipype or pybids).

Why
---
A clinical session often holds several 2D scans of one contrast: an axial and a sagittal
T1w, or several runs. Each is sharp in-plane and coarse along its own slice axis, so each
super-resolved output (however good the method) still guesses what its slices averaged
away, while another scan *measured* it. The combination asks for one image that every scan
would have acquired.

Method
------
Each scan ``r`` brings its acquired image ``y_r`` (LR grid), its acquisition model ``A_r``
(:mod:`bids_sr.acquisition`: slice axis, thickness, profile) and its super-resolved output
``x_r`` on its own HR grid ``H_r``.

1. *Common grid*: the reference scan's output grid ``G`` (the first scan by default).
2. *Registration*: every other output is registered rigidly to the reference output
   (:func:`bids_sr.registration.register_rigid`, scanner-coordinate initialisation: scans of
   one session share the scanner's frame). The transform ``T_r`` maps points of ``G`` to
   points of ``H_r``. A scan whose registration fails the quality check (normalised mutual
   information, overlap) is left out with the reason; fewer than two usable scans is a
   :class:`CombineError`.
3. *Intensities*: scanners scale runs differently, so each scan is mapped linearly onto the
   reference's scale (least squares over the common head region: ``a_r · x + b_r``). The
   forward model averages, so ``A_r(a x + b) = a A_r x + b`` and data consistency is
   unaffected by the mapping.
4. *Start*: the coverage-weighted (mask-aware) average of the registered outputs.
5. *POCS*: for a fixed number of rounds, for each scan in turn (the reference last): pull
   the estimate onto ``H_r`` through ``T_r⁻¹`` (outside ``G``'s field of view: scan ``r``'s
   own output), apply that scan's data-consistency projection
   (:func:`bids_sr.acquisition.enforce_consistency`, exact along the slice axis) and push the
   correction back onto ``G`` through ``T_r`` where scan ``r`` covers it. The reference
   needs no resampling, so the result reproduces it exactly; the others up to the cubic
   resampling of their corrections.

Each scan's ``DataConsistencyPSNR`` (:func:`bids_sr.acquisition.consistency_psnr` inside its
head, over its robust intensity range) is reported for the average (before) and for the
combination (after).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from bids_sr.acquisition import Acquisition, consistency_psnr, enforce_consistency
from bids_sr.image import foreground_mask, robust_normalisation, voxel_sizes
from bids_sr.registration import (
    RegistrationError,
    register_rigid,
    resample_to_grid,
    sitk_image_from_array,
)

#: Rounds of POCS (each visits every scan once). Measured in benchmarks/combine_runs.py
#: (openms patient19, axial + moved sagittal 4 mm scans, bspline): one round gives 29.42 dB
#: brain PSNR and 46.8 dB DataConsistencyPSNR on the sagittal run, five 29.51 and 50.4 dB, at
#: about 2 s a round on one core (registration dominates the combination's time).
DEFAULT_ITERATIONS = 5
#: A linear intensity map whose slope falls outside this range means the scans do not share
#: a contrast (or the registration is wrong): the scan is left out.
SLOPE_RANGE = (0.2, 5.0)
#: Least fraction of the reference's head a scan must cover to take part.
MIN_COVERAGE = 0.25


class CombineError(ValueError):
    """Scans that cannot be combined (fewer than two usable); the message says why."""


@dataclass(frozen=True)
class Scan:
    """One acquired scan and its super-resolved output, in the scan's own intensity units.

    ``lr``/``lr_affine``: the acquired image; ``acquisition``: how it was acquired;
    ``sr``/``sr_affine``: its super-resolved output (whatever method), whose grid the
    acquisition model maps onto ``lr``'s; ``name``: how messages and reports call it.
    """

    name: str
    lr: np.ndarray
    lr_affine: np.ndarray
    acquisition: Acquisition
    sr: np.ndarray
    sr_affine: np.ndarray


@dataclass
class CombinedResult:
    """The outcome of :func:`combine_scans`.

    ``data`` lies on the reference output grid (``affine``) in the reference scan's
    intensity units; ``average`` is the starting point (the mask-aware average), kept for
    comparison; ``runs`` has one JSON-ready record per scan (used or not, and why).
    """

    data: np.ndarray
    affine: np.ndarray
    average: np.ndarray
    reference: str
    iterations: int
    runs: list[dict[str, Any]] = field(default_factory=list)
    runtime_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Sidecar fields (BIDS-style keys) describing the combination."""
        return {
            "CombinationMethod": (
                "joint reconstruction (POCS): mask-aware average of the rigidly registered "
                "super-resolved scans, then each scan's data-consistency projection in turn"
            ),
            "CombinationReference": self.reference,
            "CombinationIterations": self.iterations,
            "CombinationIntensityMap": (
                "per run, IntensityMap [slope, offset] maps its intensities, robust-normalised "
                "as for super-resolution, onto the reference's robust-normalised scale"
            ),
            "CombinedRuns": self.runs,
            "CombinationRunTime": round(self.runtime_s, 2),
        }


@dataclass
class _Prepared:
    """One usable scan, normalised and placed relative to the common grid."""

    scan: Scan
    lr: np.ndarray  # acquired data on the reference's intensity scale
    sr: np.ndarray  # its own output on the reference's intensity scale
    head: np.ndarray  # head mask on the LR grid
    data_range: float  # its robust intensity range, on the reference's scale
    to_scan: sitk.Transform | None  # G points → H_r points (None: the reference itself)
    cover_common: np.ndarray | None  # on G: fraction covered by H_r
    cover_scan: np.ndarray | None  # on H_r: fraction covered by G


def _pull(data: np.ndarray, affine: np.ndarray, transform: sitk.Transform,
          shape: Sequence[int], target_affine: np.ndarray, order: int = 3) -> np.ndarray:
    """``data`` (on grid ``affine``) resampled onto ``(shape, target_affine)``; ``transform``
    maps target points to source points; 0 outside the source."""
    image = sitk_image_from_array(data, affine)
    return resample_to_grid(image, transform, shape, target_affine, order=order, clip=False)


def _coverage(shape, affine, transform, target_shape, target_affine) -> np.ndarray:
    """Fraction of each target voxel that lies inside the source grid (linear)."""
    ones = np.ones(tuple(shape), dtype=np.float32)
    return np.clip(_pull(ones, affine, transform, target_shape, target_affine, order=1), 0, 1)


def _transform_record(result) -> dict[str, Any]:
    """The registration's figures and its parameters (ITK Euler3D, LPS+, fixed → moving)."""
    params = result.transform.GetParameters()
    return {
        **result.summary(),
        "RegistrationTransform": {
            "Type": "Euler3DTransform (ITK, LPS+ mm, reference output → this output)",
            "RotationRadians": [round(float(v), 6) for v in params[:3]],
            "TranslationMM": [round(float(v), 4) for v in params[3:]],
            "CentreMM": [round(float(v), 3) for v in result.transform.GetFixedParameters()[:3]],
        },
    }


def _intensity_map(
    moving: np.ndarray, fixed: np.ndarray, mask: np.ndarray, sigma_mm: float,
    zooms: Sequence[float],
) -> tuple[float, float]:
    """Least-squares ``a, b`` with ``fixed ≈ a · moving + b`` inside ``mask``.

    Both images are first blurred to a common, coarser resolution (Gaussian of ``sigma_mm``,
    half the coarsest slice spacing): each is blurred along its own slice axis, and a fit of the
    raw images would mistake that difference for contrast and flatten the slope (measured on
    the demo T1w, axial vs sagittal 8 mm slices: 0.89 raw, true 0.96).
    """
    sigmas = [sigma_mm / float(z) for z in zooms]
    x64 = ndimage.gaussian_filter(moving.astype(np.float64), sigmas)[mask]
    y64 = ndimage.gaussian_filter(fixed.astype(np.float64), sigmas)[mask]
    design = np.stack([x64, np.ones_like(x64)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y64, rcond=None)
    return float(a), float(b)


def _eroded(mask: np.ndarray, cover: np.ndarray, mm: float, zooms) -> np.ndarray:
    """``mask`` away (by ``mm``) from the edge of the moving scan's field of view, where
    blurring would mix in the zeros outside it."""
    radius = [max(1, int(np.ceil(mm / float(z)))) for z in zooms]
    inside = ndimage.minimum_filter(cover > 0.99, size=[2 * r + 1 for r in radius])
    kept = mask & inside
    return kept if kept.sum() > 100 else mask


def _itk_reason(exc: Exception) -> str:
    """The sentence of an ITK exception that says what went wrong (its first line is only
    the source location), e.g. "All samples map outside moving image buffer"."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(exc).__name__
    if "outside moving image" in reason:
        return "the scans do not overlap in scanner coordinates"
    return reason.split("): ", 1)[-1].split(". ")[0].rstrip(".")


def _prepare(
    scans: Sequence[Scan], reference: int, *, seed: int, threads: int | None
) -> tuple[list[_Prepared], list[dict[str, Any]]]:
    """Normalise, register and intensity-match every scan; records for all of them."""
    ref = scans[reference]
    ref_norm = robust_normalisation(ref.lr)
    ref_sr = ref_norm.apply(ref.sr)
    ref_head = foreground_mask(ref_sr)
    ref_image = sitk_image_from_array(ref_sr, ref.sr_affine)
    grid = (ref.sr.shape, ref.sr_affine)
    prepared, records = [], []
    for index, scan in enumerate(scans):
        norm = robust_normalisation(scan.lr)
        lr, sr = norm.apply(scan.lr), norm.apply(scan.sr)
        record: dict[str, Any] = {"Run": scan.name, "Reference": index == reference,
                                  **scan.acquisition.describe()}  # fmt: skip
        record["OutputVoxelSize"] = [round(v, 4) for v in voxel_sizes(scan.sr_affine)]
        if index == reference:
            prepared.append(_Prepared(scan, lr, sr, foreground_mask(lr), 1.0, None, None, None))
            record.update(Used=True, IntensityMap=[1.0, 0.0])
            records.append(record)
            continue
        try:
            result = register_rigid(
                ref_image, sitk_image_from_array(sr, scan.sr_affine),
                initialisation="header", seed=seed, threads=threads,
            )  # fmt: skip
        except (RegistrationError, RuntimeError) as exc:
            records.append({**record, "Used": False, "Excluded": (
                f"cannot be registered to {ref.name} ({_itk_reason(exc)})")})  # fmt: skip
            continue
        record.update(_transform_record(result))
        to_scan = result.transform
        cover = _coverage(scan.sr.shape, scan.sr_affine, to_scan, *grid)
        problem = None
        if not result.usable:
            problem = (f"cannot be registered to {ref.name} (normalised mutual information "
                       f"{result.quality:.3f}, overlap {result.overlap:.2f})")  # fmt: skip
        overlap = ref_head & (cover > 0.99)
        if problem is None and overlap.sum() < MIN_COVERAGE * max(1, ref_head.sum()):
            problem = f"covers too little of {ref.name} ({overlap.sum() / ref_head.sum():.2f})"
        if problem is None:
            moved = _pull(sr, scan.sr_affine, to_scan, *grid)
            coarsest = max(max(scan.acquisition.spacing), max(ref.acquisition.spacing))
            zooms = voxel_sizes(ref.sr_affine)
            fit_mask = _eroded(overlap, cover, coarsest, zooms)
            slope, offset = _intensity_map(moved, ref_sr, fit_mask, coarsest / 2.0, zooms)
            record["IntensityMap"] = [round(slope, 5), round(offset, 5)]
            if not SLOPE_RANGE[0] <= slope <= SLOPE_RANGE[1]:
                problem = (f"its intensities do not match {ref.name} (slope {slope:.3g}): "
                           "another contrast?")  # fmt: skip
        if problem is not None:
            records.append({**record, "Used": False, "Excluded": problem})
            continue
        inverse = to_scan.GetInverse()
        prepared.append(
            _Prepared(
                scan=scan, lr=slope * lr + offset, sr=slope * sr + offset,
                head=foreground_mask(lr), data_range=slope, to_scan=to_scan,
                cover_common=cover,
                cover_scan=_coverage(ref.sr.shape, ref.sr_affine, inverse, scan.sr.shape,
                                     scan.sr_affine),
            )
        )  # fmt: skip
        records.append({**record, "Used": True})
    return prepared, records


def _on_scan(estimate: np.ndarray, item: _Prepared, grid) -> np.ndarray:
    """The common-grid estimate seen on the scan's own output grid (its output outside G)."""
    if item.to_scan is None:
        return estimate
    pulled = _pull(estimate, grid[1], item.to_scan.GetInverse(), item.sr.shape,
                   item.scan.sr_affine)  # fmt: skip
    return item.cover_scan * pulled + (1.0 - item.cover_scan) * item.sr


def _consistency_db(estimate: np.ndarray, item: _Prepared, grid) -> float:
    """The scan's DataConsistencyPSNR of the common-grid estimate (dB, rounded)."""
    value = consistency_psnr(
        _on_scan(estimate, item, grid), item.lr, item.scan.acquisition, mask=item.head,
        data_range=item.data_range,
    )  # fmt: skip
    return round(min(float(value), 999.0), 2)


def combine_scans(
    scans: Sequence[Scan],
    *,
    reference: int = 0,
    iterations: int = DEFAULT_ITERATIONS,
    seed: int = 0,
    threads: int | None = 1,
) -> CombinedResult:
    """Combine ``scans`` into one image on the reference scan's output grid (module docstring).

    Raises :class:`CombineError` when fewer than two scans are given or usable (the message
    names each left-out scan and why). ``seed``/``threads`` make the registrations
    deterministic. The result is in the reference scan's intensity units.
    """
    start = time.perf_counter()
    if len(scans) < 2:
        raise CombineError(f"need at least two scans to combine, got {len(scans)}")
    if not 0 <= reference < len(scans):
        raise CombineError(f"reference index {reference} is not one of the {len(scans)} scans")
    if iterations < 1:
        raise CombineError(f"iterations must be at least 1, got {iterations}")
    prepared, records = _prepare(scans, reference, seed=seed, threads=threads)
    if len(prepared) < 2:
        reasons = "; ".join(f"{r['Run']}: {r['Excluded']}" for r in records if not r["Used"])
        raise CombineError(f"fewer than two scans can be combined: {reasons}")
    ref = scans[reference]
    grid = (ref.sr.shape, ref.sr_affine)
    weights = np.zeros(ref.sr.shape, dtype=np.float32)
    total = np.zeros(ref.sr.shape, dtype=np.float32)
    for item in prepared:
        if item.to_scan is None:
            moved, cover = item.sr, np.ones(ref.sr.shape, dtype=np.float32)
        else:
            moved, cover = _pull(item.sr, item.scan.sr_affine, item.to_scan, *grid), \
                item.cover_common
        total += cover * moved
        weights += cover
    average = total / np.maximum(weights, 1e-6)
    before = [_consistency_db(average, item, grid) for item in prepared]
    # the reference last: the result reproduces it without any resampling
    order = sorted(prepared, key=lambda item: item.to_scan is None)
    estimate = average.copy()
    for _ in range(int(iterations)):
        for item in order:
            on_scan = _on_scan(estimate, item, grid)
            delta = enforce_consistency(on_scan, item.lr, item.scan.acquisition) - on_scan
            if item.to_scan is None:
                estimate += delta
            else:
                pushed = _pull(delta, item.scan.sr_affine, item.to_scan, *grid)
                estimate += item.cover_common * pushed
    after = [_consistency_db(estimate, item, grid) for item in prepared]
    used = {item.scan.name: (b, a) for item, b, a in zip(prepared, before, after, strict=True)}
    for record in records:
        if record["Run"] in used:
            b, a = used[record["Run"]]
            record.update(DataConsistencyPSNRAverage=b, DataConsistencyPSNR=a)
    norm = robust_normalisation(ref.lr)
    return CombinedResult(
        data=norm.restore(estimate), affine=np.asarray(ref.sr_affine, dtype=float),
        average=norm.restore(average), reference=ref.name, iterations=int(iterations),
        runs=records, runtime_s=time.perf_counter() - start,
    )  # fmt: skip
