"""Image-quality metrics for super-resolution: PSNR, 3D SSIM and a gradient (edge) error.

Part of the numerical core (numpy/scipy only; never imports nipype or pybids).

Conventions
-----------
* ``data_range`` is always explicit. PSNR and SSIM depend on it, and a default taken from
  the test image (as some libraries do) makes scores incomparable between methods. The
  evaluation mode (:mod:`bids_sr.evaluation`) scores images after
  :func:`bids_sr.image.robust_normalisation` of the HR truth, which maps the background to 0
  and the 99.5th percentile of the head to 1, so it passes ``data_range=1.0``: the robust
  intensity range of the reference, the same for every method.
* ``mask`` restricts the *average* to the voxels it selects. For SSIM the local statistics
  are still computed with the Gaussian window over the whole volume (a voxel at the mask
  edge sees its true neighbourhood), and only the SSIM map is averaged inside the mask.
* Values are not clipped: an overshooting method is scored on what it produced.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_TRUNCATE = 3.5  # Gaussian window truncated at 3.5 σ (11 voxels wide for σ = 1.5)


def _check_pair(test: np.ndarray, ref: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
    if test.shape != ref.shape:
        raise ValueError(f"test and reference shapes differ: {test.shape} vs {ref.shape}")
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != ref.shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {ref.shape}")
    if not mask.any():
        raise ValueError("mask selects no voxels")
    return mask


def _check_range(data_range: float) -> float:
    data_range = float(data_range)
    if not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a positive number, got {data_range}")
    return data_range


def _masked_mean(values: np.ndarray, mask: np.ndarray | None) -> float:
    return float(values[mask].mean() if mask is not None else values.mean())


def psnr(
    test: np.ndarray, ref: np.ndarray, *, data_range: float, mask: np.ndarray | None = None
) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(L² / MSE)``, MSE over ``mask`` (or all).

    Identical images give ``inf``.
    """
    data_range = _check_range(data_range)
    test = np.asarray(test, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    mask = _check_pair(test, ref, mask)
    mse = _masked_mean((test - ref) ** 2, mask)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def ssim_map(
    test: np.ndarray, ref: np.ndarray, *, data_range: float, sigma: float = 1.5
) -> np.ndarray:
    """The 3D SSIM map of Wang et al. (2004) with an isotropic Gaussian window of ``sigma``.

    Local means, variances and the covariance are Gaussian-weighted (``mode='reflect'`` at the
    borders); ``C1 = (K1 L)²``, ``C2 = (K2 L)²`` with ``K1 = 0.01``, ``K2 = 0.03``.
    """
    data_range = _check_range(data_range)
    x = np.asarray(test, dtype=np.float64)
    y = np.asarray(ref, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"test and reference shapes differ: {x.shape} vs {y.shape}")

    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma, mode="reflect", truncate=SSIM_TRUNCATE)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return num / den


def ssim(
    test: np.ndarray,
    ref: np.ndarray,
    *,
    data_range: float,
    mask: np.ndarray | None = None,
    sigma: float = 1.5,
) -> float:
    """Mean 3D SSIM (see :func:`ssim_map`) over ``mask`` or the whole volume; 1 = identical."""
    mask = _check_pair(np.asarray(test), np.asarray(ref), mask)
    return _masked_mean(ssim_map(test, ref, data_range=data_range, sigma=sigma), mask)


def gradient_magnitude(data: np.ndarray) -> np.ndarray:
    """``|∇data|`` with central differences (``np.gradient``), in intensity per voxel."""
    grads = np.gradient(np.asarray(data, dtype=np.float64))
    return np.sqrt(sum(g * g for g in grads))


def gradient_magnitude_error(
    test: np.ndarray, ref: np.ndarray, *, mask: np.ndarray | None = None
) -> float:
    """High-frequency error: relative L2 error of the gradient magnitude.

    ``sqrt(Σ (|∇test| − |∇ref|)²) / sqrt(Σ |∇ref|²)`` over ``mask`` (or all voxels). It is 0
    for identical images, about 1 when ``test`` has lost all edges (a flat image) and
    independent of the intensity scale, so it reads as "fraction of edge energy wrong".
    Blurry results (interpolation) score high because edges are weakened; ringing and noise
    score high because they add spurious gradients.
    """
    test = np.asarray(test)
    ref = np.asarray(ref)
    mask = _check_pair(test, ref, mask)
    g_test = gradient_magnitude(test)
    g_ref = gradient_magnitude(ref)
    diff = (g_test - g_ref) ** 2
    energy = g_ref**2
    if mask is not None:
        diff, energy = diff[mask], energy[mask]
    denom = float(energy.sum())
    if denom == 0:
        return 0.0 if float(diff.sum()) == 0 else float("inf")
    return float(np.sqrt(float(diff.sum()) / denom))


def compute_metrics(
    test: np.ndarray, ref: np.ndarray, *, mask: np.ndarray, data_range: float
) -> dict[str, float]:
    """All evaluation metrics of ``test`` against ``ref``, inside ``mask`` and on the volume.

    Returns ``psnr_brain``, ``ssim_brain``, ``psnr_whole``, ``ssim_whole`` and
    ``gradient_error_brain`` (see the functions above; column meanings in
    :func:`bids_sr.evaluation.evaluation_columns`).
    """
    test = np.asarray(test, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    mask = _check_pair(test, ref, mask)
    smap = ssim_map(test, ref, data_range=data_range)
    return {
        "psnr_brain": psnr(test, ref, data_range=data_range, mask=mask),
        "ssim_brain": _masked_mean(smap, mask),
        "psnr_whole": psnr(test, ref, data_range=data_range),
        "ssim_whole": _masked_mean(smap, None),
        "gradient_error_brain": gradient_magnitude_error(test, ref, mask=mask),
    }
