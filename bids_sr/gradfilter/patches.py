"""The cheap upscale that the filters act on, and patch gathering on it.

Both learning and applying work on the order-2, unprefiltered spline upscale of the LR image
onto the HR grid of :mod:`bids_sr.image`, so one filter set serves any LR size and every
factor it was trained for, anisotropic included.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from bids_sr.interpolation import upsample


def cheap_upscale(lr: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Order-2 spline upscale without prefilter onto the HR grid (float32)."""
    return upsample(np.asarray(lr, dtype=np.float32), factors, order=2, prefilter=False)


def tap_offsets(patch_size: int) -> np.ndarray:
    """Offsets ``(taps, 3)`` of a cube patch in C order, centred on 0."""
    r = patch_size // 2
    grid = np.arange(-r, r + 1)
    return np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1).reshape(-1, 3)


def gather_patches(padded: Any, centres: Any, patch_size: int, xp: ModuleType) -> Any:
    """Patches around ``centres`` as a ``(taps, n)`` matrix (one row per tap, contiguous).

    ``padded`` is the upscale padded by ``patch_size // 2`` on every side and ``centres``
    ``(3, n)`` integer coordinates in the *unpadded* grid. One vectorised gather per tap keeps
    the temporary memory at O(n).
    """
    r = patch_size // 2
    shape = padded.shape
    flat = padded.reshape(-1)
    c = xp.asarray(centres, dtype=xp.int64)
    base = ((c[0] + r) * shape[1] + (c[1] + r)) * shape[2] + (c[2] + r)
    out = xp.empty((patch_size**3, base.shape[0]), dtype=xp.float32)
    for k, (dx, dy, dz) in enumerate(tap_offsets(patch_size)):
        out[k] = flat[base + int((dx * shape[1] + dy) * shape[2] + dz)]
    return out
