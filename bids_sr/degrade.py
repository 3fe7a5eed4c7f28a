"""Degradation models: simulate the low-resolution acquisition of a high-resolution image.

Training and evaluation use the same presets, so a model is scored under the degradation it
was trained for. Every preset returns an LR array whose grid relates to the (cropped) HR grid
by the convention of :mod:`bids_sr.image`: upsampling it by the same factors gives back the
HR shape exactly.

Presets
-------
``gaussian``
    Gaussian blur (σ = 1 HR voxel for factors up to 2, σ = s/2 HR voxels above, per axis,
    none on axes with factor 1), then cubic-spline resampling to the LR grid. SRReCNN3D's
    protocol.
``decimate``
    Keep every s-th voxel (no blur: aliasing), as 3D FSRCNN's training did. The kept voxels
    sit half an HR voxel off the LR centres of our grid for even factors; a model trained on
    this preset learns that shift, the interpolation baselines do not.
``kspace``
    Central k-space truncation: the LR image a scanner with a smaller acquisition matrix
    would reconstruct (sinc interpolation, Gibbs ringing included), phase-shifted so the LR
    samples land on our LR voxel centres.
``slice``
    A 2D scan, from :mod:`bids_sr.acquisition`: along the axis with the largest factor, the
    slice profile (``rect`` by default, or ``gaussian``), as thick as the slice spacing unless
    an :class:`~bids_sr.acquisition.Acquisition` with another thickness (a gap, an overlap)
    is given; the isotropic blur on other upsampled axes. Non-integer factors (5.5 mm
    slices → 1 mm) need no special case. With the default thickness and integer factors the
    slice axis is the mean of each block of s slices — the clinical case of 1×1×4.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from bids_sr.acquisition import Acquisition, project, simulated_acquisition
from bids_sr.image import hr_shape

PRESETS = ("gaussian", "decimate", "kspace", "slice")


def lr_shape_for(shape: Sequence[int], factors: Sequence[float]) -> tuple[int, int, int]:
    """LR shape for an HR image: each extent divided by its factor, rounded down."""
    return tuple(max(1, int(np.floor(n / f))) for n, f in zip(shape[:3], factors, strict=True))


def crop_to_factor(hr: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Crop ``hr`` (centred) to the largest shape that the LR grid maps back onto exactly."""
    target = hr_shape(lr_shape_for(hr.shape, factors), factors)
    starts = [(n - t) // 2 for n, t in zip(hr.shape, target, strict=True)]
    return hr[tuple(slice(s, s + t) for s, t in zip(starts, target, strict=True))]


def gaussian_sigmas(factors: Sequence[float]) -> tuple[float, float, float]:
    """Per-axis blur (HR voxels) of the ``gaussian`` preset."""
    return tuple(0.0 if f <= 1 else (1.0 if f <= 2 else f / 2.0) for f in factors)


def _integer_factors(factors: Sequence[float], preset: str) -> tuple[int, int, int]:
    ints = tuple(int(round(f)) for f in factors)
    if not np.allclose(ints, factors):
        raise ValueError(f"the {preset!r} degradation needs integer factors, got {tuple(factors)}")
    return ints


def _resample_to(data: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    zoom = [t / n for t, n in zip(shape, data.shape, strict=True)]
    return ndimage.zoom(data, zoom, order=3, mode="nearest", grid_mode=True)


def _kspace_truncate(hr: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Keep the central ``shape`` frequencies, with a phase ramp for block-centred sampling."""
    spectrum = np.fft.fftn(hr)
    for axis, (n, m) in enumerate(zip(hr.shape, shape, strict=True)):
        if n == m:
            continue
        # shift by (s - 1) / 2 HR voxels so LR sample i lands on HR coordinate s*i + (s-1)/2
        shift = (n / m - 1.0) / 2.0
        ramp = np.exp(2j * np.pi * np.fft.fftfreq(n) * shift)
        expand = [1] * hr.ndim
        expand[axis] = n
        spectrum = spectrum * ramp.reshape(expand)
    centred = np.fft.fftshift(spectrum)
    starts = [n // 2 - m // 2 for n, m in zip(hr.shape, shape, strict=True)]
    cropped = centred[tuple(slice(s, s + m) for s, m in zip(starts, shape, strict=True))]
    lr = np.fft.ifftn(np.fft.ifftshift(cropped)).real
    return lr * (np.prod(shape) / np.prod(hr.shape))


def degrade(
    hr: np.ndarray,
    factors: Sequence[float],
    preset: str = "gaussian",
    *,
    acquisition: Acquisition | None = None,
) -> np.ndarray:
    """Simulate the LR image of ``hr`` for per-axis ``factors`` with a named preset.

    ``hr`` must already have a shape the factors divide (use :func:`crop_to_factor`).
    ``acquisition`` (``slice`` only) sets the slice thickness or gap and profile (see
    :func:`bids_sr.acquisition.simulated_acquisition`; default: rect, thickness = spacing).
    Returns float32.
    """
    hr = np.asarray(hr, dtype=np.float32)
    shape = lr_shape_for(hr.shape, factors)
    if hr_shape(shape, factors) != hr.shape:
        raise ValueError(f"HR shape {hr.shape} does not fit factors {tuple(factors)}; crop first")
    if preset == "gaussian":
        blurred = ndimage.gaussian_filter(hr, gaussian_sigmas(factors), mode="nearest")
        lr = _resample_to(blurred, shape)
    elif preset == "decimate":
        steps = _integer_factors(factors, preset)
        lr = hr[:: steps[0], :: steps[1], :: steps[2]]
    elif preset == "kspace":
        lr = _kspace_truncate(hr, shape)
    elif preset == "slice":
        if acquisition is None:
            acquisition = simulated_acquisition((1.0, 1.0, 1.0), factors)
        lr = project(hr, acquisition, shape)
    else:
        raise ValueError(f"unknown degradation preset {preset!r}; choose from {PRESETS}")
    if acquisition is not None and preset != "slice":
        raise ValueError(f"slice parameters apply to the 'slice' degradation, not {preset!r}")
    return np.ascontiguousarray(lr, dtype=np.float32)
