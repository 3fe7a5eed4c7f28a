"""Tiny synthetic volumes shared by the gradfilter tests (piecewise-smooth ellipsoids)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def ellipsoid_phantom(seed: int, shape=(32, 32, 32), blobs: int = 12) -> np.ndarray:
    """Smooth piecewise-constant ellipsoids on a dim background, float32."""
    rng = np.random.default_rng(seed)
    grid = np.mgrid[tuple(slice(0, n) for n in shape)].astype(np.float32)
    img = np.zeros(shape, np.float32)
    for _ in range(blobs):
        centre = [rng.uniform(4, n - 4) for n in shape]
        axes = rng.uniform(2, 9, 3)
        inside = sum(((grid[i] - centre[i]) / axes[i]) ** 2 for i in range(3)) < 1
        img[inside] = rng.uniform(0.2, 1.0)
    return (ndimage.gaussian_filter(img, 0.7) + 0.1).astype(np.float32)
