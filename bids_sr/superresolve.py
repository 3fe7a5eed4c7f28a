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

from bids_sr.acquisition import Acquisition, consistency_psnr, enforce_consistency
from bids_sr.image import as_factors, foreground_mask, hr_shape
from bids_sr.interpolation import INTERPOLATION_ORDERS, interpolate
from bids_sr.recipes import SELFSR, SelfSRRecipe

NETWORK_METHODS = ("fsrcnn", "espcn", "srgan", "srrecnn", "srrecnn-t2w", "srrecnn-flair")
FILTER_METHODS = ("gradfilter",)
#: Learn per scan from the scan itself (2D scans only): no shipped weights. ``selfsr`` trains
#: a small CNN (minutes), ``selfsr-fast`` the cohort mode (its prior with the recipe's
#: ``fast_iterations`` steps, none today), ``selfsr-filters`` closed-form
#: filters (seconds, less gain); ``selfsr-t2w``/``selfsr-flair`` train the CNN with a
#: registered HR T2w/FLAIR as a guide.
SELF_SUPERVISED_METHODS = ("selfsr", "selfsr-fast", "selfsr-filters", "selfsr-t2w",
                           "selfsr-flair")  # fmt: skip
#: Guided methods and the BIDS suffix of the registered HR reference each takes
#: (``reference``); the weights of one never take the other contrast.
REFERENCE_SUFFIXES = {"srrecnn-t2w": "T2w", "srrecnn-flair": "FLAIR",
                      "selfsr-t2w": "T2w", "selfsr-flair": "FLAIR"}  # fmt: skip
GUIDED_METHODS = tuple(REFERENCE_SUFFIXES)
INTERPOLATION_METHODS = tuple(INTERPOLATION_ORDERS)
#: Methods that run without a weights file.
WEIGHTLESS_METHODS = INTERPOLATION_METHODS + SELF_SUPERVISED_METHODS
METHODS = INTERPOLATION_METHODS + NETWORK_METHODS + FILTER_METHODS + SELF_SUPERVISED_METHODS


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
    if method in WEIGHTLESS_METHODS:
        raise FileNotFoundError(f"{method} runs without a weights file")
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
    acquisition: Acquisition | None = None,
    data_consistency: bool = True,
    model_dir: str | None = None,
    uncertainty: dict[str, np.ndarray] | None = None,
    selfsr_recipe: SelfSRRecipe = SELFSR,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Super-resolve a normalised LR volume; return the HR volume and a run report.

    ``lr`` is float32 scaled to about [0, 1] (see :class:`bids_sr.image.Normalisation`);
    ``reference`` is an HR image already on the output grid (T2w, for guided methods);
    ``amp`` (bf16/fp16) asks networks for mixed precision on CUDA.
    ``acquisition`` is how ``lr`` was acquired (default: an isotropic 3D scan); with
    ``data_consistency`` the result is corrected so that it projects back onto ``lr``
    (:func:`bids_sr.acquisition.enforce_consistency`), except for ``nearest``, whose point
    is to keep the input's values.
    ``model_dir``: where a self-supervised method keeps its per-scan model (a rerun reuses
    it); pass a dict as ``uncertainty`` to receive its uncertainty map (``"map"``);
    ``selfsr_recipe``: how it learns (:class:`bids_sr.recipes.SelfSRRecipe`).
    The report holds at least ``method``, ``device``, ``runtime_s`` and
    ``data_consistency_psnr`` (PSNR of the projected result against ``lr`` in the head,
    dB; ``data_consistency_psnr_before`` too when the correction ran).
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
    elif method in SELF_SUPERVISED_METHODS:
        from bids_sr.selfsr import super_resolve_selfsr
        from bids_sr.selfsr.method import fast_prior

        guided = method in GUIDED_METHODS
        if guided and reference is None:
            raise ValueError(f"{method} needs a registered {REFERENCE_SUFFIXES[method]} on the "
                             "output grid (reference=...)")  # fmt: skip
        hr, report = super_resolve_selfsr(
            lr, factors, acquisition, seed=seed, device=device, model_dir=model_dir,
            progress=progress, uncertainty=uncertainty,
            learner="filters" if method == "selfsr-filters" else "cnn",
            iterations=selfsr_recipe.fast_iterations if method == "selfsr-fast" else None,
            prior=fast_prior(max(factors)) if method == "selfsr-fast" else None,
            reference=reference if guided else None,
            reference_contrast=REFERENCE_SUFFIXES[method] if guided else None,
            recipe=selfsr_recipe,
        )
        check = report.get("guide_check")
        if check and not check["used"]:  # the scan's own pairs showed the guide did not help
            report.update(requested_method=method, fallback_from=method, fallback_reason=(
                f"with the {REFERENCE_SUFFIXES[method]} the per-scan network's error on the "
                f"scan's own slices was {check['guided_l1_ratio']:.4f} of B-spline's, without "
                f"it {check['mono_l1_ratio']:.4f}: the reference did not help; ran selfsr"))
            method = "selfsr"
    else:
        from bids_sr.gradfilter import apply_gradient_filters

        hr, report = apply_gradient_filters(
            lr, factors, weights=weights, device=device, progress=progress
        )
    expected = hr_shape(lr.shape, factors)
    if hr.shape != expected:
        raise RuntimeError(f"{method} produced shape {hr.shape}, expected {expected}")
    # nearest keeps the input's values exactly (users ask for it on label maps): measured only
    hr, checked = _consistency(hr, lr, acquisition, data_consistency and method != "nearest")
    report.update(checked)
    report = {"method": method, "runtime_s": time.perf_counter() - start, **report}
    return hr.astype(np.float32, copy=False), report


def _consistency(
    hr: np.ndarray, lr: np.ndarray, acquisition: Acquisition | None, enforce: bool
) -> tuple[np.ndarray, dict[str, Any]]:
    """Score (and, when ``enforce``, correct) ``hr`` against the acquired ``lr``."""
    acquisition = acquisition or Acquisition(spacing=(1.0, 1.0, 1.0))
    head = foreground_mask(lr)
    before = consistency_psnr(hr, lr, acquisition, mask=head)
    out: dict[str, Any] = {"data_consistency": bool(enforce), **acquisition.describe()}
    if enforce:
        hr = enforce_consistency(hr, lr, acquisition)
        out["data_consistency_psnr_before"] = _db(before)
        out["data_consistency_psnr"] = _db(consistency_psnr(hr, lr, acquisition, mask=head))
    else:
        out["data_consistency_psnr"] = _db(before)
    return hr, out


def _db(value: float) -> float:
    """A PSNR rounded for a sidecar (JSON has no infinity: an exact match reports 999)."""
    return round(min(float(value), 999.0), 2)
