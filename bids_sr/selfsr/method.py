"""The ``selfsr`` method: self-supervised thick-slice super-resolution of one 2D scan.

1. ``base``: cubic B-spline upsampling of the scan to the output grid (the baseline).
2. Learn: the acquired slices' in-plane data, degraded along each in-plane axis in turn with
   the scan's own acquisition model (:mod:`.pairs`), teach closed-form bucketed 2D filters
   the residual from the upsampled degraded planes back to the sharp ones (:mod:`.filters`).
   The model is saved in ``model_dir`` under a key of the input and the settings
   (:mod:`.store`); a rerun with the same input reuses it.
3. Apply: through-plane, in the planes spanned by the slice axis and each in-plane axis;
   the two results are averaged, and half their absolute difference is the uncertainty map
   (0 where both orientations agree).

Data consistency (:func:`bids_sr.acquisition.enforce_consistency`) follows in the
dispatcher, as for every method. Part of the numerical core (never imports nipype/pybids).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bids_sr.acquisition import Acquisition
from bids_sr.interpolation import upsample
from bids_sr.selfsr.filters import apply_plane_filters, head_region, learn_plane_filters
from bids_sr.selfsr.store import checksum, load_model, model_key, save_model


class SelfSRError(ValueError):
    """An input the self-supervised method cannot process (the message says why)."""


def _slice_axis(lr_shape: Sequence[int], factors: Sequence[float],
                acquisition: Acquisition | None) -> int:  # fmt: skip
    """The slice axis to super-resolve: the acquisition's, which must be upsampled."""
    if acquisition is None or acquisition.slice_axis is None:
        raise SelfSRError(
            "selfsr super-resolves 2D scans (one coarse slice axis); this input's voxel sizes "
            "describe an isotropic 3D acquisition"
        )
    axis = int(acquisition.slice_axis)
    if float(factors[axis]) <= 1.0:
        raise SelfSRError(f"selfsr needs a factor above 1 along the slice axis {axis}, got "
                          f"{float(factors[axis]):g}")  # fmt: skip
    if lr_shape[axis] < 2:
        raise SelfSRError(f"selfsr needs at least 2 slices, got {lr_shape[axis]}")
    return axis


def super_resolve_selfsr(
    lr: np.ndarray,
    factors: Sequence[float],
    acquisition: Acquisition | None,
    *,
    seed: int = 0,
    model_dir: str | os.PathLike | None = None,
    progress: bool = False,
    uncertainty: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Super-resolve a normalised 2D scan along its slice axis; return HR and a report.

    ``model_dir``: where the per-scan model is saved and looked up (default: a temporary
    folder, removed afterwards). Pass a dict as ``uncertainty`` to receive the map
    (``"map"``: float32, ≥ 0, on the output grid). The report holds ``device``,
    ``weights`` (the model file; None without ``model_dir``), ``weights_sha256``,
    ``model_reused``, ``learn_s``, ``apply_s`` and ``orientation_disagreement`` (mean of
    the uncertainty map in the head).
    """
    lr = np.asarray(lr, dtype=np.float32)
    axis = _slice_axis(lr.shape, factors, acquisition)
    inplane = [a for a in range(3) if a != axis]
    base = upsample(lr, factors, order=3)
    factor = base.shape[axis] / lr.shape[axis]
    # the acquired slices, brought to the output grid in-plane only: the training data
    inplane_factors = [1.0 if a == axis else float(factors[a]) for a in range(3)]
    settings = {"factors": [round(float(f), 6) for f in factors], "seed": int(seed),
                "acquisition": acquisition.describe()}  # fmt: skip
    key = model_key(lr, settings)
    with tempfile.TemporaryDirectory(prefix="selfsr-") as scratch:
        folder = Path(model_dir) if model_dir is not None else Path(scratch)
        path = folder / f"selfsr-{key[:24]}.safetensors"
        start = time.perf_counter()
        reused = path.exists()
        if reused:
            filters = load_model(path)
        else:
            training = upsample(lr, inplane_factors, order=3)
            filters = learn_plane_filters(training, acquisition, factor, seed=seed,
                                          progress=progress)  # fmt: skip
            del training
            save_model(filters, path, {"key": key, **settings})
        learn_s = time.perf_counter() - start
        sha = checksum(path)
        start = time.perf_counter()
        region = head_region(base)
        first = apply_plane_filters(base, filters, axis, inplane[0], lr.shape[axis],
                                    region=region, progress=progress)  # fmt: skip
        second = apply_plane_filters(base, filters, axis, inplane[1], lr.shape[axis],
                                     region=region, progress=progress)  # fmt: skip
        apply_s = time.perf_counter() - start
    del base
    hr = 0.5 * (first + second)
    spread = 0.5 * np.abs(first - second)
    del first, second
    if uncertainty is not None:
        uncertainty["map"] = spread.astype(np.float32, copy=False)
    report = {
        "device": "cpu",
        "weights": str(path) if model_dir is not None else None,
        "weights_sha256": sha,
        "model_reused": bool(reused),
        "learn_s": round(learn_s, 2),
        "apply_s": round(apply_s, 2),
        "orientation_disagreement": round(float(spread[region].mean()) if region.any() else 0.0,
                                          5),  # fmt: skip
        "selfsr_buckets": int(filters.spec.n_buckets),
        "selfsr_patch": list(filters.patch),
    }
    return hr.astype(np.float32, copy=False), report
