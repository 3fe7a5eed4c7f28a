"""Training pairs from a scan's own in-plane data (the self-supervision of :mod:`bids_sr.selfsr`).

A 2D scan is sharp in-plane and blurred along its slice axis. Degrading the in-plane data
along one in-plane axis with the *same* acquisition model (slice profile, thickness, gap,
non-integer factor: :func:`bids_sr.acquisition.axis_matrix`) and B-spline-upsampling it back
gives planes that look like the through-plane planes of the B-spline baseline, with their
sharp originals as targets. The factor is taken in voxels of the output grid, so that the
degraded pattern spans as many voxels in training as the slice profile does at application.

Part of the numerical core (never imports nipype or pybids).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bids_sr.acquisition import Acquisition, _apply_along, _bspline_matrix, axis_matrix
from bids_sr.recipes import SELFSR


def slice_phase(n_hr: int, n_lr: int) -> np.ndarray:
    """Where each HR index lies relative to the nearest LR sample, in LR spacings: ``[-0.5, 0.5)``.

    HR voxel ``j`` is centred at LR coordinate ``(j + 0.5) n_lr / n_hr - 0.5`` (the grid
    convention of :mod:`bids_sr.image`); the B-spline baseline's error depends on this phase.
    """
    u = (np.arange(n_hr) + 0.5) * (n_lr / n_hr) - 0.5
    return (u - np.floor(u + 0.5)).astype(np.float32)


def phase_bins(phase: np.ndarray, n_bins: int) -> np.ndarray:
    """Phase → bin index in ``range(n_bins)`` (equal bins over ``[-0.5, 0.5)``)."""
    index = np.floor((np.asarray(phase, dtype=np.float64) + 0.5) * n_bins).astype(np.int64)
    return np.clip(index, 0, n_bins - 1)


def simulated_slices(n: int, factor: float) -> int:
    """How many slices of spacing ``factor`` (in voxels) fit in an extent of ``n`` voxels."""
    n_lr = int(np.floor(n / factor))
    if n_lr < 2:
        raise ValueError(f"in-plane extent {n} is too small for a slice factor of {factor:g}")
    return n_lr


def crop_to_slices(volume: np.ndarray, axis: int, factor: float) -> np.ndarray:
    """``volume`` cropped, centred, along ``axis`` to the ``round(n_lr · factor)`` voxels that
    :func:`simulated_slices` slices map back onto exactly: the crop of
    :func:`degrade_axis`'s target, for anything that must stay aligned with it."""
    n = volume.shape[axis]
    m = int(round(simulated_slices(n, factor) * factor))
    start = (n - m) // 2
    return np.take(volume, np.arange(start, start + m), axis=axis)


def inplane_axes(slice_axis: int) -> list[int]:
    """The two array axes other than ``slice_axis``, in order: the axes of the acquired slices."""
    return [a for a in range(3) if a != int(slice_axis)]


def axis_detail(volume: np.ndarray, axis: int) -> float:
    """Mean absolute second difference of ``volume`` along ``axis`` inside the head (voxels
    above 10 % of the 99.5th percentile): how much fine detail the axis holds."""
    data = np.asarray(volume, dtype=np.float32)
    scale = float(np.percentile(data, 99.5)) or 1.0
    head = data > 0.1 * scale
    second = np.abs(np.diff(data, n=2, axis=axis))
    inside = np.take(head, np.arange(1, data.shape[axis] - 1), axis=axis)
    return float(second[inside].mean()) / scale if inside.any() else 0.0


def detailed_inplane_axes(volume: np.ndarray, slice_axis: int,
                          min_ratio: float = SELFSR.min_detail_ratio) -> list[int]:  # fmt: skip
    """The in-plane axes of ``volume`` that hold at least ``min_ratio`` (the recipe's
    ``min_detail_ratio``, :class:`bids_sr.recipes.SelfSRRecipe`, which says why; 0 keeps
    both) of the sharper in-plane axis's fine detail (:func:`axis_detail`): the axes whose
    degradation gives training pairs with sharp targets. An axis below it was not acquired
    at the in-plane resolution its voxels claim. Always at least the sharper axis; both when
    neither has detail."""
    min_ratio = float(min_ratio)
    inplane = inplane_axes(slice_axis)
    detail = {a: axis_detail(volume, a) for a in inplane}
    best = max(detail.values())
    if best <= 0:
        return inplane
    return [a for a in inplane if detail[a] >= min_ratio * best]


def inplane_orientations(slice_axis: int,
                         axes: Sequence[int] | None = None) -> list[tuple[int, int]]:  # fmt: skip
    """``(degraded axis, other in-plane axis)`` for each in-plane axis in ``axes`` (default
    both, e.g. :func:`detailed_inplane_axes`): the orientations whose pairs a learner trains
    on, each with the in-plane axis that stays sharp."""
    first, second = inplane_axes(slice_axis)
    return [(axis, other) for axis, other in ((first, second), (second, first))
            if axes is None or axis in axes]  # fmt: skip


def degrade_axis(
    volume: np.ndarray, axis: int, factor: float, acquisition: Acquisition
) -> tuple[np.ndarray, np.ndarray, int]:
    """Simulate the slice acquisition along ``axis`` of ``volume`` and upsample it back.

    ``factor`` is the slice spacing in output-grid voxels. Returns ``(degraded, target,
    n_lr)``: the B-spline upsampling of the projected volume and the volume itself, both
    cropped along ``axis`` to the length ``round(n_lr · factor)`` that the LR grid maps back
    onto exactly, and the number of simulated slices ``n_lr``.
    """
    psf = acquisition.psf(acquisition.slice_axis)
    n_lr = simulated_slices(volume.shape[axis], factor)
    target = crop_to_slices(volume, axis, factor).astype(np.float32)
    m = target.shape[axis]
    forward = axis_matrix(n_lr, m, psf.profile, float(psf.width))
    lr = _apply_along(target, forward, axis)
    degraded = _apply_along(lr, _bspline_matrix(n_lr, m).astype(np.float32), axis)
    return np.ascontiguousarray(degraded, dtype=np.float32), target, n_lr
