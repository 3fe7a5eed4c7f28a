"""Contrast-randomised reference images for the T2w-guided network (SynthSR-style).

High-resolution T1w/T2w pairs are few, so the guided network also learns from a second
"contrast" synthesised from each HR T1w: the T1w is segmented into intensity classes
(1-D k-means on the head: CSF, grey matter, white matter, bright tissue; the background is
its own class), every class gets a random intensity, and voxels between class centres are
mapped piecewise-linearly — so partial-volume boundaries stay where they are while the
contrast between tissues is random (inverted, flattened, T2-like or not). Independent noise,
a smooth multiplicative bias field, a random gamma and (optionally) a random Gaussian blur
follow. The network therefore cannot rely on the reference's intensities, only on where its
edges are; the blur stands for a real reference that is smoother than the T1w truth (an
average template, a T2w acquired or reconstructed at lower resolution), whose edges are
there but soft.

A core module beside :mod:`bids_sr.degrade` (synthetic resolution; this is synthetic
contrast): the supervised training and selfsr's pretraining (:mod:`bids_sr.selfsr.pretrain`)
both draw from it, so it cannot live in training/, which the core does not import.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from bids_sr.image import foreground_mask

MIN_STEP = 0.12  # smallest intensity difference between neighbouring classes (keeps edges)


def tissue_centres(t1: np.ndarray, n_classes: int = 4, seed: int = 0) -> np.ndarray:
    """Intensity centres of ``n_classes`` tissue classes of a normalised T1w's head voxels
    (1-D k-means initialised at quantiles), sorted ascending."""
    values = np.asarray(t1, dtype=np.float32)[foreground_mask(t1)]
    if values.size < n_classes:
        raise ValueError("tissue_centres: too few head voxels to segment")
    rng = np.random.default_rng(seed)
    if values.size > 200_000:
        values = rng.choice(values, 200_000, replace=False)
    centres = np.quantile(values, np.linspace(0.15, 0.95, n_classes)).astype(np.float64)
    for _ in range(20):
        labels = np.abs(values[:, None] - centres[None]).argmin(axis=1)
        updated = np.array(
            [values[labels == k].mean() if np.any(labels == k) else centres[k]
             for k in range(n_classes)]
        )
        if np.allclose(updated, centres, atol=1e-5):
            break
        centres = updated
    return np.sort(centres)


def random_mapping(centres: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Knots (x: background 0, class centres, a bright end) and random targets (y) of a
    piecewise-linear intensity map; neighbouring classes differ by at least MIN_STEP."""
    x = np.concatenate([[0.0], np.asarray(centres, dtype=float), [max(1.5, centres[-1] + 0.2)]])
    y = np.empty_like(x)
    y[0] = rng.uniform(0.0, 0.1)
    for k in range(1, len(x)):
        value = rng.uniform(0.05, 1.0)
        if abs(value - y[k - 1]) < MIN_STEP:
            value = y[k - 1] + MIN_STEP * (1 if value >= y[k - 1] or y[k - 1] < 0.5 else -1)
        y[k] = value
    y[-1] = y[-2] + 0.5 * (y[-2] - y[-3])  # continue the last slope past the brightest class
    return x, y


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float) -> np.ndarray:
    """A smooth multiplicative field exp(quadratic polynomial) with coefficients ~U(±strength)."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    terms = [*grids, *(g * g for g in grids), grids[0] * grids[1], grids[1] * grids[2]]
    log_field = sum(rng.uniform(-strength, strength) * t for t in terms)
    return np.exp(log_field).astype(np.float32)


def randomise_contrast(
    t1: np.ndarray,
    rng: np.random.Generator,
    centres: np.ndarray | None = None,
    *,
    noise: float = 0.03,
    bias: float = 0.1,
    gamma: float = 0.3,
    blur: float = 0.0,
) -> np.ndarray:
    """A random second contrast of the normalised T1w (patch or volume) ``t1``.

    ``centres``: class centres from :func:`tissue_centres` of the whole volume (computed
    from ``t1`` itself when None). Noise SD ~U(0, noise), bias log-amplitude ~U(±bias) per
    term, gamma exp(U(±gamma)), Gaussian blur SD ~U(0, blur) voxels before the noise (0: no
    blur and no draw, so the random stream is that of earlier versions). Returns float32 of
    the same shape, roughly in [0, 1].
    """
    t1 = np.asarray(t1, dtype=np.float32)
    if centres is None:
        centres = tissue_centres(t1)
    x, y = random_mapping(centres, rng)
    out = np.interp(np.clip(t1, 0.0, None), x, y, right=None).astype(np.float32)
    out = out * bias_field(t1.shape, rng, bias)
    out = np.clip(out, 0.0, None) ** np.float32(np.exp(rng.uniform(-gamma, gamma)))
    if blur > 0:
        out = gaussian_filter(out, rng.uniform(0.0, blur), mode="nearest")
    out = out + rng.normal(0.0, rng.uniform(0.0, noise), size=t1.shape).astype(np.float32)
    return out.astype(np.float32)
