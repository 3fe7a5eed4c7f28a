"""Interpolation baselines (nearest, linear, cubic B-spline) onto the HR grid of image.py.

The grid convention is scipy's ``grid_mode=True`` (see :mod:`bids_sr.image`), so these
baselines and every learned method agree voxel for voxel on where the HR grid lies.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from bids_sr.image import effective_factors

INTERPOLATION_ORDERS = {"nearest": 0, "linear": 1, "bspline": 3}


def upsample(
    data: np.ndarray, factors: Sequence[float], order: int = 3, prefilter: bool = True
) -> np.ndarray:
    """Resample ``data`` onto the HR grid for ``factors`` with a spline of ``order``.

    ``prefilter=False`` gives the cheap smoothing upscale that the gradient-filter learner
    uses (spline coefficients taken as the samples themselves).
    """
    zoom = effective_factors(data.shape, factors)
    out = ndimage.zoom(
        np.asarray(data, dtype=np.float32),
        zoom,
        order=order,
        mode="nearest",
        grid_mode=True,
        prefilter=prefilter,
    )
    return out.astype(np.float32, copy=False)


def interpolate(data: np.ndarray, factors: Sequence[float], method: str) -> np.ndarray:
    """Run the interpolation baseline called ``method`` (one of INTERPOLATION_ORDERS)."""
    try:
        order = INTERPOLATION_ORDERS[method]
    except KeyError as exc:
        raise ValueError(f"unknown interpolation method {method!r}") from exc
    return upsample(data, factors, order=order)
