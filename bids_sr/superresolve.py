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
GUIDED_METHODS = ("srrecnn-t2w",)  # need a registered HR T2w (``reference``)
INTERPOLATION_METHODS = tuple(INTERPOLATION_ORDERS)
METHODS = INTERPOLATION_METHODS + NETWORK_METHODS + FILTER_METHODS


def check_method(method: str) -> str:
    """Return ``method`` if known, else raise ValueError listing the choices."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from: {', '.join(METHODS)}")
    return method


def default_weights(method: str, factors: Sequence[float]):
    """The shipped weights a learned method would use for ``factors``.

    Raises FileNotFoundError (message: what to do) when none fit; used by the CLI to stop
    before running rather than after.
    """
    if method in NETWORK_METHODS:
        from bids_sr.inference import resolve_weights
        from bids_sr.models.registry import get_spec

        return resolve_weights(get_spec(method), factors)
    from bids_sr.gradfilter import default_weights_path

    path = default_weights_path(factors)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no shipped weights for gradfilter; pass --weights PATH")
    return path


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
    amp: str | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Super-resolve a normalised LR volume; return the HR volume and a run report.

    ``lr`` is float32 scaled to about [0, 1] (see :class:`bids_sr.image.Normalisation`);
    ``reference`` is an HR image already on the output grid (T2w, for guided methods);
    ``amp`` (bf16/fp16) asks networks for mixed precision on CUDA.
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
            amp=amp,
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
