"""One entry point for every method: an LR array in, an HR array on the image.py grid out.

The numerical core's dispatcher. Interfaces and the CLI call :func:`super_resolve`; method
families live in their own modules and are imported only when used (torch is not loaded for
an interpolation run, cupy only when asked for).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bids_sr.image import as_factors, hr_shape
from bids_sr.interpolation import INTERPOLATION_ORDERS, interpolate

NETWORK_METHODS = ("fsrcnn", "espcn", "srgan", "srrecnn", "srrecnn-t2w")
FILTER_METHODS = ("gradfilter",)
INTERPOLATION_METHODS = tuple(INTERPOLATION_ORDERS)
METHODS = INTERPOLATION_METHODS + NETWORK_METHODS + FILTER_METHODS


def check_method(method: str) -> str:
    """Return ``method`` if known, else raise ValueError listing the choices."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from: {', '.join(METHODS)}")
    return method


def super_resolve(
    lr: np.ndarray,
    scale: float | Sequence[float],
    method: str,
    *,
    weights: str | None = None,
    reference: np.ndarray | None = None,
    device: str = "auto",
    tile_size: int | None = None,
    tile_overlap: float | None = None,
    seed: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Super-resolve a normalised LR volume; return the HR volume and a run report.

    ``lr`` is float32 scaled to about [0, 1] (see :class:`bids_sr.image.Normalisation`);
    ``reference`` is an HR image already on the output grid (T2w, for guided methods).
    The report holds at least ``method``, ``device`` and ``runtime_s``.
    """
    check_method(method)
    factors = as_factors(scale)
    start = time.perf_counter()
    if method in INTERPOLATION_METHODS:
        hr = interpolate(lr, factors, method)
        report: dict[str, Any] = {"device": "cpu"}
    elif method in NETWORK_METHODS:
        from bids_sr.inference import super_resolve_network

        hr, report = super_resolve_network(
            lr,
            factors,
            method,
            weights=weights,
            reference=reference,
            device=device,
            tile_size=tile_size,
            tile_overlap=tile_overlap,
            seed=seed,
            progress=progress,
        )
    else:
        from bids_sr.gradfilter import apply_gradient_filters

        hr, report = apply_gradient_filters(
            lr, factors, weights=weights, device=device, progress=progress
        )
    expected = hr_shape(lr.shape, factors)
    if hr.shape != expected:
        raise RuntimeError(f"{method} produced shape {hr.shape}, expected {expected}")
    report = {"method": method, "runtime_s": time.perf_counter() - start, **report}
    return hr.astype(np.float32, copy=False), report
