"""What a reference image contributes to a guided result, measured two ways.

Part of the numerical core (numpy/scipy; never imports nipype or pybids).

1. **Guided − mono** (:func:`guided_minus_mono`): a guided network (``srrecnn-t2w``) has a
   *mono twin*, the same network trained without the reference channel (:func:`mono_twin`,
   weights from :func:`mono_twin_weights`). Run on the same input, with the same factors and
   data consistency, their difference is what the reference changed. The report shows it as
   a map and the sidecar records its size inside the brain.
2. **Reference-only structures** (:func:`reference_only_structure_check`): a guide should
   lend the T1w the *edges* it lost, never *structure* that exists only in the reference.
   The check inserts a few spheres (8 mm, bright or dark against their surroundings) into the
   reference inside the brain, where the T1w has nothing of the kind, runs the guided model
   with the original and with the altered reference, and measures how much of the inserted
   contrast reached the T1w output (``transfer``: mean |Δ output| / mean |Δ reference|
   inside the spheres, both on robust-normalised scales; 0 = ignored, 1 = copied).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from bids_sr.acquisition import Acquisition
from bids_sr.masks import brain_mask
from bids_sr.metrics import psnr
from bids_sr.superresolve import (
    GUIDED_METHODS,
    WEIGHTLESS_METHODS,
    default_weights,
    super_resolve,
)


def mono_twin(method: str) -> str:
    """The unguided network a guided ``method`` extends: ``srrecnn-t2w`` → ``srrecnn``."""
    if method not in GUIDED_METHODS:
        raise ValueError(f"{method} is not a guided method ({', '.join(GUIDED_METHODS)})")
    return method.split("-", 1)[0]


def mono_twin_weights(
    method: str, guided_weights: str | None, factors: Sequence[float]
) -> Path | None:
    """The weights of ``method``'s mono twin to compare a guided run with.

    A guided weights file named ``<method>_<suffix>`` (the shipped naming) pairs with
    ``<twin>_<suffix>`` beside it; otherwise the twin's shipped weights for ``factors``
    (the closest shipped factors, as a run would pick). None for a twin that needs no
    weights (``selfsr``). FileNotFoundError when none exist.
    """
    twin = mono_twin(method)
    if twin in WEIGHTLESS_METHODS:
        return None
    if guided_weights:
        path = Path(guided_weights)
        if path.name.startswith(f"{method}_"):
            paired = path.with_name(twin + path.name[len(method):])
            if paired.is_file():
                return paired
    return Path(default_weights(twin, factors))


def guided_minus_mono(
    guided: np.ndarray, mono: np.ndarray, zooms: Sequence[float] = (1.0, 1.0, 1.0)
) -> dict[str, float]:
    """How much a guided result differs from its mono twin's, inside the brain.

    Both images are on the same grid and intensity scale (the T1w's). The brain mask is
    :func:`bids_sr.masks.brain_mask` of ``mono`` (the T1w on the output grid, without the
    reference's influence); the intensity range is its 0.5–99.5 percentile range in the
    brain. Returns ``mean_abs_difference`` (T1w units), ``mean_abs_difference_percent`` (of
    that range), ``max_abs_difference`` (99.9th percentile of |guided − mono|, T1w units),
    ``psnr_db`` (guided against mono, data range = that range) and ``intensity_range``.
    """
    guided = np.asarray(guided, dtype=np.float32)
    mono = np.asarray(mono, dtype=np.float32)
    if guided.shape != mono.shape:
        raise ValueError(f"guided shape {guided.shape} differs from mono shape {mono.shape}")
    mask = brain_mask(mono, zooms)
    low, high = np.percentile(mono[mask], [0.5, 99.5])
    span = float(high - low) or 1.0
    diff = np.abs(guided[mask] - mono[mask])
    mean = float(diff.mean())
    return {
        "mean_abs_difference": mean,
        "mean_abs_difference_percent": 100.0 * mean / span,
        "max_abs_difference": float(np.percentile(diff, 99.9)),
        "psnr_db": min(psnr(guided, mono, data_range=span, mask=mask), 999.0),
        "intensity_range": span,
    }


def _interior(mask: np.ndarray, zooms: Sequence[float], margin_mm: float) -> np.ndarray:
    """Voxels of ``mask`` at least ``margin_mm`` from its boundary."""
    return ndimage.distance_transform_edt(mask, sampling=tuple(zooms)) >= margin_mm


def _ball(shape, centre, reach, zooms, radius: float) -> np.ndarray:
    """Boolean mask of the voxels within ``radius`` mm of voxel ``centre``."""
    box = tuple(slice(max(0, c - r), min(n, c + r + 1))
                for c, r, n in zip(centre, reach, shape, strict=True))  # fmt: skip
    axes = np.ogrid[box]
    distance = sum(((a - c) * z) ** 2 for a, c, z in zip(axes, centre, zooms, strict=True))
    ball = np.zeros(shape, dtype=bool)
    ball[box] = distance <= radius**2
    return ball


def insert_structures(
    reference: np.ndarray,
    mask: np.ndarray,
    zooms: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    count: int = 4,
    diameter_mm: float = 8.0,
    seed: int = 0,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``reference`` with ``count`` spheres of ``diameter_mm`` inserted inside ``mask``.

    Centres lie at least a diameter inside the mask and two diameters apart (random, fixed
    by ``seed``). Each sphere takes the reference's 99th (bright) or 1st (dark) brain
    percentile, whichever differs more from its surroundings, so every sphere has a strong
    contrast in the reference. Returns the altered copy and one boolean mask per sphere.
    ValueError when the mask has no room for them.
    """
    reference = np.asarray(reference, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if reference.shape != mask.shape:
        raise ValueError(f"reference shape {reference.shape} differs from mask {mask.shape}")
    zooms = np.asarray(zooms, dtype=float)
    radius = diameter_mm / 2.0
    candidates = np.argwhere(_interior(mask, zooms, diameter_mm))
    dark, bright = np.percentile(reference[mask], [1.0, 99.0]) if mask.any() else (0.0, 1.0)
    rng = np.random.default_rng(seed)
    altered = reference.copy()
    reach = np.ceil(radius / zooms).astype(int)
    centres: list[np.ndarray] = []
    spheres: list[np.ndarray] = []
    for index in rng.permutation(len(candidates)):
        centre = candidates[index]
        if any(np.linalg.norm((centre - c) * zooms) < 2 * diameter_mm for c in centres):
            continue
        sphere = _ball(reference.shape, centre, reach, zooms, radius)
        local = float(reference[sphere].mean())
        altered[sphere] = bright if bright - local >= local - dark else dark
        centres.append(centre)
        spheres.append(sphere)
        if len(spheres) == count:
            return altered, spheres
    raise ValueError(
        f"the brain mask has room for {len(spheres)} of {count} spheres of {diameter_mm} mm"
    )


def structure_transfer(
    run: Callable[[np.ndarray], np.ndarray],
    reference: np.ndarray,
    altered: np.ndarray,
    spheres: Sequence[np.ndarray],
    original: np.ndarray | None = None,
) -> dict[str, Any]:
    """How much of the change from ``reference`` to ``altered`` a guided ``run`` passes on.

    ``run(reference) -> output`` is the guided method with everything else fixed;
    ``original`` is ``run(reference)`` when already computed. Per sphere, transfer = mean
    |Δ output| / mean |Δ reference| inside it. Returns ``transfer`` (over all spheres),
    ``transfer_max`` (the worst sphere), ``transfer_db`` (20 log10 of ``transfer``),
    ``mean_abs_change`` (output units) and ``spheres``.
    """
    if original is None:
        original = run(reference)
    change = np.abs(run(altered) - original)
    inserted = np.abs(np.asarray(altered, np.float32) - np.asarray(reference, np.float32))
    union = np.any(np.stack(spheres), axis=0)
    ratios = [float(change[s].mean() / max(inserted[s].mean(), 1e-12)) for s in spheres]
    transfer = float(change[union].mean() / max(inserted[union].mean(), 1e-12))
    return {
        "transfer": transfer,
        "transfer_max": max(ratios),
        "transfer_db": float(20.0 * np.log10(max(transfer, 1e-12))),
        "mean_abs_change": float(change[union].mean()),
        "spheres": len(spheres),
    }


def reference_only_structure_check(
    lr: np.ndarray,
    factors: Sequence[float],
    reference: np.ndarray,
    *,
    method: str,
    weights: str | None = None,
    mask: np.ndarray | None = None,
    zooms: Sequence[float] = (1.0, 1.0, 1.0),
    acquisition: Acquisition | None = None,
    data_consistency: bool = True,
    device: str = "cpu",
    count: int = 4,
    diameter_mm: float = 8.0,
    seed: int = 0,
    model_dir: str | None = None,
) -> dict[str, Any]:
    """Does the guided ``method`` import structures that exist only in the reference?

    ``lr`` is the normalised T1w input, ``reference`` the normalised reference on the output
    grid (voxel sizes ``zooms``), ``mask`` the brain on that grid (default: the brain mask of
    the reference). Spheres are inserted with :func:`insert_structures` and scored with
    :func:`structure_transfer`; the guided runs are those of a normal run
    (:func:`bids_sr.superresolve.super_resolve`, with ``acquisition`` and data consistency;
    ``model_dir``: where a per-scan guided method keeps its models).
    """
    reference = np.asarray(reference, dtype=np.float32)
    if mask is None:
        mask = brain_mask(reference, zooms)
    altered, spheres = insert_structures(
        reference, mask, zooms, count=count, diameter_mm=diameter_mm, seed=seed
    )

    def run(guide: np.ndarray) -> np.ndarray:
        return super_resolve(
            lr, factors, method, weights=weights, reference=guide, device=device, seed=seed,
            acquisition=acquisition, data_consistency=data_consistency, model_dir=model_dir,
        )[0]  # fmt: skip

    return {"method": method, "diameter_mm": diameter_mm,
            **structure_transfer(run, reference, altered, spheres)}  # fmt: skip
