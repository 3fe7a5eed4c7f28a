"""Validation scores of trained weights: what a training run writes into its model card.

The scores come from the project's own evaluation protocol
(:func:`bids_sr.evaluation.evaluate_image`): each held-out subject's HR T1w is degraded
with the training preset and super-resolved by the trained model and by the nearest,
trilinear and cubic B-spline baselines; PSNR/SSIM inside the brain mask and over the whole
volume are summarised as mean ± SD over subjects, with the paired difference to bspline.
The card itself is written and rendered by :mod:`bids_sr.cards`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bids_sr.evaluation import METRIC_COLUMNS, evaluate_image, write_metrics_tsv
from bids_sr.image import load_volume

# acceptance at x2 (gaussian): deep models +1.5 dB over bspline in the brain, filters +0.5 dB
ACCEPTANCE_DB = {"gradfilter": 0.5}
DEFAULT_ACCEPTANCE_DB = 1.5


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "sd": sd, "n": int(arr.size)}


def summarise(rows: Sequence[dict[str, Any]], method: str) -> dict[str, Any]:
    """Mean ± SD over subjects per method and metric, and the paired difference of
    ``method`` to bspline (PSNR/SSIM brain and whole)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    table = {
        m: {c: _stats([r[c] for r in rows if r["method"] == m]) for c in METRIC_COLUMNS}
        for m in methods
    }
    by_source: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_source.setdefault(r["source"], {})[r["method"]] = r
    delta = {}
    for column in ("psnr_brain", "ssim_brain", "psnr_whole", "ssim_whole"):
        diffs = [
            s[method][column] - s["bspline"][column]
            for s in by_source.values()
            if method in s and "bspline" in s and s[method][column] is not None
        ]
        delta[column] = _stats(diffs)
    return {"per_method": table, "delta_vs_bspline": delta}


def validation_scores(
    method: str,
    weights: Path,
    subjects: Sequence[dict[str, Any]],
    factors: Sequence[float],
    degradation: str,
    *,
    device: str = "auto",
    tsv_path: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate ``weights`` on each subject (``{"label", "t1w", "reference"?}``) and summarise.

    Rows go to ``tsv_path`` (BIDS-style metrics TSV) when given. Guided methods use each
    subject's reference (T2w or FLAIR, on the T1w grid) as the second channel. ``progress`` shows a
    bar over the subjects (whole-volume inference takes minutes on a CPU).
    """
    from tqdm.auto import tqdm

    rows: list[dict[str, Any]] = []
    for subject in tqdm(subjects, desc=f"validating {method} (whole volumes)", unit="subject",
                        disable=not progress):
        vol = load_volume(subject["t1w"])
        reference = None
        if subject.get("reference"):
            reference = load_volume(subject["reference"]).data
        rows += evaluate_image(
            vol.data, vol.affine, factors=factors, degradation=degradation, methods=[method],
            weights={method: str(weights)}, reference=reference, device=device,
            source=f"sub-{subject['label']}",
        )
    if tsv_path is not None:
        write_metrics_tsv(rows, tsv_path)
    summary = summarise(rows, method)
    summary.update(
        rows=rows,
        subjects=[s["label"] for s in subjects],
        protocol="bids_sr.evaluation.evaluate_image: robust normalisation, crop_to_factor, "
        f"degrade({degradation}), super-resolve, PSNR/SSIM (data range 1) in "
        "bids_sr.masks.brain_mask and on the whole volume",
        acceptance=acceptance(method, factors, degradation,
                              summary["delta_vs_bspline"]["psnr_brain"]["mean"]),
    )
    return summary


def acceptance(method: str, factors: Sequence[float], degradation: str, gain: float
               ) -> dict[str, Any]:
    """The acceptance check, defined at x2 isotropic with the gaussian preset (deep models
    +1.5 dB brain PSNR over bspline, gradfilter +0.5 dB); ``met`` is None elsewhere."""
    threshold = ACCEPTANCE_DB.get(method, DEFAULT_ACCEPTANCE_DB)
    applicable = degradation == "gaussian" and all(float(f) == 2.0 for f in factors)
    return {
        "criterion": f"psnr_brain - bspline >= {threshold} dB at x2 isotropic, gaussian preset",
        "gain_db": gain,
        "met": bool(np.isfinite(gain) and gain >= threshold) if applicable else None,
    }
