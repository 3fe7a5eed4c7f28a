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

import numpy as np

from bids_sr.acquisition import Acquisition, _apply_along, _bspline_matrix, axis_matrix


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
